"""Gemini chat, translated: Pulse's ChatRequest as a generateContent body, and Gemini's answers
(text, function calls, several candidates, stream chunks) as ChatResult and ChatDelta. GeminiClient
(gemini.py) does the HTTP.

The wire facts, from the google-genai SDK's types and its Gemini API ("mldev") converters unless
said otherwise:
- Parts: {"text"}, {"inlineData": {"mimeType", "data": base64}}, {"functionCall": {"name", "args":
  object, "id"?}}, {"functionResponse": {"name", "response": object, "id"?}}; any part may carry a
  "thoughtSignature" (bytes, so base64 in JSON). The API takes no image URLs: Pulse sends the bytes.
- Gemini 3 models put a thoughtSignature on the first functionCall part of each step and refuse the
  next request (400 "Function call is missing a thought_signature in functionCall parts") when a
  call of the current turn comes back without it. OpenAI clients only echo tool call ids, so the
  signature rides in the id, as LiteLLM does ("<id>__thought__<signature>").
- FunctionDeclaration.parametersJsonSchema takes full JSON Schema (`parameters`, its alternative, is
  the OpenAPI subset); GenerationConfig.responseJsonSchema likewise, beside responseMimeType.
- toolConfig.functionCallingConfig.mode: AUTO | ANY | NONE; allowedFunctionNames narrows ANY.
- thinkingConfig: thinkingBudget for 2.5 (Pro 128..32768 and never off; Flash 0..24576; Flash-Lite
  0 or 512..24576; -1 dynamic), thinkingLevel for Gemini 3 (Pro LOW | HIGH; Flash also MINIMAL and
  MEDIUM; thinkingBudget still accepted); not both. (ai.google.dev's thinking page, as quoted by
  third parties.)
- What the API refuses, found in issue threads: responseLogprobs ("Logprobs is not enabled for
  models/gemini-2.5-pro"), non-zero penalties on 2.5 and 3 ("Penalty is not enabled for
  models/gemini-2.5-flash"), candidateCount > 1 on Gemini 3 ("Multiple candidates is not enabled for
  this model"); 2.5 takes up to 8 candidates.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import re
import secrets
from dataclasses import dataclass, replace
from typing import Any, NamedTuple

from providers.clients.base import (
    CALL_ID_SIGNATURE,
    CONTENT_FILTER,
    LENGTH,
    STOP,
    TOOL_CALLS,
    ChatChoice,
    ChatDelta,
    ChatImage,
    ChatMessage,
    ChatRequest,
    ChatResult,
    Reasoning,
    ResponseFormat,
    Tool,
    ToolCall,
    ToolCallDelta,
    ToolChoice,
    Unsupported,
    Usage,
)
from providers.clients.http_client import set_fields
from providers.clients.remote_images import fetch_image

# Anything else (OTHER, MALFORMED_FUNCTION_CALL, ...) still ended the answer: STOP.
FINISH_REASONS = {
    "STOP": STOP,
    "MAX_TOKENS": LENGTH,
    **dict.fromkeys(
        ("SAFETY", "RECITATION", "BLOCKLIST", "PROHIBITED_CONTENT", "SPII", "IMAGE_SAFETY"), CONTENT_FILTER
    ),
}
TOOL_MODES = {"auto": "AUTO", "none": "NONE", "required": "ANY", "tool": "ANY"}
MAX_CANDIDATES = 8  # Gemini 2.5's limit on candidateCount
SIGNATURE_SEPARATOR = CALL_ID_SIGNATURE
PULSE_CALL_ID = re.compile(r"call_[0-9a-f]{24}")


def gemini_usage(metadata: dict[str, Any] | None) -> Usage:
    """Thinking is billed as output, so it counts in output_tokens too. Proto3 JSON leaves
    zero counts out: every field may be missing. candidatesTokenCount covers every candidate."""
    if not metadata:
        return Usage(estimated=True)
    thoughts = metadata.get("thoughtsTokenCount") or 0
    return Usage(
        input_tokens=metadata.get("promptTokenCount") or 0,
        output_tokens=(metadata.get("candidatesTokenCount") or 0) + thoughts,
        cached_input_tokens=metadata.get("cachedContentTokenCount") or 0,
        reasoning_tokens=thoughts,
    )


def finish_reason(value: str | None) -> str:
    return FINISH_REASONS.get(value or "", STOP)


# ---- thought signatures, carried in tool call ids --------------------------------------------


def new_call_id() -> str:
    return f"call_{secrets.token_hex(12)}"


def standard_base64(text: str) -> bytes:
    """Bytes from base64 in either alphabet, padded or not (raises binascii.Error when it is not)."""
    text = text.replace("-", "+").replace("_", "/")
    return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)


def call_id_with_signature(base: str, signature: str | None) -> str:
    """The id a client sees: the signature after the separator, URL-safe base64 without padding, so
    the id keeps to [A-Za-z0-9_-] (Anthropic's tool_use ids must, should the conversation move there).
    Such an id is long: OpenAI refuses tool call ids over 40 characters ("string_above_max_length"),
    so a conversation moving to OpenAI needs the part from the separator cut off (split_call_id)."""
    if not signature:
        return base
    safe = base64.urlsafe_b64encode(standard_base64(signature)).decode().rstrip("=")
    return f"{base}{SIGNATURE_SEPARATOR}{safe}"


def split_call_id(call_id: str) -> tuple[str, str | None]:
    """(the call's own id, Gemini's signature as it sent it); a mangled signature is dropped, and
    Gemini's own 400 then says that it is missing."""
    base, separator, safe = call_id.partition(SIGNATURE_SEPARATOR)
    if not separator:
        return call_id, None
    try:
        return base, base64.b64encode(standard_base64(safe)).decode()
    except (binascii.Error, ValueError):
        return base, None


def wire_call_id(base: str) -> str | None:
    """The id to send on functionCall and functionResponse parts: none for the ids Pulse made up
    (Gemini matches calls and results by name and order then, as LiteLLM has always sent them),
    Gemini's own (or another provider's, when a conversation moved here) as it is."""
    return None if PULSE_CALL_ID.fullmatch(base) else base or None


# ---- the request -----------------------------------------------------------------------------


async def images_fetched(request: ChatRequest) -> ChatRequest:
    """The request with every image given by URL replaced by its bytes (Gemini takes no URLs).
    Messages are fetched concurrently; the first failure (an ImageFetchError) cancels the rest."""
    if all(image.data is not None for message in request.messages for image in message.images):
        return request
    try:
        async with asyncio.TaskGroup() as fetches:
            tasks = [fetches.create_task(message_with_image_bytes(message)) for message in request.messages]
    except ExceptionGroup as failed:
        raise failed.exceptions[0] from None
    return replace(request, messages=tuple(task.result() for task in tasks))


async def message_with_image_bytes(message: ChatMessage) -> ChatMessage:
    if all(image.data is not None for image in message.images):
        return message
    parts = [await fetch_image(part) if isinstance(part, ChatImage) else part for part in message.parts]
    return replace(message, parts=tuple(parts))


def request_body(request: ChatRequest, model: str) -> dict[str, Any]:
    """The generateContent body. `model` is the bare model id (no "models/")."""
    body: dict[str, Any] = {"contents": contents(request)}
    if request.system_text:
        body["systemInstruction"] = {"parts": [{"text": request.system_text}]}
    # parallel_tool_calls has no Gemini switch (the model may always call several functions at
    # once), so it is dropped; `user` too: Gemini takes no end-user id.
    if request.tools:
        body["tools"] = [{"functionDeclarations": [function_declaration(tool) for tool in request.tools]}]
        if request.tool_choice is not None:
            body["toolConfig"] = tool_config(request.tool_choice)
    config = generation_config(request, model)
    if config:
        body["generationConfig"] = config
    return body


def count_tokens_body(request: ChatRequest, model: str) -> dict[str, Any]:
    """countTokens takes the whole generateContent request (system text and tools count too). The
    generation config is left out: it adds no prompt tokens, and its checks (candidate count,
    thinking ranges) would only make a count fail that could succeed."""
    body = request_body(request, model)
    body.pop("generationConfig", None)
    return {"generateContentRequest": {"model": f"models/{model}", **body}}


def total_tokens(response: dict[str, Any]) -> int:
    # Proto3 JSON leaves a zero count out.
    total = response.get("totalTokens", 0)
    if not isinstance(total, int):
        raise TypeError("totalTokens is not an integer")
    return total


def contents(request: ChatRequest) -> list[dict[str, Any]]:
    """The dialogue as Gemini contents: assistant turns are "model", tool results "user" turns, and
    the results of one step (consecutive tool messages) go together in one turn, as Gemini wants
    every response to a step's calls in the turn right after it."""
    turns: list[dict[str, Any]] = []
    previous: str | None = None
    for message in request.dialogue:
        if message.role == "tool" and previous == "tool":
            turns[-1]["parts"].append(function_response_part(message, request))
        else:
            turns.append(content_of(message, request))
        previous = message.role
    return turns


def content_of(message: ChatMessage, request: ChatRequest) -> dict[str, Any]:
    if message.role == "assistant":
        return {"role": "model", "parts": model_parts(message)}
    if message.role == "tool":
        return {"role": "user", "parts": [function_response_part(message, request)]}
    return {"role": "user", "parts": [piece_part(piece) for piece in message.pieces()] or [{"text": ""}]}


def model_parts(message: ChatMessage) -> list[dict[str, Any]]:
    # The assistant's reasoning is not sent back: Gemini reads only its signatures, and those of
    # function calls travel in the call ids.
    parts = [{"text": message.content}] if message.content else []
    parts += [function_call_part(call) for call in message.tool_calls]
    return parts or [{"text": ""}]


def piece_part(piece: str | ChatImage) -> dict[str, Any]:
    if isinstance(piece, str):
        return {"text": piece}
    # OpenAI's `detail` has no Gemini counterpart on the Developer API: dropped.
    if piece.data is None:
        raise ValueError("an image without its bytes (images_fetched() runs first)")
    return {"inlineData": {"mimeType": piece.content_type, "data": base64.b64encode(piece.data).decode()}}


def function_call_part(call: ToolCall) -> dict[str, Any]:
    base, signature = split_call_id(call.id)
    part: dict[str, Any] = {
        "functionCall": set_fields(name=call.name, args=call_arguments(call), id=wire_call_id(base))
    }
    if signature:
        part["thoughtSignature"] = signature
    return part


def call_arguments(call: ToolCall) -> dict[str, Any]:
    """Gemini's args must be an object. Arguments that are not a JSON object (a model elsewhere cut
    off mid-call, say) are kept as text rather than lost or made to fail the whole conversation."""
    try:
        arguments = json.loads(call.arguments or "{}")
    except ValueError:
        return {"arguments": call.arguments}
    return arguments if isinstance(arguments, dict) else {"arguments": arguments}


def function_response_part(message: ChatMessage, request: ChatRequest) -> dict[str, Any]:
    """A tool result, answered by function name (Gemini's key; OpenAI's tool message has only the id)."""
    base, _ = split_call_id(message.tool_call_id or "")
    result = tool_result(message.content)
    # The SDK documents "error" as the key for a failed call's details, "output" (or the whole
    # object) for a result.
    response = {
        "name": request.tool_name(message.tool_call_id),
        "response": {"error": result} if message.is_error else result,
    }
    if (wire_id := wire_call_id(base)) is not None:
        response["id"] = wire_id
    return {"functionResponse": response}


def tool_result(text: str) -> dict[str, Any]:
    """Gemini's response must be an object: a JSON object as it is, anything else as {"result": text}."""
    try:
        value = json.loads(text)
    except ValueError:
        return {"result": text}
    return value if isinstance(value, dict) else {"result": text}


def function_declaration(tool: Tool) -> dict[str, Any]:
    # OpenAI's `strict` has no Gemini counterpart (the API always keeps to the declared schema as
    # it can): dropped.
    return set_fields(name=tool.name, description=tool.description, parametersJsonSchema=tool.parameters)


def tool_config(choice: ToolChoice) -> dict[str, Any]:
    calling: dict[str, Any] = {"mode": TOOL_MODES[choice.mode]}
    if choice.mode == "tool" and choice.name:
        calling["allowedFunctionNames"] = [choice.name]
    return {"functionCallingConfig": calling}


def generation_config(request: ChatRequest, model: str) -> dict[str, Any]:
    config = set_fields(
        temperature=request.temperature,
        maxOutputTokens=request.max_tokens,
        topP=request.top_p,
        topK=request.top_k,
        stopSequences=list(request.stop),
        candidateCount=request.n if request.n > 1 else None,
        seed=request.seed,
        # A zero penalty changes nothing and is refused by models without penalties: left out.
        presencePenalty=request.presence_penalty or None,
        frequencyPenalty=request.frequency_penalty or None,
        thinkingConfig=thinking_config(request, model),
    )
    if request.response_format is not None:
        config |= response_format_config(request.response_format)
    return config


def response_format_config(response_format: ResponseFormat) -> dict[str, Any]:
    # OpenAI's schema `name` and `strict` have no Gemini counterpart: dropped.
    config: dict[str, Any] = {"responseMimeType": "application/json"}
    if response_format.type == "json_schema" and response_format.schema is not None:
        config["responseJsonSchema"] = response_format.schema
    return config


# ---- thinking ------------------------------------------------------------------------------
# Budgets for OpenAI's efforts on the 2.5 models: low 1024, a short deliberation (Anthropic's
# smallest budget, LiteLLM's low); medium 8192, room for multi-step problems at a third of Flash's
# range (OpenAI's medium is its default, and Gemini's own default is dynamic, rarely near the top);
# high the model's whole range, as high asks for the most reasoning; minimal (and none) the least
# the model takes: 0, thinking off, where it can be switched off, else Pro's 128.
LOW_BUDGET, MEDIUM_BUDGET = 1024, 8192
EFFORT_LEVELS = {
    "none": "MINIMAL",
    "minimal": "MINIMAL",
    "low": "LOW",
    "medium": "MEDIUM",
    "high": "HIGH",
    "xhigh": "HIGH",
}
LEVEL_ORDER = ("MINIMAL", "LOW", "MEDIUM", "HIGH")


@dataclass(frozen=True)
class BudgetThinking:
    """A 2.5 model: thinking as a token budget, least..most, or 0 (off) where it can be switched off."""

    least: int
    most: int
    can_switch_off: bool

    def for_effort(self, effort: str) -> dict[str, Any]:
        budgets = {"none": 0, "minimal": 0, "low": LOW_BUDGET, "medium": MEDIUM_BUDGET}
        return self.for_budget(budgets.get(effort, self.most))

    def for_budget(self, budget: int) -> dict[str, Any]:
        """The budget brought into the model's range: a budget is a ceiling, so one over the range
        means "as much as the model can", one under it the least the model takes."""
        if budget < 0:
            return {"thinkingBudget": -1}  # dynamic: the model decides
        if budget == 0 and self.can_switch_off:
            return {"thinkingBudget": 0}
        return {"thinkingBudget": max(self.least, min(budget, self.most))}


@dataclass(frozen=True)
class LevelThinking:
    """A Gemini 3 model: thinking as a level, from those the model has."""

    levels: tuple[str, ...]

    def for_effort(self, effort: str) -> dict[str, Any]:
        """The least level at or above the one asked for: a model cannot think less than its lowest
        level, and where it lacks MEDIUM (Pro), HIGH is its own default."""
        wanted = LEVEL_ORDER.index(EFFORT_LEVELS.get(effort, "HIGH"))
        level = next((level for level in self.levels if LEVEL_ORDER.index(level) >= wanted), self.levels[-1])
        return {"thinkingLevel": level}

    def for_budget(self, budget: int) -> dict[str, Any]:
        # Gemini 3 still takes thinkingBudget (for code written for 2.5); its range is not published.
        return {"thinkingBudget": budget}


# Longest prefix first: "gemini-2.5-flash-lite" before "gemini-2.5-flash".
BUDGET_MODELS = (
    ("gemini-2.5-flash-lite", BudgetThinking(512, 24576, can_switch_off=True)),
    ("gemini-2.5-flash", BudgetThinking(1, 24576, can_switch_off=True)),
    ("gemini-2.5-pro", BudgetThinking(128, 32768, can_switch_off=False)),
)
GEMINI_3_PRO = LevelThinking(("LOW", "HIGH"))
GEMINI_3_FLASH = LevelThinking(("MINIMAL", "LOW", "MEDIUM", "HIGH"))


def thinking_of(model: str) -> BudgetThinking | LevelThinking | None:
    """How this model's thinking is set; None for models Pulse does not know to think."""
    if model.startswith("gemini-3"):
        return GEMINI_3_FLASH if "flash" in model else GEMINI_3_PRO
    return next((spec for prefix, spec in BUDGET_MODELS if model.startswith(prefix)), None)


def thinking_config(request: ChatRequest, model: str) -> dict[str, Any] | None:
    """An explicit budget wins over an effort; nothing when the request asks for neither (the
    model's own default, dynamic thinking)."""
    spec = thinking_of(model)
    if spec is None:
        return None
    if request.thinking_budget is not None:
        return spec.for_budget(request.thinking_budget)
    if request.reasoning_effort:
        return spec.for_effort(request.reasoning_effort)
    return None


# ---- what Gemini cannot honour -----------------------------------------------------------------


def without_penalties(model: str) -> bool:
    return model.startswith(("gemini-2.5", "gemini-3"))


def unsupported_param(request: ChatRequest, model: str) -> Unsupported | None:
    """The first request field this model cannot honour (the pipeline then tries another candidate)."""
    if request.logprobs or request.top_logprobs is not None:
        return Unsupported("logprobs", "Gemini models do not return log probabilities (responseLogprobs is disabled)")
    if request.n > 1 and model.startswith("gemini-3"):
        return Unsupported("n", f"{model} answers one choice per request")
    if request.n > MAX_CANDIDATES:
        return Unsupported("n", f"Gemini answers at most {MAX_CANDIDATES} choices per request")
    for param, value in (
        ("presence_penalty", request.presence_penalty),
        ("frequency_penalty", request.frequency_penalty),
    ):
        if value and without_penalties(model):
            return Unsupported(param, f"{model} takes no presence or frequency penalty")
    if thinking_of(model) is None:
        if request.reasoning_effort:
            return Unsupported("reasoning_effort", f"Pulse does not know how to set {model}'s thinking")
        if request.thinking_budget is not None:
            return Unsupported("thinking", f"Pulse does not know how to set {model}'s thinking")
    return None


# ---- the answer ------------------------------------------------------------------------------


def candidate_parts(candidate: dict[str, Any]) -> list[dict[str, Any]]:
    parts = (candidate.get("content") or {}).get("parts") or []
    if not isinstance(parts, list):
        raise TypeError("content.parts is not a list")
    return parts


def answer_text(parts: list[dict[str, Any]]) -> str:
    return "".join(part.get("text") or "" for part in parts if not part.get("thought"))


def answer_reasoning(parts: list[dict[str, Any]]) -> tuple[Reasoning, ...]:
    """Thought summaries (only there when includeThoughts was asked for)."""
    return tuple(Reasoning(part["text"]) for part in parts if part.get("thought") and part.get("text"))


def tool_call_of(part: dict[str, Any]) -> ToolCall:
    """A functionCall part as a ToolCall; Gemini gives no id of its own unless asked, so Pulse makes
    one, and its thoughtSignature rides along in it."""
    call = part["functionCall"]
    name, args = call["name"], call.get("args") or {}
    if not isinstance(name, str) or not isinstance(args, dict):
        raise TypeError("a functionCall without a name or with args that are not an object")
    base = call.get("id") or new_call_id()
    return ToolCall(call_id_with_signature(base, part.get("thoughtSignature")), name, json.dumps(args))


def answer_tool_calls(parts: list[dict[str, Any]]) -> tuple[ToolCall, ...]:
    return tuple(tool_call_of(part) for part in parts if "functionCall" in part)


def calls_finish(reason: str | None, called: bool) -> str:
    """Gemini ends an answer that calls functions with STOP; OpenAI's clients look for tool_calls."""
    ours = finish_reason(reason)
    return TOOL_CALLS if called and ours == STOP else ours


def candidate_choice(candidate: dict[str, Any]) -> ChatChoice:
    parts = candidate_parts(candidate)
    calls = answer_tool_calls(parts)
    return ChatChoice(answer_text(parts), calls_finish(candidate.get("finishReason"), bool(calls)), calls)


def response_result(response: dict[str, Any], model: str) -> ChatResult:
    """Candidate 0 is the answer, the others (candidateCount > 1) its more_choices. Proto3 JSON
    leaves index 0 out, so a candidate without an index is the first."""
    candidates = sorted(response["candidates"], key=lambda candidate: candidate.get("index") or 0)
    if not candidates:
        raise KeyError("candidates")
    first, *more = [candidate_choice(candidate) for candidate in candidates]
    return ChatResult(
        content=first.content,
        finish_reason=first.finish_reason,
        usage=gemini_usage(response.get("usageMetadata")),
        upstream_model=response.get("modelVersion") or model,
        upstream_id=response.get("responseId"),
        tool_calls=first.tool_calls,
        reasoning=answer_reasoning(candidate_parts(candidates[0])),
        more_choices=tuple(more),
    )


class StreamPiece(NamedTuple):
    """What one stream chunk adds, and Gemini's finish reason if the chunk has one."""

    delta: ChatDelta
    finish_reason: str | None


def stream_piece(chunk: dict[str, Any], calls_so_far: int) -> StreamPiece:
    """Candidate 0's text, thoughts and function calls in a chunk (a chunk may hold only usage).
    Gemini sends each functionCall whole, so each is one ToolCallDelta with all its arguments.
    Streams of several candidates never reach here: the gateway refuses n > 1 with stream."""
    candidate = (chunk.get("candidates") or [{}])[0]
    parts = candidate_parts(candidate)
    calls = answer_tool_calls(parts)
    deltas = tuple(
        ToolCallDelta(calls_so_far + offset, call.id, call.name, call.arguments) for offset, call in enumerate(calls)
    )
    reasoning = "".join(piece.text for piece in answer_reasoning(parts))
    delta = ChatDelta(content=answer_text(parts), tool_calls=deltas, reasoning=reasoning)
    return StreamPiece(delta, candidate.get("finishReason"))
