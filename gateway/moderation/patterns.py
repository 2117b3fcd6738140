"""How blocklist patterns are matched, and which ones cannot be: the BlockedTerm model's check
and the blocklist hook both use this (a leaf module, so the model does not import the hook)."""

from __future__ import annotations

import re

from gateway.moderation.normalize import folded

NOT_AFTER = r"(?![^\W_])"  # a whole word ends where no letter or digit follows (search_word_start: its start)


def pattern_error(pattern: str, *, is_regex: bool) -> str | None:
    """Why a pattern cannot be used, or None (the admin form's check)."""
    if not folded(pattern).strip():
        return "The pattern is empty once invisible characters are removed."
    if is_regex:
        try:
            re.compile(f"(?:{pattern}){NOT_AFTER}")  # as it is used: inside a group
        except re.error as exc:
            return f"Not a valid regular expression here: {exc} (flags go inside, as in (?i:...))."
    return None
