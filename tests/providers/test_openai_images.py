"""OpenAI's Images API through OpenAIClient, against FakeOpenAI (real HTTP on 127.0.0.1).

gpt-image answers base64 and token usage; DALL-E answers URLs that the generic download
copies; an input image goes to /images/edits as multipart/form-data; a safety refusal is a
final content_policy_violation. The fake is checked against the official SDK too: a fake that
drifts from the real API would make these tests prove nothing.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import openai
import pytest

from core.errors import CONTENT_POLICY_VIOLATION
from core.shutdown import run_shutdown_hooks
from providers.clients import OpenAIClient, client_for
from providers.clients.base import ImageRequest, ImageSpec, InputImage, ProviderConfig, ProviderError, Usage
from tests.fakes import FakeOpenAI
from tests.fakes.openai import FAKE_PNG, IMAGE_INPUT_TOKENS, IMAGE_OUTPUT_TOKENS

FOX = ImageRequest("a red fox in the snow", count=2, size="1536x1024")  # 6 words
JPEG = InputImage("image/jpeg", b"\xff\xd8\xff\xe0 a jpeg")


@pytest.fixture(scope="module")
def openai_server() -> Iterator[FakeOpenAI]:
    with FakeOpenAI.start() as fake:
        yield fake


@pytest.fixture
def oai(openai_server: FakeOpenAI) -> FakeOpenAI:
    openai_server.reset()
    return openai_server


@pytest.fixture(autouse=True)
async def _close_loop_resources() -> AsyncIterator[None]:
    """Each test has its own event loop, hence its own pooled session: close it."""
    yield
    await run_shutdown_hooks()


def client_of(fake: FakeOpenAI, **config: Any) -> OpenAIClient:
    provider = ProviderConfig("fake-openai", "openai", fake.base_url, fake.api_key)
    client = client_for(dataclasses.replace(provider, **config))
    assert isinstance(client, OpenAIClient)
    return client


async def refusal(fake: FakeOpenAI, request: ImageRequest, model: str) -> ProviderError:
    with pytest.raises(ProviderError) as caught:
        await client_of(fake).generate_image(request, model=model)
    return caught.value


# ---- generations ----------------------------------------------------------------------------


async def test_gpt_image_answers_the_png_bytes_and_bills_images_and_tokens(oai: FakeOpenAI) -> None:
    result = await client_of(oai).generate_image(FOX, model="gpt-image-1")
    assert [(image.content_type, image.data, image.url) for image in result.images] == [
        ("image/png", FAKE_PNG, None)
    ] * 2
    assert result.usage == Usage(input_tokens=6, output_tokens=2 * IMAGE_OUTPUT_TOKENS, images=2)
    assert result.upstream_model == "gpt-image-1"
    sent = oai.requests[0]
    assert (sent.path, sent.headers["authorization"]) == ("/v1/images/generations", f"Bearer {oai.api_key}")
    assert sent.json == {"model": "gpt-image-1", "prompt": "a red fox in the snow", "n": 2, "size": "1536x1024"}


async def test_an_unset_size_is_left_to_the_model(oai: FakeOpenAI) -> None:
    await client_of(oai).generate_image(ImageRequest("a red fox"), model="gpt-image-1-mini")
    assert oai.requests[0].json == {"model": "gpt-image-1-mini", "prompt": "a red fox", "n": 1}


async def test_dalle_answers_a_url_that_the_generic_download_copies(oai: FakeOpenAI) -> None:
    client = client_of(oai)
    result = await client.generate_image(ImageRequest("a red fox"), model="dall-e-3")
    [image] = result.images
    assert image.data is None and image.url and image.content_type == "image/png"
    assert result.usage == Usage(images=1)  # DALL-E bills per image and reports no tokens
    assert await client.download(image, max_bytes=10_000) == FAKE_PNG
    oai.expire_image_urls()  # an hour later the link is dead: Pulse copies outputs at once
    with pytest.raises(ProviderError) as caught:
        await client.download(image, max_bytes=10_000)
    assert caught.value.status == 403


async def test_more_than_one_image_on_dalle3_is_refused_by_the_api(oai: FakeOpenAI) -> None:
    with pytest.raises(ProviderError) as caught:
        await client_of(oai).generate_image(ImageRequest("a red fox", count=2), model="dall-e-3")
    error = caught.value
    assert (error.status, error.code, error.retryable) == (400, "upstream_invalid_request", False)
    assert error.message == "You must provide n=1 for this model."


async def test_a_size_the_model_does_not_make_is_refused(oai: FakeOpenAI) -> None:
    with pytest.raises(ProviderError) as caught:
        await client_of(oai).generate_image(ImageRequest("a red fox", size="512x512"), model="gpt-image-1")
    assert (caught.value.code, caught.value.retryable) == ("upstream_invalid_request", False)
    assert "'512x512'" in caught.value.message


@pytest.mark.parametrize(
    ("model", "upstream_code"), [("gpt-image-1", "moderation_blocked"), ("dall-e-3", "content_policy_violation")]
)
async def test_a_safety_refusal_is_a_final_content_policy_violation(
    oai: FakeOpenAI, model: str, upstream_code: str
) -> None:
    oai.block_image()
    error = await refusal(oai, ImageRequest("something the filter refuses"), model)
    assert (error.status, error.code, error.retryable) == (400, CONTENT_POLICY_VIOLATION, False)
    assert error.details["upstream_code"] == upstream_code


async def test_overload_is_retryable(oai: FakeOpenAI) -> None:
    oai.fail(503, path="/images/")
    error = await refusal(oai, FOX, "gpt-image-1")
    assert (error.status, error.code, error.retryable) == (503, "upstream_overloaded", True)


async def test_an_answer_without_images_is_a_bad_response(oai: FakeOpenAI) -> None:
    oai.fail(200, body={"created": 1, "data": []})
    error = await refusal(oai, FOX, "gpt-image-1")
    assert (error.code, error.retryable) == ("upstream_bad_response", True)


# ---- edits ------------------------------------------------------------------------------------


async def test_an_input_image_is_sent_to_edits_as_a_typed_multipart_part(oai: FakeOpenAI) -> None:
    request = ImageRequest("make the fox blue", image=InputImage("image/png", FAKE_PNG))  # 4 words
    result = await client_of(oai).generate_image(request, model="gpt-image-1")
    assert oai.requests[0].path == "/v1/images/edits"
    [edit] = oai.image_edits
    assert edit.fields == {"model": "gpt-image-1", "prompt": "make the fox blue", "n": "1"}
    assert [(u.name, u.filename, u.content_type, u.data) for u in edit.uploads] == [
        ("image", "image.png", "image/png", FAKE_PNG)
    ]
    assert result.images[0].data == FAKE_PNG
    assert result.usage == Usage(input_tokens=4 + IMAGE_INPUT_TOKENS, output_tokens=IMAGE_OUTPUT_TOKENS, images=1)


async def test_dalle2_edits_take_only_a_png(oai: FakeOpenAI) -> None:
    error = await refusal(oai, ImageRequest("make it blue", image=JPEG), "dall-e-2")
    assert (error.code, error.retryable) == ("upstream_invalid_request", False)
    assert "unsupported mimetype ('image/jpeg')" in error.message


async def test_gpt_image_edits_take_a_jpeg(oai: FakeOpenAI) -> None:
    await client_of(oai).generate_image(ImageRequest("make it blue", image=JPEG), model="gpt-image-1")
    assert oai.image_edits[0].uploads[0].filename == "image.jpg"


async def test_an_edit_refused_by_the_safety_system_is_a_content_policy_violation(oai: FakeOpenAI) -> None:
    oai.block_image()
    error = await refusal(oai, ImageRequest("make it worse", image=JPEG), "gpt-image-1")
    assert (error.code, error.retryable) == (CONTENT_POLICY_VIOLATION, False)


# ---- what each model accepts -------------------------------------------------------------------


def test_image_specs_of_the_known_models() -> None:
    client = client_for(ProviderConfig("openai", "openai", "http://127.0.0.1:9/v1", "sk-x"))
    gpt_image = ImageSpec(max_count=10, sizes=("1024x1024", "1536x1024", "1024x1536", "auto"), edits=True)
    assert client.image_spec("gpt-image-1") == client.image_spec("gpt-image-1-mini") == gpt_image
    assert client.image_spec("dall-e-3") == ImageSpec(max_count=1, sizes=("1024x1024", "1792x1024", "1024x1792"))
    assert client.image_spec("dall-e-2") == ImageSpec(
        max_count=10, sizes=("256x256", "512x512", "1024x1024"), edits=True
    )
    assert client.image_spec("gpt-4o") is None


# ---- the fake speaks what the official SDK speaks ------------------------------------------------


def sdk(fake: FakeOpenAI) -> openai.OpenAI:
    return openai.OpenAI(base_url=fake.base_url, api_key=fake.api_key, max_retries=0)


def test_the_official_sdk_reads_the_fake_generations_and_edits(oai: FakeOpenAI) -> None:
    generated = sdk(oai).images.generate(model="gpt-image-1", prompt="a red fox", n=2, size="1024x1536")
    assert len(generated.data) == 2 and generated.usage is not None
    assert generated.usage.output_tokens == 2 * IMAGE_OUTPUT_TOKENS
    edited = sdk(oai).images.edit(model="gpt-image-1", prompt="blue", image=[("a.png", FAKE_PNG, "image/png")] * 2)
    assert len(edited.data) == 1
    assert [u.name for u in oai.image_edits[0].uploads] == ["image[]", "image[]"]  # the SDK's name for several
    url = sdk(oai).images.generate(model="dall-e-2", prompt="a red fox").data[0].url
    assert url and httpx.get(url).content == FAKE_PNG  # no key needed: the link is signed


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"model": "gpt-image-1", "prompt": "fox", "response_format": "url"}, "response_format"),
        ({"model": "dall-e-3", "prompt": "fox", "size": "1536x1024"}, "size"),
        ({"model": "gpt-image-1", "prompt": "fox", "n": 11}, "n"),
        ({"model": "gpt-image-1"}, "prompt"),
        ({"model": "midjourney", "prompt": "fox"}, "model"),
    ],
)
def test_the_fake_refuses_what_the_images_api_refuses(oai: FakeOpenAI, body: dict[str, Any], param: str) -> None:
    answer = httpx.post(
        f"{oai.base_url}/images/generations", json=body, headers={"authorization": f"Bearer {oai.api_key}"}
    )
    assert answer.status_code == 400
    assert answer.json()["error"]["param"] == param


def test_the_fake_refuses_an_upload_without_an_image_content_type(oai: FakeOpenAI) -> None:
    answer = httpx.post(
        f"{oai.base_url}/images/edits",
        data={"model": "gpt-image-1", "prompt": "blue"},
        files={"image": ("a.png", FAKE_PNG, "application/octet-stream")},
        headers={"authorization": f"Bearer {oai.api_key}"},
    )
    assert answer.status_code == 400
    assert answer.json()["error"]["code"] == "unsupported_file_mimetype"
