"""The routes Pulse ships with: the seed's routing rules, plus priced exact routes for known models.

Prices are USD list prices at the time of writing; admins edit them, and a
request is billed at the price in force when it ran. Pattern routes catch every
other name of a family and carry no price, so they refuse requests (403
model_not_priced) until an admin prices them: nothing is billed at a guess.
"""

from decimal import Decimal as D

# (route name, provider name, upstream model ('' = the requested name), modality, prices)
DEFAULT_ROUTES: list[tuple[str, str, str, str, dict[str, D]]] = [
    ("gpt-5", "openai", "", "chat", {"input_usd_per_mtok": D("1.25"), "output_usd_per_mtok": D("10")}),
    ("gpt-5-mini", "openai", "", "chat", {"input_usd_per_mtok": D("0.25"), "output_usd_per_mtok": D("2")}),
    ("gpt-4.1", "openai", "", "chat", {"input_usd_per_mtok": D("2"), "output_usd_per_mtok": D("8")}),
    ("gpt-4o", "openai", "", "chat", {"input_usd_per_mtok": D("2.5"), "output_usd_per_mtok": D("10")}),
    ("gpt-4o-mini", "openai", "", "chat", {"input_usd_per_mtok": D("0.15"), "output_usd_per_mtok": D("0.6")}),
    ("gpt-*", "openai", "", "chat", {}),
    ("openai:*", "openai", "", "chat", {}),
    ("claude-sonnet-4-5", "anthropic", "", "chat", {"input_usd_per_mtok": D("3"), "output_usd_per_mtok": D("15")}),
    ("claude-opus-4-5", "anthropic", "", "chat", {"input_usd_per_mtok": D("5"), "output_usd_per_mtok": D("25")}),
    ("claude-haiku-4-5", "anthropic", "", "chat", {"input_usd_per_mtok": D("1"), "output_usd_per_mtok": D("5")}),
    ("claude*", "anthropic", "", "chat", {}),
    ("anthropic:*", "anthropic", "", "chat", {}),
    ("gemini-2.5-pro", "gemini", "", "chat", {"input_usd_per_mtok": D("1.25"), "output_usd_per_mtok": D("10")}),
    ("gemini-2.5-flash", "gemini", "", "chat", {"input_usd_per_mtok": D("0.3"), "output_usd_per_mtok": D("2.5")}),
    ("nano-banana", "gemini", "gemini-2.5-flash-image", "image", {"usd_per_image": D("0.039")}),
    ("nano-banana*", "gemini", "gemini-2.5-flash-image", "image", {"usd_per_image": D("0.039")}),
    ("gemini*", "gemini", "", "chat", {}),
    ("google:*", "gemini", "", "chat", {}),
    ("veo3", "gemini", "veo-3.0-generate-001", "video", {"usd_per_video_second": D("0.4")}),
    ("veo3-fast", "gemini", "veo-3.0-fast-generate-001", "video", {"usd_per_video_second": D("0.15")}),
    ("veo3*", "gemini", "veo-3.0-generate-001", "video", {"usd_per_video_second": D("0.4")}),
    ("replicate:*", "replicate", "", "image", {}),
]
