"""Fake Gemini API: `models/{model}:generateContent` and `:streamGenerateContent` (chat, and
Nano Banana images from the gemini-*-image models), Veo's `:predictLongRunning` with its
operations, and the download of a finished video (a redirect to a separate storage port).

Speaks the wire protocol in /work/shared/PROVIDERS.md. Like the real API it parses the
body as protobuf JSON: unknown field names are rejected (camelCase or snake_case both
accepted), the assistant role is "model", and a bad key is a 400 (not a 401) with
reason API_KEY_INVALID. Stream events are separated by "\\r\\n\\r\\n", so a client
that only splits on "\\n\\n" fails here. Zero token counts are omitted, as proto3
JSON does: clients must default a missing `candidatesTokenCount` to 0.

Chat is checked as strictly: tools and toolConfig, function call and response turns (a response
answers a call of the turn before it, by name), inlineData, response formats, candidateCount,
thinkingConfig ranges per model, and what each model refuses. A scripted tool call is answered as a
functionCall part; a gemini-3* model signs the first with a thoughtSignature and refuses a request
whose current turn brings a call back without it. `:countTokens` counts what generateContent would.

common        error bodies, proto JSON field names and bytes, usage; GeminiServer, the endpoints' base
contents      contents, parts and the order of turns
chat_checks   the rest of a GenerateContentRequest (tools, toolConfig, generationConfig), per model
chat          chat answers, plain and streamed, and countTokens (ChatEndpoints)
images        Nano Banana (ImageEndpoints)
videos        Veo: operations, extension, download and storage (VideoEndpoints)
provider      FakeGemini, put together from the endpoints
"""

from .chat_checks import INPUT_IMAGE_TOKENS
from .common import STORAGE_PATH
from .images import IMAGE_TOKENS, PNG_PIXEL
from .provider import FakeGemini
from .videos import RAI_REASON, mp4_seconds

__all__ = [
    "IMAGE_TOKENS",
    "INPUT_IMAGE_TOKENS",
    "PNG_PIXEL",
    "RAI_REASON",
    "STORAGE_PATH",
    "FakeGemini",
    "mp4_seconds",
]
