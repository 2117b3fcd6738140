"""Fake OpenAI API: chat completions (plain and streamed), moderations, and images
(generations, and edits sent as multipart/form-data).

Speaks the wire protocol in /work/shared/PROVIDERS.md. It is strict on purpose: the
real API rejects unknown arguments, bad types and `stream_options` without `stream`,
so a gateway that sends those must fail here too, not in production. Chat requests are checked
as the real API checks them: tools and tool_choice, tool messages that answer the calls just
before them, image parts, response formats, n and logprobs; a scripted tool call the request does
not offer is refused (a gateway that lost the tools must fail). Likewise for images:
n>1 on dall-e-3, a size the model does not make, response_format on gpt-image, an upload
part without an image content type.

gpt-image answers base64 with token usage; DALL-E answers URLs that this server serves
without a key at /dalle/... until `expire_image_urls()` (then 403, as Azure storage answers
an expired link).

common        error bodies and headers, auth, the small checks; OpenAIServer, the endpoints' base
chat_checks   what a chat completion request is checked for
chat          chat answers, plain and streamed (ChatEndpoints)
images        generations and edits, and the DALL-E URLs (ImageEndpoints); tiny_png
moderations   /v1/moderations (ModerationEndpoints)
provider      FakeOpenAI and FakeOpenAICompatible, put together from the endpoints
"""

from .common import INSUFFICIENT_QUOTA
from .images import FAKE_PNG, IMAGE_INPUT_TOKENS, IMAGE_OUTPUT_TOKENS, tiny_png
from .provider import FakeOpenAI, FakeOpenAICompatible

__all__ = [
    "FAKE_PNG",
    "IMAGE_INPUT_TOKENS",
    "IMAGE_OUTPUT_TOKENS",
    "INSUFFICIENT_QUOTA",
    "FakeOpenAI",
    "FakeOpenAICompatible",
    "tiny_png",
]
