"""The routes Pulse ships with: the seed's routing rules, plus priced exact routes for known models.

Prices are USD list prices as of late 2025, cache reads and writes included where the
provider prices them apart (Gemini 2.5 Pro's are those for prompts up to 200k tokens; longer
prompts cost more, which is not modelled). Admins edit them, and a request is billed at the
price in force when it ran. Pattern routes catch every
other name of a family and carry no price, so they refuse requests (403
model_not_priced) until an admin prices them: nothing is billed at a guess.
"""

from decimal import Decimal as D

from core.modality import Modality

CHAT, IMAGE, VIDEO = Modality.CHAT, Modality.IMAGE, Modality.VIDEO


def tokens(
    input: str, output: str, *, cached: str | None = None, write: str | None = None, write_1h: str | None = None
) -> dict[str, D]:
    """A chat route's prices in USD per million tokens; the cache prices where the provider has them."""
    prices = {"input_usd_per_mtok": D(input), "output_usd_per_mtok": D(output)}
    for field, price in (
        ("cached_input_usd_per_mtok", cached),
        ("cache_write_usd_per_mtok", write),
        ("cache_write_1h_usd_per_mtok", write_1h),
    ):
        if price is not None:
            prices[field] = D(price)
    return prices


# (route name, provider name, upstream model ('' = the requested name), modality, prices)
DEFAULT_ROUTES: list[tuple[str, str, str, str, dict[str, D]]] = [
    ("gpt-5", "openai", "", CHAT, tokens("1.25", "10", cached="0.125")),
    ("gpt-5-mini", "openai", "", CHAT, tokens("0.25", "2", cached="0.025")),
    ("gpt-4.1", "openai", "", CHAT, tokens("2", "8", cached="0.5")),
    ("gpt-4o", "openai", "", CHAT, tokens("2.5", "10", cached="1.25")),
    ("gpt-4o-mini", "openai", "", CHAT, tokens("0.15", "0.6", cached="0.075")),
    ("gpt-*", "openai", "", CHAT, {}),
    ("openai:*", "openai", "", CHAT, {}),
    ("claude-sonnet-4-5", "anthropic", "", CHAT, tokens("3", "15", cached="0.3", write="3.75", write_1h="6")),
    ("claude-opus-4-5", "anthropic", "", CHAT, tokens("5", "25", cached="0.5", write="6.25", write_1h="10")),
    ("claude-haiku-4-5", "anthropic", "", CHAT, tokens("1", "5", cached="0.1", write="1.25", write_1h="2")),
    ("claude*", "anthropic", "", CHAT, {}),
    ("anthropic:*", "anthropic", "", CHAT, {}),
    ("gemini-2.5-pro", "gemini", "", CHAT, tokens("1.25", "10", cached="0.125")),  # prompts up to 200k tokens
    ("gemini-2.5-flash", "gemini", "", CHAT, tokens("0.3", "2.5", cached="0.03")),
    ("nano-banana", "gemini", "gemini-2.5-flash-image", IMAGE, {"usd_per_image": D("0.039")}),
    ("nano-banana*", "gemini", "gemini-2.5-flash-image", IMAGE, {"usd_per_image": D("0.039")}),
    ("gemini*", "gemini", "", CHAT, {}),
    ("google:*", "gemini", "", CHAT, {}),
    # Veo 3.1: the Veo 3 models that can extend a video, so veo3 makes any duration of 8 s plus 7 s steps.
    ("veo3", "gemini", "veo-3.1-generate-preview", VIDEO, {"usd_per_video_second": D("0.4")}),
    ("veo3-fast", "gemini", "veo-3.1-fast-generate-preview", VIDEO, {"usd_per_video_second": D("0.15")}),
    ("veo3.0", "gemini", "veo-3.0-generate-001", VIDEO, {"usd_per_video_second": D("0.4")}),
    ("veo3.0-fast", "gemini", "veo-3.0-fast-generate-001", VIDEO, {"usd_per_video_second": D("0.15")}),
    ("veo3*", "gemini", "veo-3.1-generate-preview", VIDEO, {"usd_per_video_second": D("0.4")}),
    # OpenAI bills images by size and quality (gpt-image-1: by image tokens), which a per-image
    # price cannot say exactly: these routes stay unpriced until an admin prices them for their use.
    ("gpt-image-1", "openai", "", IMAGE, {}),
    ("dall-e-3", "openai", "", IMAGE, {}),
    # Replicate: a fast image model and a video model (Kling takes 5 or 10 s), at Replicate's
    # published per-output prices as seen on resellers' price lists (to be checked against replicate.com).
    ("flux-schnell", "replicate", "black-forest-labs/flux-schnell", IMAGE, {"usd_per_image": D("0.003")}),
    ("kling-v2.5", "replicate", "kwaivgi/kling-v2.5-turbo-pro", VIDEO, {"usd_per_video_second": D("0.07")}),
    ("replicate:*", "replicate", "", IMAGE, {}),
]
