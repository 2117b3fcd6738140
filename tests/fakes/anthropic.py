"""Fake Anthropic Messages API: `POST /v1/messages` (plain and streamed) and
`POST /v1/messages/count_tokens`.

Speaks the wire protocol in /work/shared/PROVIDERS.md and is strict where the real API is:
`anthropic-version` and `max_tokens` are required, there is no "system" role inside
`messages`, temperature is 0..1 (not OpenAI's 0..2) and unknown top-level fields are rejected,
so an OpenAI-shaped request leaking through a gateway fails here. Tools, tool_choice, the
pairing of every tool_use with a tool_result in the next message, images, cache_control and
extended thinking are checked as the real API checks them (messages quoted from its errors
where known). Thinking blocks carry a signature only this fake can issue (an HMAC of the
text), so a client that alters thinking or sends another's is refused, as the real API does.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
import secrets
from collections.abc import Iterator
from typing import Any

from aiohttp import web

from .server import (
    STREAM_ONLY,
    Answer,
    FakeProvider,
    FakeToolCall,
    Fault,
    Received,
    count_words,
    new_id,
    split_words,
)

# fmt: off
PARAMS = {
    "model", "messages", "max_tokens", "system", "temperature", "top_p", "top_k", "stop_sequences",
    "stream", "metadata", "tools", "tool_choice", "thinking", "service_tier", "container",
    "mcp_servers", "context_management",
}
# count_tokens takes the prompt only: no max_tokens, sampling, stop sequences, metadata or stream.
COUNT_PARAMS = {"model", "messages", "system", "tools", "tool_choice", "thinking", "mcp_servers", "context_management"}
BLOCK_TYPES = {
    "text", "image", "document", "tool_use", "tool_result", "thinking", "redacted_thinking",
    "search_result", "server_tool_use", "web_search_tool_result",
}
TOOL_FIELDS = {
    "type", "name", "description", "input_schema", "cache_control", "strict", "defer_loading",
    "allowed_callers", "eager_input_streaming", "input_examples",
}
# fmt: on
# The current limit: it was {1,64} until mid-2025, and the API's error still quotes the pattern.
TOOL_NAME = "^[a-zA-Z0-9_-]{1,128}$"
TOOL_CHOICE_FIELDS = {
    "auto": {"type", "disable_parallel_tool_use"},
    "any": {"type", "disable_parallel_tool_use"},
    "tool": {"type", "name", "disable_parallel_tool_use"},
    "none": {"type"},
}
FORCED_CHOICES = frozenset({"any", "tool"})
# The first bytes of each image type the API takes: it checks the bytes against the media_type.
IMAGE_SIGNATURES = {
    "image/jpeg": (b"\xff\xd8\xff",),
    "image/png": (b"\x89PNG\r\n\x1a\n",),
    "image/gif": (b"GIF87a", b"GIF89a"),
    "image/webp": (b"RIFF",),  # then 4 length bytes and WEBP (see image_type)
}
CACHE_TTLS = ("5m", "1h")
MAX_CACHE_BREAKPOINTS = 4
MIN_THINKING_BUDGET = 1024
MIN_THINKING_TOP_P = 0.95
THINKING_DOCS = (
    "Please consult our documentation at "
    "https://docs.claude.com/en/docs/build-with-claude/extended-thinking#important-considerations-when-using-extended-thinking"
)
DEFAULT_THINKING = "Let me think about what was asked before answering."

# status -> (error type, message)
ERRORS = {
    400: ("invalid_request_error", "Invalid request."),
    401: ("authentication_error", "invalid x-api-key"),
    402: ("billing_error", "Your credit balance is too low to access the Anthropic API."),
    403: ("permission_error", "Your API key does not have permission to use the specified resource."),
    404: ("not_found_error", "The requested resource could not be found."),
    413: ("request_too_large", "Request exceeds the maximum allowed number of bytes."),
    429: ("rate_limit_error", "Number of request tokens has exceeded your per-minute rate limit."),
    500: ("api_error", "Internal server error"),
    504: ("timeout_error", "Request timed out"),
    529: ("overloaded_error", "Overloaded"),
}


class Invalid(Exception):
    """A 400 invalid_request_error; the message names the field like the real API."""


class Signer:
    """Signs thinking as only this fake can: an HMAC of the text under a key made at start."""

    def __init__(self) -> None:
        self._key = secrets.token_bytes(32)

    def sign(self, text: str) -> str:
        return base64.b64encode(hmac.new(self._key, text.encode(), hashlib.sha256).digest()).decode()

    def signed(self, text: str, signature: Any) -> bool:
        return isinstance(signature, str) and hmac.compare_digest(self.sign(text), signature)

    def redact(self, text: str) -> str:
        """Opaque data standing for thinking withheld from the client (a redacted_thinking block)."""
        payload = base64.b64encode(text.encode()).decode()
        return f"{payload}.{self.sign('redacted:' + payload)}"

    def redaction_valid(self, data: Any) -> bool:
        payload, _, signature = data.partition(".") if isinstance(data, str) else ("", "", "")
        return bool(payload) and self.signed("redacted:" + payload, signature)


# Where no fake's signer is at hand (the system prompt): its key signed nothing, so no thinking passes.
STRANGER = Signer()


def text_of(content: Any) -> str:
    """The words of a message: its text blocks and the text of its tool results."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(block_text(b) for b in content if isinstance(b, dict))
    return ""


def block_text(block: dict[str, Any]) -> str:
    if block.get("type") == "tool_result":
        return text_of(block.get("content"))
    return str(block.get("text", ""))


def refuse_extra(where: str, value: dict[str, Any], allowed: set[str]) -> None:
    unknown = sorted(set(value) - allowed)
    if unknown:
        raise Invalid(f"{where}.{unknown[0]}: Extra inputs are not permitted")


def is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


# ---- content blocks --------------------------------------------------------------------------


def check_cache_control(where: str, value: Any) -> None:
    if value is None:
        return
    if not isinstance(value, dict):
        raise Invalid(f"{where}: Input should be a valid dictionary")
    refuse_extra(f"{where}.ephemeral", value, {"type", "ttl"})
    if value.get("type") != "ephemeral":
        raise Invalid(f"{where}: Input tag '{value.get('type')}' found using 'type' does not match 'ephemeral'")
    if "ttl" in value and value["ttl"] not in CACHE_TTLS:
        raise Invalid(f"{where}.ephemeral.ttl: Input should be '5m' or '1h'")


def image_type(data: bytes) -> str | None:
    """The image type the bytes are, by their first bytes (None: none the API takes)."""
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return next((kind for kind, starts in IMAGE_SIGNATURES.items() if data.startswith(starts)), None)


def check_image(where: str, block: dict[str, Any]) -> None:
    source = block.get("source")
    if not isinstance(source, dict):
        raise Invalid(f"{where}.source: Field required")
    if source.get("type") == "url":
        if not isinstance(source.get("url"), str) or not source["url"].startswith(("https://", "http://")):
            raise Invalid(f"{where}.source.url.url: Input should be a valid URL")
        return
    if source.get("type") != "base64":
        raise Invalid(f"{where}.source: Input tag '{source.get('type')}' found using 'type' does not match any tag")
    media_type = source.get("media_type")
    if media_type not in IMAGE_SIGNATURES:
        raise Invalid(
            f"{where}.source.base64.media_type: Input should be 'image/jpeg', 'image/png', 'image/gif' or 'image/webp'"
        )
    try:
        data = base64.b64decode(source.get("data") or "", validate=True)
    except (binascii.Error, ValueError, TypeError):
        raise Invalid(f"{where}.source.base64.data: Invalid base64 data") from None
    actual = image_type(data)
    if actual != media_type:  # the API reads the bytes, not only the label
        raise Invalid(
            f"{where}.source.base64: The image was specified using the {media_type} media type, but the image "
            f"appears to be a {actual or 'unsupported'} image"
        )


def check_tool_use(where: str, block: dict[str, Any], role: str) -> None:
    if role != "assistant":
        raise Invalid(f"{where}: tool_use blocks may only appear in assistant messages")
    for name in ("id", "name"):
        if not isinstance(block.get(name), str) or not block[name]:
            raise Invalid(f"{where}.{name}: Field required")
    if not isinstance(block.get("input"), dict):
        raise Invalid(f"{where}.input: Input should be a valid dictionary")


def check_tool_result(where: str, block: dict[str, Any], role: str, signer: Signer) -> None:
    if role != "user":
        raise Invalid(f"{where}: tool_result blocks may only appear in user messages")
    if not isinstance(block.get("tool_use_id"), str):
        raise Invalid(f"{where}.tool_use_id: Field required")
    if "is_error" in block and not isinstance(block["is_error"], bool):
        raise Invalid(f"{where}.is_error: Input should be a valid boolean")
    content = block.get("content")
    if isinstance(content, list):
        for i, inner in enumerate(content):
            if not isinstance(inner, dict) or inner.get("type") not in ("text", "image"):
                raise Invalid(f"{where}.content.{i}: Input tag found using 'type' does not match 'text' or 'image'")
        check_blocks(f"{where}.content", content, role, signer)
    elif content is not None and not isinstance(content, str):
        raise Invalid(f"{where}.content: Input should be a valid string or list")


def check_thinking_block(where: str, block: dict[str, Any], role: str, signer: Signer) -> None:
    if role != "assistant":
        raise Invalid(f"{where}: thinking blocks may only appear in assistant messages")
    if "cache_control" in block:
        raise Invalid(f"{where}.cache_control: cache_control cannot be set on thinking blocks")
    if block["type"] == "redacted_thinking":
        if not signer.redaction_valid(block.get("data")):
            raise Invalid(f"{where}.data: Invalid `data` in `redacted_thinking` block")
        return
    if not isinstance(block.get("thinking"), str):
        raise Invalid(f"{where}.thinking: Field required")
    if not signer.signed(block["thinking"], block.get("signature")):
        raise Invalid(f"{where}: Invalid `signature` in `thinking` block")


def check_blocks(where: str, blocks: list[Any], role: str = "user", signer: Signer | None = None) -> None:
    for i, block in enumerate(blocks):
        tag = block.get("type") if isinstance(block, dict) else None
        at = f"{where}.{i}"
        if tag not in BLOCK_TYPES:
            raise Invalid(f"{at}: Input tag '{tag}' found using 'type' does not match any of the expected tags")
        if tag == "text" and not isinstance(block.get("text"), str):
            raise Invalid(f"{at}.text: Field required")
        if tag == "text" and not block["text"]:
            raise Invalid(f"{where}: text content blocks must be non-empty")
        if tag == "image":
            check_image(f"{at}.image", block)
        elif tag == "tool_use":
            check_tool_use(f"{at}.tool_use", block, role)
        elif tag == "tool_result":
            check_tool_result(f"{at}.tool_result", block, role, signer or STRANGER)
        elif tag in ("thinking", "redacted_thinking"):
            check_thinking_block(at, block, role, signer or STRANGER)
        check_cache_control(f"{at}.{tag}.cache_control", block.get("cache_control"))


# ---- messages --------------------------------------------------------------------------------


def blocks_of(message: dict[str, Any]) -> list[dict[str, Any]]:
    content = message.get("content")
    return content if isinstance(content, list) else []


def tool_use_ids(message: dict[str, Any] | None) -> list[str]:
    if message is None or message.get("role") != "assistant":
        return []
    return [b["id"] for b in blocks_of(message) if b.get("type") == "tool_use"]


def check_message(i: int, message: Any, last: bool, signer: Signer) -> None:
    if not isinstance(message, dict):
        raise Invalid(f"messages.{i}: Input should be a valid dictionary")
    role = message.get("role")
    if role == "system":
        # The real API's own wording: system text is the top-level field.
        raise Invalid(
            'messages: Unexpected role "system". The Messages API accepts a '
            'top-level `system` parameter, not "system" as an input message role.'
        )
    if role not in ("user", "assistant"):
        raise Invalid(f"messages.{i}.role: Input should be 'user' or 'assistant'")
    if "content" not in message:
        raise Invalid(f"messages.{i}.content: Field required")
    content = message["content"]
    if isinstance(content, list):
        check_blocks(f"messages.{i}.content", content, role, signer)
    elif not isinstance(content, str):
        raise Invalid(f"messages.{i}.content: Input should be a valid string or list")
    if not content and not (last and role == "assistant"):
        raise Invalid(
            f"messages.{i}: all messages must have non-empty content except for the optional final assistant message"
        )


def check_tool_results(i: int, message: dict[str, Any], previous: dict[str, Any] | None) -> None:
    """A user message's tool_result blocks answer the calls of the assistant message just before it,
    and come before anything else in it."""
    called = tool_use_ids(previous)
    seen_other = False
    for j, block in enumerate(blocks_of(message)):
        if block.get("type") != "tool_result":
            seen_other = True
            continue
        if seen_other:
            raise Invalid(f"messages.{i}.content.{j}: tool_result blocks must come first in a user message")
        if block["tool_use_id"] not in called:
            raise Invalid(
                f"messages.{i}.content.{j}: unexpected `tool_use_id` found in `tool_result` blocks: "
                f"{block['tool_use_id']}. Each `tool_result` block must have a corresponding `tool_use` block "
                "in the previous message."
            )


def check_tool_pairs(messages: list[dict[str, Any]]) -> None:
    """Every tool_use is answered by a tool_result in the very next message (the real API's words)."""
    for i, message in enumerate(messages):
        if message["role"] == "user":
            check_tool_results(i, message, messages[i - 1] if i else None)
            continue
        following = messages[i + 1] if i + 1 < len(messages) else {"content": []}
        answered = {b.get("tool_use_id") for b in blocks_of(following) if b.get("type") == "tool_result"}
        missing = [call for call in tool_use_ids(message) if call not in answered]
        if missing:
            raise Invalid(
                f"messages.{i}: `tool_use` ids were found without `tool_result` blocks immediately after: "
                f"{', '.join(missing)}. Each `tool_use` block must have a corresponding `tool_result` block in the "
                "next message."
            )


def check_conversation(messages: Any, signer: Signer) -> None:
    if not isinstance(messages, list):
        raise Invalid("messages: Input should be a valid list")
    if not messages:
        raise Invalid("messages: at least one message is required")
    for i, message in enumerate(messages):
        check_message(i, message, last=i == len(messages) - 1, signer=signer)
    check_tool_pairs(messages)


# ---- tools -----------------------------------------------------------------------------------


def check_tool(i: int, tool: Any) -> str:
    if not isinstance(tool, dict):
        raise Invalid(f"tools.{i}: Input should be a valid dictionary")
    if tool.get("type", "custom") not in ("custom", None):
        raise Invalid(f"tools.{i}: FakeAnthropic serves custom tools only, not {tool['type']!r}")
    where = f"tools.{i}.custom"
    refuse_extra(where, tool, TOOL_FIELDS)
    name = tool.get("name")
    if not isinstance(name, str) or not re.fullmatch(TOOL_NAME[1:-1], name):
        raise Invalid(f"{where}.name: String should match pattern '{TOOL_NAME}'")
    if "input_schema" not in tool:
        raise Invalid(f"{where}.input_schema: Field required")
    schema = tool["input_schema"]
    if not isinstance(schema, dict) or schema.get("type") != "object":
        raise Invalid(f"{where}.input_schema.type: Input should be 'object'")
    if "description" in tool and not isinstance(tool["description"], str):
        raise Invalid(f"{where}.description: Input should be a valid string")
    check_cache_control(f"{where}.cache_control", tool.get("cache_control"))
    return name


def check_tools(tools: Any) -> list[str]:
    """The tools offered; returns their names."""
    if tools is None:
        return []
    if not isinstance(tools, list):
        raise Invalid("tools: Input should be a valid list")
    names = [check_tool(i, tool) for i, tool in enumerate(tools)]
    if len(set(names)) != len(names):
        raise Invalid("tools: Tool names must be unique.")
    return names


def check_tool_choice(choice: Any, tools: list[str]) -> None:
    if choice is None:
        return
    kind = choice.get("type") if isinstance(choice, dict) else None
    if kind not in TOOL_CHOICE_FIELDS:
        raise Invalid(
            f"tool_choice: Input tag '{kind}' found using 'type' does not match any of the expected tags: "
            "'auto', 'any', 'tool', 'none'"
        )
    refuse_extra(f"tool_choice.{kind}", choice, TOOL_CHOICE_FIELDS[kind])
    if not isinstance(choice.get("disable_parallel_tool_use", False), bool):
        raise Invalid(f"tool_choice.{kind}.disable_parallel_tool_use: Input should be a valid boolean")
    if kind in FORCED_CHOICES and not tools:
        raise Invalid("tool_choice: tool_choice may only be specified while providing tools.")
    if kind == "tool" and choice.get("name") not in tools:
        raise Invalid(f"tool_choice.tool.name: Tool '{choice.get('name')}' not found in the provided tools")


# ---- thinking --------------------------------------------------------------------------------


def thinking_on(body: dict[str, Any]) -> bool:
    return (body.get("thinking") or {}).get("type") in ("enabled", "adaptive")


def check_thinking_config(body: dict[str, Any]) -> None:
    thinking = body.get("thinking")
    if thinking is None:
        return
    kind = thinking.get("type") if isinstance(thinking, dict) else None
    if kind not in ("enabled", "disabled", "adaptive"):
        raise Invalid(f"thinking: Input tag '{kind}' found using 'type' does not match any of the expected tags")
    if kind != "enabled":
        return
    budget = thinking.get("budget_tokens")
    if not isinstance(budget, int) or isinstance(budget, bool):
        raise Invalid("thinking.enabled.budget_tokens: Field required")
    if budget < MIN_THINKING_BUDGET:
        raise Invalid(f"thinking.enabled.budget_tokens: Input should be greater than or equal to {MIN_THINKING_BUDGET}")
    if "max_tokens" in body and budget >= body["max_tokens"]:
        raise Invalid(f"`max_tokens` must be greater than `thinking.budget_tokens`. {THINKING_DOCS}")


def check_while_thinking(body: dict[str, Any]) -> None:
    """What extended thinking rules out: sampling changes and forced tool use."""
    temperature = body.get("temperature")
    if temperature is not None and temperature != 1:
        raise Invalid(f"`temperature` may only be set to 1 when thinking is enabled. {THINKING_DOCS}")
    if body.get("top_k") is not None:
        raise Invalid(f"`top_k` must be unset when thinking is enabled. {THINKING_DOCS}")
    top_p = body.get("top_p")
    if top_p is not None and top_p < MIN_THINKING_TOP_P:
        raise Invalid(f"`top_p` must be greater than or equal to {MIN_THINKING_TOP_P} when thinking is enabled.")
    if (body.get("tool_choice") or {}).get("type") in FORCED_CHOICES:
        raise Invalid("Thinking may not be enabled when tool_choice forces tool use.")


def check_thinking_history(body: dict[str, Any]) -> None:
    """With thinking on, the assistant turn of the tool loop under way starts with its (signed)
    thinking; with it off, a final assistant message holds no thinking."""
    messages = body["messages"]
    assistants = [i for i, m in enumerate(messages) if m["role"] == "assistant"]
    if not assistants:
        return
    last = assistants[-1]
    blocks = blocks_of(messages[last])
    first = blocks[0].get("type") if blocks else "text"
    if thinking_on(body) and tool_use_ids(messages[last]) and first not in ("thinking", "redacted_thinking"):
        raise Invalid(
            f"messages.{last}.content.0.type: Expected `thinking` or `redacted_thinking`, but found `{first}`. "
            "When `thinking` is enabled, a final `assistant` message must start with a thinking block (preceeding "
            "the lastmost set of `tool_use` and `tool_result` blocks). We recommend you include thinking blocks "
            f"from previous turns. To avoid this requirement, disable `thinking`. {THINKING_DOCS}"
        )
    if not thinking_on(body) and last == len(messages) - 1 and first in ("thinking", "redacted_thinking"):
        raise Invalid(
            f"messages.{last}.content.0: When thinking is disabled, an `assistant` message in the final position "
            "cannot contain `thinking`. To use thinking blocks, enable `thinking` in your request."
        )


def check_thinking(body: dict[str, Any]) -> None:
    check_thinking_config(body)
    if thinking_on(body):
        check_while_thinking(body)
    check_thinking_history(body)


# ---- the request -----------------------------------------------------------------------------


def cache_breakpoints(body: dict[str, Any]) -> int:
    """Blocks marked with cache_control: in the system, the tools, the messages and tool results."""
    blocks: list[Any] = list(body.get("system") or []) if isinstance(body.get("system"), list) else []
    blocks += body.get("tools") or []
    for message in body["messages"]:
        for block in blocks_of(message):
            inner = block.get("content")
            blocks += [block, *(inner if isinstance(inner, list) else [])]
    return sum(1 for block in blocks if isinstance(block, dict) and block.get("cache_control"))


def check_sampling(body: dict[str, Any]) -> None:
    temperature = body.get("temperature")
    if temperature is not None and not is_number(temperature):
        raise Invalid("temperature: Input should be a valid number")
    if temperature is not None and not 0 <= temperature <= 1:
        raise Invalid("temperature: range: 0..1")
    top_p = body.get("top_p")
    if top_p is not None and (not is_number(top_p) or not 0 <= top_p <= 1):
        raise Invalid("top_p: Input should be a number from 0 to 1")
    top_k = body.get("top_k")
    if top_k is not None and (not isinstance(top_k, int) or isinstance(top_k, bool) or top_k < 0):
        raise Invalid("top_k: Input should be a valid integer, greater than or equal to 0")
    if "stream" in body and not isinstance(body["stream"], bool):
        raise Invalid("stream: Input should be a valid boolean")


def check_metadata(metadata: Any) -> None:
    if metadata is None:
        return
    if not isinstance(metadata, dict):
        raise Invalid("metadata: Input should be a valid dictionary")
    refuse_extra("metadata", metadata, {"user_id"})
    user_id = metadata.get("user_id")
    if user_id is not None and (not isinstance(user_id, str) or len(user_id) > 256):
        raise Invalid("metadata.user_id: Input should be a valid string of at most 256 characters")


def check_system(system: Any) -> None:
    if isinstance(system, list):
        check_blocks("system", system)
        if any(block["type"] != "text" for block in system):
            raise Invalid("system: Input should be a valid string or a list of text blocks")
    elif system is not None and not isinstance(system, str):
        raise Invalid("system: Input should be a valid string or a list of text blocks")


def check_prompt(body: Any, params: set[str], required: tuple[str, ...], signer: Signer) -> dict[str, Any]:
    """What /v1/messages and /v1/messages/count_tokens both check."""
    if not isinstance(body, dict):
        raise Invalid("There was an error parsing the body")
    unknown = sorted(set(body) - params)
    if unknown:
        raise Invalid(f"{unknown[0]}: Extra inputs are not permitted")
    for field in required:
        if field not in body:
            raise Invalid(f"{field}: Field required")
    if not isinstance(body["model"], str):
        raise Invalid("model: Input should be a valid string")
    check_conversation(body["messages"], signer)
    check_system(body.get("system"))
    check_tool_choice(body.get("tool_choice"), check_tools(body.get("tools")))
    found = cache_breakpoints(body)
    if found > MAX_CACHE_BREAKPOINTS:
        raise Invalid(f"A maximum of {MAX_CACHE_BREAKPOINTS} blocks with cache_control may be provided. Found {found}.")
    return body


def check_messages(body: Any, signer: Signer | None = None) -> dict[str, Any]:
    body = check_prompt(body, PARAMS, ("model", "max_tokens", "messages"), signer or STRANGER)
    max_tokens = body["max_tokens"]
    if not isinstance(max_tokens, int) or isinstance(max_tokens, bool):
        raise Invalid("max_tokens: Input should be a valid integer")
    if max_tokens < 1:
        raise Invalid("max_tokens: Input should be greater than or equal to 1")
    check_sampling(body)
    check_metadata(body.get("metadata"))
    check_thinking(body)
    return body


def check_count(body: Any, signer: Signer) -> dict[str, Any]:
    body = check_prompt(body, COUNT_PARAMS, ("model", "messages"), signer)
    check_thinking(body)
    return body


def prompt_words(body: dict[str, Any]) -> int:
    return count_words(text_of(body.get("system"))) + sum(count_words(text_of(m["content"])) for m in body["messages"])


def offered_tools(body: dict[str, Any]) -> set[str]:
    """The tools the model may call: none under tool_choice "none", only the named one when one is named."""
    choice = body.get("tool_choice") or {}
    if choice.get("type") == "none":
        return set()
    if choice.get("type") == "tool":
        return {choice["name"]}
    return {tool["name"] for tool in body.get("tools") or ()}


def unoffered_call(body: dict[str, Any], answer: Answer) -> str | None:
    """A scripted call the request gives the model no way to make: the gateway lost the tools (or the
    choice) on the way, and a real model could not have answered so."""
    offered = offered_tools(body)
    names = [call.name for call in answer.tool_calls if call.name not in offered]
    if not names:
        return None
    return (
        f"FakeAnthropic: the scripted answer calls {', '.join(names)}, but the request offers only "
        f"{sorted(offered) or 'no tools'} (tools and tool_choice)."
    )


# ---- the answer ------------------------------------------------------------------------------


def event(name: str, payload: dict[str, Any]) -> str:
    return f"event: {name}\ndata: {json.dumps({'type': name, **payload})}\n\n"


def tool_use_block(call: FakeToolCall) -> dict[str, Any]:
    return {"type": "tool_use", "id": new_id("toolu_"), "name": call.name, "input": call.arguments}


def json_fragments(value: Any) -> list[str]:
    """A tool's input as the real API streams it: an empty first fragment, then its JSON text in pieces."""
    return [""] + re.findall(r"\w+|\W+", json.dumps(value))


def block_events(index: int, block: dict[str, Any], pieces: list[str]) -> Iterator[tuple[str, dict[str, Any]]]:
    """One content block as stream events: its start (empty), its deltas, its stop."""
    kind = block["type"]
    if kind == "thinking":
        start: dict[str, Any] = {"type": "thinking", "thinking": "", "signature": ""}
        deltas = [{"type": "thinking_delta", "thinking": piece} for piece in split_words(block["thinking"])]
        deltas.append({"type": "signature_delta", "signature": block["signature"]})
    elif kind == "tool_use":
        start = block | {"input": {}}
        deltas = [{"type": "input_json_delta", "partial_json": piece} for piece in json_fragments(block["input"])]
    elif kind == "text":
        start = {"type": "text", "text": ""}
        deltas = [{"type": "text_delta", "text": piece} for piece in pieces]
    else:  # redacted_thinking arrives whole in its start
        start, deltas = block, []
    yield "content_block_start", {"index": index, "content_block": start}
    for delta in deltas:
        yield "content_block_delta", {"index": index, "delta": delta}
    yield "content_block_stop", {"index": index}


class FakeAnthropic(FakeProvider):
    provider = "anthropic"
    default_api_key = "sk-ant-test"
    url_prefix = ""  # ANTHROPIC_BASE_URL has no /v1
    stop_reason = "end_turn"
    tool_reason = "tool_use"
    length_reason = "max_tokens"

    def __init__(self, api_key: str | None = None) -> None:
        super().__init__(api_key)
        self.signer = Signer()
        self._thinking = (DEFAULT_THINKING, False)

    def routes(self) -> list[web.RouteDef]:
        return [
            web.post("/v1/messages", self.endpoint(self._messages)),
            web.post("/v1/messages/count_tokens", self.endpoint(self._count_tokens)),
            web.route("*", "/{tail:.*}", self._unknown_url),
        ]

    # ---- what the test scripts -----------------------------------------------------

    def think(self, text: str = DEFAULT_THINKING, redacted: bool = False) -> None:
        """The thinking that answers start with when a request turns thinking on (until reset);
        redacted: a redacted_thinking block whose data only this fake can read back."""
        with self._lock:
            self._thinking = (text, redacted)

    def reset(self) -> None:
        super().reset()
        with self._lock:
            self._thinking = (DEFAULT_THINKING, False)

    def sign(self, thinking: str) -> str:
        """The signature this fake gives (and accepts back on) a thinking block with this text."""
        return self.signer.sign(thinking)

    # ---- errors and auth ---------------------------------------------------------

    def error_response(self, status: int, body: Any = None, headers: dict[str, str] | None = None) -> web.Response:
        request_id = new_id("req_")
        if body is None:
            kind, message = ERRORS.get(status, ("api_error", f"HTTP {status}"))
            body = {"type": "error", "error": {"type": kind, "message": message}, "request_id": request_id}
        defaults = {"request-id": request_id}
        if status == 429:
            defaults["retry-after"] = "1"
        return web.json_response(body, status=status, headers={**defaults, **(headers or {})})

    def invalid(self, message: str, status: int = 400) -> web.Response:
        kind = ERRORS[status][0]
        return self.error_response(
            status, {"type": "error", "error": {"type": kind, "message": message}, "request_id": new_id("req_")}
        )

    def auth_error(self, received: Received) -> web.Response | None:
        # The API takes the key as x-api-key or (as the current SDK sends it) Bearer.
        key = received.headers.get("x-api-key")
        auth = received.headers.get("authorization", "")
        if key is None and auth.startswith("Bearer "):
            key = auth[7:].strip()
        if not key:
            return self.invalid("x-api-key header is required", 401)
        if key != self.api_key:
            return self.invalid("invalid x-api-key", 401)
        if "anthropic-version" not in received.headers:
            return self.invalid("anthropic-version: header is required")
        return None

    async def _unknown_url(self, request: web.Request) -> web.Response:
        await self._record(request)
        return self.invalid("Not Found", 404)

    # ---- count_tokens ------------------------------------------------------------

    async def _count_tokens(self, request: web.Request, received: Received, fault: Fault | None) -> web.Response:
        try:
            body = check_count(received.json, self.signer)
        except Invalid as exc:
            return self.invalid(str(exc))
        # The same count as the prompt's input_tokens on /v1/messages (a scripted count included).
        tokens = self.answer(prompt_words(body), None).input_tokens
        return web.json_response({"input_tokens": tokens}, headers={"request-id": new_id("req_")})

    # ---- messages ----------------------------------------------------------------

    async def _messages(self, request: web.Request, received: Received, fault: Fault | None) -> web.StreamResponse:
        try:
            body = check_messages(received.json, self.signer)
        except Invalid as exc:
            return self.invalid(str(exc))
        answer = self.answer(prompt_words(body), body["max_tokens"])
        refusal = unoffered_call(body, answer)
        if refusal is not None:
            return self.invalid(refusal)
        content = self._content(answer, thinking_on(body))
        message = {"id": new_id("msg_"), "type": "message", "role": "assistant", "model": body["model"]}
        headers = {"request-id": new_id("req_")}
        if not body.get("stream"):
            message |= {
                "content": content,
                "stop_reason": answer.finish_reason,
                "stop_sequence": None,
                "usage": self._usage(answer, answer.output_tokens + answer.counts.reasoning),
            }
            return web.json_response(message, headers=headers)
        response = await self.open_stream(request, headers)
        await self._stream(request, response, message, answer, content, fault)
        return response

    def _content(self, answer: Answer, thinking: bool) -> list[dict[str, Any]]:
        """Thinking first (when asked for), then the text, then the tool calls. An answer that only
        calls tools has no text block; any other has one, even empty."""
        blocks = [self._thinking_block()] if thinking else []
        if answer.text or not answer.tool_calls:
            blocks.append({"type": "text", "text": answer.text})
        return blocks + [tool_use_block(call) for call in answer.tool_calls]

    def _thinking_block(self) -> dict[str, Any]:
        with self._lock:
            text, redacted = self._thinking
        if redacted:
            return {"type": "redacted_thinking", "data": self.signer.redact(text)}
        return {"type": "thinking", "thinking": text, "signature": self.signer.sign(text)}

    @staticmethod
    def _usage(answer: Answer, output_tokens: int) -> dict[str, Any]:
        """input_tokens counts only the prompt tokens neither read from nor written to the cache;
        thinking is billed as output, inside output_tokens."""
        counts = answer.counts
        written = counts.cache_write + counts.cache_write_1h
        return {
            "input_tokens": answer.input_tokens - counts.cached - written,
            "output_tokens": output_tokens,
            "cache_creation_input_tokens": written,
            "cache_read_input_tokens": counts.cached,
            "cache_creation": {
                "ephemeral_5m_input_tokens": counts.cache_write,
                "ephemeral_1h_input_tokens": counts.cache_write_1h,
            },
        }

    async def _stream(
        self,
        request: web.Request,
        response: web.StreamResponse,
        message: dict[str, Any],
        answer: Answer,
        content: list[dict[str, Any]],
        fault: Fault | None,
    ) -> None:
        # message_start reports output_tokens 1, like the real API: a client that ADDS the
        # message_delta figure to it, instead of taking it as the total, is off by one.
        start = message | {
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": self._usage(answer, min(1, answer.output_tokens)),
        }
        await self.send(response, event("message_start", {"message": start}))
        events = [e for index, block in enumerate(content) for e in block_events(index, block, answer.pieces)]
        # A fault comes after that many content deltas (all of them, when there are fewer).
        deltas = sum(1 for name, _ in events if name == "content_block_delta")
        limit = min(fault.after_chunks, deltas) if fault is not None and fault.kind in STREAM_ONLY else None
        sent = 0
        for position, (name, payload) in enumerate(events):
            await self.send(response, event(name, payload))
            if position == 0:
                await self.send(response, event("ping", {}))
                if fault is not None and fault.kind == "malformed":
                    await self.send(response, 'event: content_block_delta\ndata: {"type": "conte\n\n')
                    return
            sent += name == "content_block_delta"
            if sent == limit and (name == "content_block_delta" or limit == 0):
                break
        if await self._stream_fault(request, response, fault):
            return
        await self.send(
            response,
            event(
                "message_delta",
                {
                    "delta": {"stop_reason": answer.finish_reason, "stop_sequence": None},
                    "usage": {"output_tokens": answer.output_tokens + answer.counts.reasoning},
                },
            ),
        )
        await self.send(response, event("message_stop", {}))

    async def _stream_fault(self, request: web.Request, response: web.StreamResponse, fault: Fault | None) -> bool:
        """Break the stream where it stands (True), or leave it to finish (False)."""
        if fault is not None and fault.kind == "cut":
            self.cut(request)
            return True
        if fault is not None and fault.kind == "stream_error":
            await self.send(response, event("error", {"error": {"type": "overloaded_error", "message": "Overloaded"}}))
            return True
        return False
