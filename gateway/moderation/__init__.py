"""Content moderation: the hook pipeline every entry point runs before a provider is called.

    from gateway.moderation.pipeline import moderate_texts
    texts = await moderate_texts(texts, route=route, principal=principal, request_id=request_id, params=params)

Hooks (MODERATION_HOOKS, dotted paths, in order) return a Verdict (base.py): allow, block(category,
reason) or redact(text). Built in: hooks.blocklist.BlocklistHook (admin-edited terms),
hooks.pii.PiiHook (e-mail, phone, card numbers) and hooks.openai_moderation.OpenAIModerationHook.
The package imports nothing itself, so that the models can use patterns.py without loading the
pipeline.
"""
