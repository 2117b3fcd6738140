"""Job files in Django's default storage (local files, or an S3-compatible bucket), and the signed,
expiring URLs that serve them: a browser can put one in an <img> without the API key, and an
unsigned, tampered or expired one is a 404.
"""

from __future__ import annotations

import base64
import mimetypes
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.core import signing
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage

from providers.clients.base import InputImage

URL_SALT = "pulse.jobs.output"
EXTENSIONS = {"image/png": ".png", "image/jpeg": ".jpg", "image/webp": ".webp", "video/mp4": ".mp4"}


@dataclass(frozen=True)
class StoredFile:
    name: str  # the storage's name for it
    content_type: str
    bytes: int


def job_folder(user_id: int, job_id: str) -> str:
    return f"jobs/{user_id}/{job_id}"


def extension_for(content_type: str) -> str:
    return EXTENSIONS.get(content_type) or mimetypes.guess_extension(content_type) or ".bin"


def store_output(user_id: int, job_id: str, index: int, content_type: str, data: bytes) -> StoredFile:
    name = f"{job_folder(user_id, job_id)}/output-{index}{extension_for(content_type)}"
    saved = default_storage.save(name, ContentFile(data))
    return StoredFile(saved, content_type, len(data))


def delete_files(names: list[str]) -> None:
    for name in names:
        default_storage.delete(name)


def save_input(user_id: int, job_id: str, image: InputImage) -> dict[str, Any]:
    """Keep a request's input image until a worker sends it (it is too large for the job row)."""
    name = f"{job_folder(user_id, job_id)}/input{extension_for(image.content_type)}"
    return {"name": default_storage.save(name, ContentFile(image.data)), "content_type": image.content_type}


def load_input(reference: dict[str, Any] | None) -> InputImage | None:
    if not reference:
        return None
    with default_storage.open(reference["name"], "rb") as file:
        return InputImage(reference["content_type"], file.read())


def data_url_image(value: str) -> InputImage:
    """`data:image/png;base64,...` -> InputImage; ValueError when it is not one."""
    header, comma, payload = value.partition(",")
    content_type = header.removeprefix("data:").removesuffix(";base64")
    if not comma or not header.startswith("data:") or not header.endswith(";base64"):
        raise ValueError("send the image as a data URL: data:image/png;base64,...")
    if content_type not in ("image/png", "image/jpeg", "image/webp"):
        raise ValueError(f"images must be PNG, JPEG or WebP, not {content_type or 'unknown'}")
    try:
        return InputImage(content_type, base64.b64decode(payload, validate=True))
    except ValueError:
        raise ValueError("the image's base64 data is not valid") from None


def output_token(job_id: str, index: int) -> str:
    return signing.dumps([job_id, index], salt=URL_SALT, compress=True)


def read_output_token(token: str) -> tuple[str, int] | None:
    """(job id, output index) of a signed URL that is intact and younger than JOB_OUTPUT_URL_TTL_S."""
    try:
        job_id, index = signing.loads(token, salt=URL_SALT, max_age=settings.JOB_OUTPUT_URL_TTL_S)
    except (signing.BadSignature, ValueError, TypeError):
        return None
    return str(job_id), int(index)
