"""The routes Pulse ships with: the seed's routing rules, plus priced exact routes for known models.

Prices are USD list prices at the time of writing; admins edit them, and a
request is billed at the price in force when it ran. Pattern routes catch every
other name of a family and carry no price, so they refuse requests (403
model_not_priced) until an admin prices them: nothing is billed at a guess.
"""

from decimal import Decimal as D

from core.modality import Modality

CHAT, IMAGE, VIDEO = Modality.CHAT, Modality.IMAGE, Modality.VIDEO

# (route name, provider name, upstream model ('' = the requested name), modality, prices)
DEFAULT_ROUTES: list[tuple[str, str, str, str, dict[str, D]]] = [
    ("gpt-5", "openai", "", CHAT, {"input_usd_per_mtok": D("1.25"), "output_usd_per_mtok": D("10")}),
    ("gpt-5-mini", "openai", "", CHAT, {"input_usd_per_mtok": D("0.25"), "output_usd_per_mtok": D("2")}),
    ("gpt-4.1", "openai", "", CHAT, {"input_usd_per_mtok": D("2"), "output_usd_per_mtok": D("8")}),
    ("gpt-4o", "openai", "", CHAT, {"input_usd_per_mtok": D("2.5"), "output_usd_per_mtok": D("10")}),
    ("gpt-4o-mini", "openai", "", CHAT, {"input_usd_per_mtok": D("0.15"), "output_usd_per_mtok": D("0.6")}),
    ("gpt-*", "openai", "", CHAT, {}),
    ("openai:*", "openai", "", CHAT, {}),
    ("claude-sonnet-4-5", "anthropic", "", CHAT, {"input_usd_per_mtok": D("3"), "output_usd_per_mtok": D("15")}),
    ("claude-opus-4-5", "anthropic", "", CHAT, {"input_usd_per_mtok": D("5"), "output_usd_per_mtok": D("25")}),
    ("claude-haiku-4-5", "anthropic", "", CHAT, {"input_usd_per_mtok": D("1"), "output_usd_per_mtok": D("5")}),
    ("claude*", "anthropic", "", CHAT, {}),
    ("anthropic:*", "anthropic", "", CHAT, {}),
    ("gemini-2.5-pro", "gemini", "", CHAT, {"input_usd_per_mtok": D("1.25"), "output_usd_per_mtok": D("10")}),
    ("gemini-2.5-flash", "gemini", "", CHAT, {"input_usd_per_mtok": D("0.3"), "output_usd_per_mtok": D("2.5")}),
    ("nano-banana", "gemini", "gemini-2.5-flash-image", IMAGE, {"usd_per_image": D("0.039")}),
    ("nano-banana*", "gemini", "gemini-2.5-flash-image", IMAGE, {"usd_per_image": D("0.039")}),
    ("gemini*", "gemini", "", CHAT, {}),
    ("google:*", "gemini", "", CHAT, {}),
    ("veo3", "gemini", "veo-3.0-generate-001", VIDEO, {"usd_per_video_second": D("0.4")}),
    ("veo3-fast", "gemini", "veo-3.0-fast-generate-001", VIDEO, {"usd_per_video_second": D("0.15")}),
    ("veo3*", "gemini", "veo-3.0-generate-001", VIDEO, {"usd_per_video_second": D("0.4")}),
    ("replicate:*", "replicate", "", IMAGE, {}),
]
