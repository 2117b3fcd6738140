"""The fake OpenAI API's images: /v1/images/generations and /v1/images/edits.

gpt-image answers base64 with token usage; DALL-E answers URLs that this server serves
without a key at /dalle/... until `expire_image_urls()` (then 403, as Azure storage answers
an expired link). Checked as the real API checks them: n>1 on dall-e-3, a size the model does
not make, response_format on gpt-image, an upload part without an image content type. Edits come
as multipart/form-data, read here by hand.
"""

from __future__ import annotations

import base64
import struct
import threading
import time
import zlib
from dataclasses import dataclass
from email.message import Message
from email.parser import BytesHeaderParser
from typing import Any

from aiohttp import web

from ..server import Fault, Received, count_words, new_id
from .common import Invalid, OpenAIServer, check_number, error, missing, quoted, wrong_type


def tiny_png() -> bytes:
    """A valid 1x1 transparent PNG: every image the fakes make."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", 1, 1, 8, 6, 0, 0, 0)  # 1x1, 8-bit RGBA
    pixels = zlib.compress(b"\x00" + b"\x00" * 4)  # filter byte, one transparent pixel
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")


FAKE_PNG = tiny_png()
GPT_IMAGE_SIZES = ("1024x1024", "1536x1024", "1024x1536", "auto")


@dataclass(frozen=True)
class ImageModel:
    sizes: tuple[str, ...]
    max_n: int
    edits: bool
    gpt: bool  # answers base64 and token usage (DALL-E: URLs, no usage)


IMAGE_MODELS = {
    "gpt-image-1": ImageModel(GPT_IMAGE_SIZES, 10, edits=True, gpt=True),
    "gpt-image-1-mini": ImageModel(GPT_IMAGE_SIZES, 10, edits=True, gpt=True),
    "gpt-image-1.5": ImageModel(GPT_IMAGE_SIZES, 10, edits=True, gpt=True),
    "dall-e-3": ImageModel(("1024x1024", "1792x1024", "1024x1792"), 1, edits=False, gpt=False),
    "dall-e-2": ImageModel(("256x256", "512x512", "1024x1024"), 10, edits=True, gpt=False),
}
# fmt: off
IMAGE_PARAMS = {
    "model", "prompt", "n", "size", "quality", "response_format", "output_format", "output_compression",
    "background", "moderation", "style", "user", "stream", "partial_images",
}
EDIT_PARAMS = {
    "image", "image[]", "mask", "model", "prompt", "n", "size", "quality", "response_format", "output_format",
    "output_compression", "background", "input_fidelity", "user", "stream", "partial_images",
}
# fmt: on
UPLOAD_TYPES = ("image/jpeg", "image/png", "image/webp")
# The fake's token counts for gpt-image: per image made (gpt-image-1's 1024x1024 at medium
# quality) and per image uploaded to edit; the prompt's words are its text tokens.
IMAGE_OUTPUT_TOKENS = 1056
IMAGE_INPUT_TOKENS = 323
GPT_IMAGE_REFUSAL = (
    "Your request was rejected by the safety system. If you believe this is an error, contact us at "
    "help.openai.com and include the request ID if you have one."
)
DALLE_REFUSAL = (
    "Your request was rejected as a result of our safety system. Your prompt may contain text that is "
    "not allowed by our safety system."
)
EXPIRED_LINK = (
    '<?xml version="1.0" encoding="utf-8"?><Error><Code>AuthenticationFailed</Code><Message>Server failed '
    "to authenticate the request. Make sure the value of Authorization header is formed correctly including "
    "the signature.</Message><AuthenticationErrorDetail>Signed expiry time has expired</AuthenticationErrorDetail>"
    "</Error>"
)


@dataclass(frozen=True)
class Upload:
    """One file part of a multipart body."""

    name: str
    filename: str
    content_type: str  # application/octet-stream when the part had no Content-Type
    data: bytes


@dataclass(frozen=True)
class ImageEdit:
    """One /images/edits request as the fake read it: its text fields and its file parts."""

    fields: dict[str, str]
    uploads: list[Upload]


def read_form(raw: bytes, content_type: str) -> ImageEdit:
    """Split a multipart/form-data body by hand: aiohttp's reader needs the unread stream, which the
    request log has already read, and the email parser may touch binary file bytes."""
    header = Message()
    header["content-type"] = content_type
    boundary = header.get_param("boundary")
    if header.get_content_type() != "multipart/form-data" or not isinstance(boundary, str):
        raise Invalid(f"Invalid Content-Type header ({content_type or 'none'}), expected multipart/form-data.")
    fields, uploads = {}, []
    for part in raw.split(b"--" + boundary.encode())[1:]:
        if part.startswith(b"--"):
            break
        head, _, body = part.removeprefix(b"\r\n").partition(b"\r\n\r\n")
        headers = BytesHeaderParser().parsebytes(head)
        name, filename, data = (
            str(headers.get_param("name", header="content-disposition")),
            headers.get_filename(),
            body,
        )
        data = body.removesuffix(b"\r\n")
        if filename is None:
            fields[name] = data.decode()
        else:
            kind = headers.get_content_type() if "content-type" in headers else "application/octet-stream"
            uploads.append(Upload(name, filename, kind, data))
    return ImageEdit(fields, uploads)


def check_image_params(params: dict[str, Any], allowed: set[str]) -> tuple[str, ImageModel, int]:
    """Validate a generation's (or an edit's) parameters; returns (model name, model, n)."""
    unknown = sorted(set(params) - allowed)
    if unknown:
        raise Invalid(f"Unrecognized request argument supplied: {unknown[0]}")
    if "prompt" not in params:
        raise missing("prompt")
    if not isinstance(params["prompt"], str) or not params["prompt"].strip():
        raise Invalid("Invalid 'prompt': empty string. Expected a string with minimum length 1.", "prompt")
    name = params.get("model") or "dall-e-2"  # the API's default model
    model = IMAGE_MODELS.get(name)
    if model is None:
        raise Invalid(
            f"Invalid value: '{name}'. Supported values are: {quoted(IMAGE_MODELS)}.", "model", "invalid_value"
        )
    check_number(params, "n", integer=True, low=1, high=10)
    n = params.get("n") or 1
    if n > model.max_n:
        raise Invalid("You must provide n=1 for this model.")
    size = params.get("size")
    if size is not None and size not in model.sizes:
        raise Invalid(f"Invalid value: '{size}'. Supported values are: {quoted(model.sizes)}.", "size", "invalid_value")
    only_for_other = "response_format" if model.gpt else "output_format"  # gpt-image always answers base64
    if only_for_other in params:
        raise Invalid(f"Unknown parameter: '{only_for_other}'.", only_for_other, "unknown_parameter")
    return name, model, n


def edit_params(edit: ImageEdit) -> dict[str, Any]:
    """An edit's parameters as a generation's: form values are strings, n is a number."""
    params: dict[str, Any] = dict(edit.fields) | {upload.name: upload for upload in edit.uploads}
    if "n" in params:
        if not params["n"].isdigit():
            raise wrong_type("n", "an integer", params["n"])
        params["n"] = int(params["n"])
    return params


def check_edit_images(name: str, model: ImageModel, uploads: list[Upload]) -> None:
    if not model.edits:
        raise Invalid(f"Invalid value: '{name}'. Value must be one of the models that edit images.", "model")
    images = [upload for upload in uploads if upload.name in ("image", "image[]")]
    if not images:
        raise missing("image")
    if not model.gpt and (len(images) != 1 or images[0].name != "image"):
        raise Invalid("dall-e-2 takes exactly one image, in the 'image' field.", "image")
    for upload in images:
        allowed = UPLOAD_TYPES if model.gpt else ("image/png",)
        if upload.content_type not in allowed:
            raise Invalid(
                f"Invalid file '{upload.name}': unsupported mimetype ('{upload.content_type}'). "
                f"Supported file formats are {quoted(allowed)}.",
                upload.name,
                "unsupported_file_mimetype",
            )


class ImageEndpoints(OpenAIServer):
    """POST /v1/images/generations and /v1/images/edits, and the DALL-E image URLs."""

    # Set up by FakeOpenAI.__init__ and cleared by its reset().
    _images_lock: threading.Lock
    _edits: list[ImageEdit]
    _served_images: dict[str, bytes]  # DALL-E's URLs: file name -> bytes

    # ---- images: what the test sees and scripts ------------------------------------------

    @property
    def image_edits(self) -> list[ImageEdit]:
        """Every /images/edits request, parsed (the request log's `json` is None for multipart)."""
        with self._images_lock:
            return list(self._edits)

    def block_image(self, times: int = 1, path: str | None = "/images/") -> None:
        """The safety system refuses the next image requests: gpt-image's moderation_blocked,
        DALL-E's content_policy_violation (both 400)."""
        self._add(Fault("block", times, path))

    def expire_image_urls(self) -> None:
        """The DALL-E URLs answered so far stop working (they expire upstream after an hour)."""
        with self._images_lock:
            self._served_images.clear()

    # ---- images ------------------------------------------------------------------------

    async def _generate_images(self, request: web.Request, received: Received, fault: Fault | None) -> web.Response:
        if not isinstance(received.json, dict):
            return self.invalid(Invalid("We could not parse the JSON body of your request."))
        try:
            name, model, n = check_image_params(received.json, IMAGE_PARAMS)
        except Invalid as exc:
            return self.invalid(exc)
        return self._images(received.json, name, model, n, fault, uploaded=0)

    async def _edit_images(self, request: web.Request, received: Received, fault: Fault | None) -> web.Response:
        try:
            edit = read_form(await request.read(), request.headers.get("Content-Type", ""))
            params = edit_params(edit)
            name, model, n = check_image_params(params, EDIT_PARAMS)
            check_edit_images(name, model, edit.uploads)
        except Invalid as exc:
            return self.invalid(exc)
        with self._images_lock:
            self._edits.append(edit)
        return self._images(params, name, model, n, fault, uploaded=len(edit.uploads))

    def _images(
        self, params: dict[str, Any], name: str, model: ImageModel, n: int, fault: Fault | None, uploaded: int
    ) -> web.Response:
        if fault is not None and fault.kind == "block":
            if model.gpt:
                return self.error_response(
                    400, error(GPT_IMAGE_REFUSAL, "image_generation_user_error", code="moderation_blocked")
                )
            return self.error_response(400, error(DALLE_REFUSAL, code="content_policy_violation"))
        answer: dict[str, Any] = {"created": int(time.time())}
        if model.gpt:
            answer |= self._gpt_image_answer(params, n, uploaded)
        else:
            encoded = params.get("response_format") == "b64_json"
            revised = {"revised_prompt": params["prompt"]} if name == "dall-e-3" else {}
            answer["data"] = [self._dalle_image(encoded) | revised for _ in range(n)]
        return web.json_response(answer, headers=self.headers())

    @staticmethod
    def _gpt_image_answer(params: dict[str, Any], n: int, uploaded: int) -> dict[str, Any]:
        text_tokens, image_tokens = count_words(params["prompt"]), IMAGE_INPUT_TOKENS * uploaded
        output_tokens = IMAGE_OUTPUT_TOKENS * n
        return {
            "background": "opaque",
            "data": [{"b64_json": base64.b64encode(FAKE_PNG).decode()} for _ in range(n)],
            "output_format": params.get("output_format") or "png",
            "quality": "medium",
            "size": "1024x1024" if params.get("size") in (None, "auto") else params["size"],
            "usage": {
                "input_tokens": text_tokens + image_tokens,
                "input_tokens_details": {"image_tokens": image_tokens, "text_tokens": text_tokens},
                "output_tokens": output_tokens,
                "total_tokens": text_tokens + image_tokens + output_tokens,
            },
        }

    def _dalle_image(self, encoded: bool) -> dict[str, Any]:
        if encoded:
            return {"b64_json": base64.b64encode(FAKE_PNG).decode()}
        file = new_id("img-") + ".png"
        with self._images_lock:
            self._served_images[file] = FAKE_PNG
        # Signed like Azure storage's links: no key needed, only the signature in the query.
        return {"url": f"http://127.0.0.1:{self.port}/dalle/private/{file}?se=2099-01-01&sp=r&sig=fake"}

    async def _serve_image(self, request: web.Request) -> web.Response:
        await self._record(request)
        with self._images_lock:
            data = self._served_images.get(request.match_info["file"])
        if data is None:
            return web.Response(status=403, text=EXPIRED_LINK, content_type="application/xml")
        return web.Response(body=data, content_type="image/png")
