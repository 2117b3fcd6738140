"""The built-in moderation hooks; MODERATION_HOOKS names them (or an operator's own) by dotted path."""
