"""Anthropic chat, translated: Pulse's ChatRequest as a Messages API body, and Anthropic's answers
(messages and stream events) as ChatResult and ChatDelta. AnthropicClient (anthropic.py) does the
HTTP.

Here are what a request asks for (max_tokens, a thinking budget from an effort or in tokens, the
tool a structured answer is forced through), what Anthropic cannot do (checked before a request is
sent, so another candidate may take it), the request's fields (system, messages as content blocks
with all tool results in one user message, tools, tool_choice, thinking), and the answer: usage with
the cache reads and writes counted in, stop reasons, thinking kept with its signature. A stream's
events are read by MessageStream, beside the client that drives it.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from typing import Any

from providers.clients.base import (
    CONTENT_FILTER,
    LENGTH,
    STOP,
    TOOL_CALLS,
    ChatImage,
    ChatMessage,
    ChatRequest,
    ChatResult,
    Reasoning,
    ResponseFormat,
    Tool,
    ToolCall,
    Unsupported,
    Usage,
    portable_call_id,
)
from providers.clients.http_client import set_fields

# The gateway normally fills max_tokens from the route; the API refuses a request without it.
DEFAULT_MAX_TOKENS = 4096
STOP_REASONS = {
    "end_turn": STOP,
    "stop_sequence": STOP,
    "pause_turn": STOP,
    "max_tokens": LENGTH,
    "model_context_window_exceeded": LENGTH,
    "tool_use": TOOL_CALLS,
    "refusal": CONTENT_FILTER,
}

IMAGE_TYPES = frozenset({"image/jpeg", "image/png", "image/gif", "image/webp"})
TOOL_CHOICE_TYPES = {"auto": "auto", "required": "any", "tool": "tool", "none": "none"}
FORCED_TOOL_CHOICES = frozenset({"required", "tool"})
EMPTY_SCHEMA: dict[str, Any] = {"type": "object", "properties": {}}
FORMAT_TOOL_DESCRIPTION = "Give your answer by calling this tool: its input is the answer."

# reasoning_effort -> thinking budget_tokens. "low" is Anthropic's minimum budget and each step is
# four times the last; the OpenAI client maps a budget back to the same effort (below 2048 low,
# below 16384 medium), so an effort survives a trip through either API. Thinking counts toward
# max_tokens, as OpenAI's reasoning counts toward max_completion_tokens: an effort is a hint, so its
# budget is capped to leave at least half of max_tokens for the answer (a route's default of 4096
# then still serves "high"); a budget the client set in tokens is sent as it is.
EFFORT_BUDGETS = {"low": 1024, "medium": 4096, "high": 16384}
NO_THINKING_EFFORTS = frozenset({"none", "minimal"})  # the least thinking Claude does is none
KNOWN_EFFORTS = NO_THINKING_EFFORTS | EFFORT_BUDGETS.keys()
MIN_THINKING_BUDGET = 1024
MIN_THINKING_TOP_P = 0.95  # with thinking on, Anthropic takes top_p from 0.95 to 1 only


def anthropic_usage(counts: dict[str, Any]) -> Usage:
    """Anthropic's input_tokens leaves out the prompt tokens written to and read from the
    cache. Pulse's input_tokens is the whole prompt, as OpenAI and Gemini count it, with the
    cache reads and writes among them, each priced apart. counts is a flat usage object
    (counts_of): the cache_creation breakdown says which writes went to the 1-hour cache; the
    rest are 5-minute writes."""
    written = counts.get("cache_creation_input_tokens") or 0
    written_1h = min(counts.get("ephemeral_1h_input_tokens") or 0, written)
    read = counts.get("cache_read_input_tokens") or 0
    return Usage(
        input_tokens=counts["input_tokens"] + written + read,
        output_tokens=counts.get("output_tokens") or 0,
        cached_input_tokens=read,
        cache_write_tokens=written - written_1h,
        cache_write_1h_tokens=written_1h,
    )


def counts_of(usage: dict[str, Any]) -> dict[str, int]:
    """The token counts of a usage object, flat: the cache_creation breakdown's counts join the rest
    (it also holds names and other nested objects, which are left out)."""
    counts = {name: value for name, value in usage.items() if isinstance(value, int)}
    breakdown = usage.get("cache_creation")
    if isinstance(breakdown, dict):
        counts |= {name: value for name, value in breakdown.items() if isinstance(value, int)}
    return counts


def stop_reason(value: str | None, answered_by_tool: bool = False) -> str:
    if answered_by_tool and value == "tool_use":
        return STOP  # the forced tool call that carries a structured answer is the answer's end
    return STOP_REASONS.get(value or "", STOP)


# ---- what the request asks for -------------------------------------------------------------


def max_tokens_of(request: ChatRequest) -> int:
    return DEFAULT_MAX_TOKENS if request.max_tokens is None else request.max_tokens


def thinking_budget(request: ChatRequest) -> int | None:
    """The thinking budget in tokens, None for no thinking (see EFFORT_BUDGETS)."""
    if request.thinking_budget is not None:
        return request.thinking_budget or None  # 0: thinking off, as Gemini reads a zero budget
    target = EFFORT_BUDGETS.get(request.reasoning_effort or "")
    if target is None:
        return None
    return max(MIN_THINKING_BUDGET, min(target, max_tokens_of(request) // 2))


def answer_tool(request: ChatRequest) -> str | None:
    """The tool whose forced call carries a structured answer (response_format), if any."""
    return request.response_format.name if request.response_format is not None else None


def tool_input(arguments: str) -> Any:
    """A call's arguments as the object Anthropic takes ("" is how some clients send no arguments)."""
    return json.loads(arguments) if arguments.strip() else {}


# ---- what Anthropic cannot do --------------------------------------------------------------


def unsupported_choices(request: ChatRequest) -> Unsupported | None:
    if request.n > 1:
        return Unsupported("n", "Anthropic gives one answer per request")
    if request.logprobs or request.top_logprobs:
        param = "logprobs" if request.logprobs else "top_logprobs"
        return Unsupported(param, "Anthropic does not report token log probabilities")
    for param in ("presence_penalty", "frequency_penalty"):
        if getattr(request, param):  # 0 is OpenAI's default, and no penalty at all
            return Unsupported(param, "Anthropic has no presence or frequency penalties")
    if request.temperature is not None and request.temperature > 1:
        return Unsupported("temperature", "Anthropic takes a temperature from 0 to 1")
    return None


def unsupported_thinking(request: ChatRequest) -> Unsupported | None:
    """Anthropic's rules for extended thinking: a budget of at least 1024 tokens below max_tokens, and
    no sampling changes or forced tool calls while thinking."""
    effort = request.reasoning_effort
    if request.thinking_budget is None and effort and effort not in KNOWN_EFFORTS:
        return Unsupported(
            "reasoning_effort", f"Anthropic takes the efforts minimal, low, medium and high, not {effort}"
        )
    budget = thinking_budget(request)
    if budget is None:
        return None
    if budget < MIN_THINKING_BUDGET:
        return Unsupported("reasoning_effort", f"Anthropic's thinking budget is at least {MIN_THINKING_BUDGET} tokens")
    if budget >= max_tokens_of(request):
        return Unsupported("max_tokens", f"with thinking, Anthropic needs max_tokens above the budget of {budget}")
    return unsupported_while_thinking(request)


def unsupported_while_thinking(request: ChatRequest) -> Unsupported | None:
    if request.temperature is not None and request.temperature != 1:
        return Unsupported("temperature", "Anthropic takes only temperature 1 while thinking")
    if request.top_k is not None:
        return Unsupported("top_k", "Anthropic takes no top_k while thinking")
    if request.top_p is not None and request.top_p < MIN_THINKING_TOP_P:
        return Unsupported("top_p", f"Anthropic takes top_p from {MIN_THINKING_TOP_P} to 1 while thinking")
    if request.tool_choice is not None and request.tool_choice.mode in FORCED_TOOL_CHOICES:
        return Unsupported("tool_choice", "Anthropic cannot force a tool call while thinking")
    if request.response_format is not None:
        return Unsupported("response_format", "Anthropic's structured output forces a tool call: not while thinking")
    return None


def unsupported_format(request: ChatRequest) -> Unsupported | None:
    response_format = request.response_format
    if response_format is None:
        return None
    if request.tools:
        return Unsupported("response_format", "on Anthropic, structured output is a forced tool call: not with tools")
    if (response_format.schema or EMPTY_SCHEMA).get("type") != "object":
        return Unsupported("response_format", "Anthropic takes an object schema only")
    return None


def unsupported_content(request: ChatRequest) -> Unsupported | None:
    for index, message in enumerate(request.messages):
        if any(image.data is not None and image.content_type not in IMAGE_TYPES for image in message.images):
            return Unsupported(f"messages.{index}.content", "Anthropic takes JPEG, PNG, GIF and WebP images")
        for call in message.tool_calls:
            try:
                arguments = tool_input(call.arguments)
            except ValueError:
                arguments = None
            if not isinstance(arguments, dict):
                return Unsupported(f"messages.{index}.tool_calls", "Anthropic takes tool arguments as a JSON object")
    return None


UNSUPPORTED_CHECKS: tuple[Callable[[ChatRequest], Unsupported | None], ...] = (
    unsupported_choices,
    unsupported_thinking,
    unsupported_format,
    unsupported_content,
)


# ---- the request body ----------------------------------------------------------------------


def image_block(image: ChatImage) -> dict[str, Any]:
    if image.data is None:
        return {"type": "image", "source": {"type": "url", "url": image.url}}
    data = base64.b64encode(image.data).decode()
    return {"type": "image", "source": {"type": "base64", "media_type": image.content_type, "data": data}}


def piece_block(piece: str | ChatImage) -> dict[str, Any]:
    return {"type": "text", "text": piece} if isinstance(piece, str) else image_block(piece)


def thinking_block(reasoning: Reasoning) -> dict[str, Any]:
    if reasoning.redacted:
        return {"type": "redacted_thinking", "data": reasoning.text}
    return {"type": "thinking", "thinking": reasoning.text, "signature": reasoning.signature}


def assistant_blocks(message: ChatMessage) -> list[dict[str, Any]]:
    """Thinking first, then text, then tool calls: the order Claude wrote them in. Thinking without a
    signature (another provider's) is left out: Anthropic refuses a thinking block it cannot verify."""
    thinking = [thinking_block(r) for r in message.reasoning if r.redacted or r.signature]
    text = [{"type": "text", "text": message.content}] if message.content else []
    calls = [
        {"type": "tool_use", "id": portable_call_id(call.id), "name": call.name, "input": tool_input(call.arguments)}
        for call in message.tool_calls
    ]
    return thinking + text + calls


def tool_result_block(message: ChatMessage) -> dict[str, Any]:
    content: str | list[dict[str, Any]] = message.content
    if message.images:
        content = [piece_block(piece) for piece in message.pieces() if piece]
    block = {
        "type": "tool_result",
        "tool_use_id": portable_call_id(message.tool_call_id or ""),
        **set_fields(content=content),
    }
    return block | ({"is_error": True} if message.is_error else {})


def message_blocks(message: ChatMessage) -> list[dict[str, Any]]:
    """The message as content blocks, its cache breakpoint on the last one."""
    if message.role == "tool":
        blocks = [tool_result_block(message)]
    elif message.role == "assistant":
        blocks = assistant_blocks(message)
    else:
        blocks = [piece_block(piece) for piece in message.pieces() if piece]
    if message.cache_control and blocks:
        blocks[-1] = blocks[-1] | {"cache_control": message.cache_control}
    return blocks


def takes_tool_results(message: dict[str, Any]) -> bool:
    content = message["content"]
    return message["role"] == "user" and bool(content) and content[0]["type"] == "tool_result"


def compact(message: dict[str, Any]) -> dict[str, Any]:
    """A lone plain text block as the string shorthand (and no blocks as "", a final empty assistant turn)."""
    content = message["content"]
    if not content:
        return message | {"content": ""}
    if len(content) == 1 and content[0].keys() == {"type", "text"}:
        return message | {"content": content[0]["text"]}
    return message


def wire_messages(dialogue: tuple[ChatMessage, ...]) -> list[dict[str, Any]]:
    """OpenAI sends each tool result as a message of its own; Anthropic wants all of them in the one
    user message after the call, before any text the user adds: consecutive tool messages, and a user
    message after them, become one user message."""
    messages: list[dict[str, Any]] = []
    for message in dialogue:
        blocks = message_blocks(message)
        if message.role in ("tool", "user") and messages and takes_tool_results(messages[-1]):
            messages[-1]["content"] += blocks
        else:
            messages.append({"role": "assistant" if message.role == "assistant" else "user", "content": blocks})
    return [compact(message) for message in messages]


def system_field(request: ChatRequest) -> str | list[dict[str, Any]] | None:
    """One string, or text blocks when a system message carries a cache breakpoint (on its block)."""
    system = [m for m in request.messages if m.role == "system"]
    if not any(m.cache_control for m in system):
        return request.system_text or None
    blocks = [{"type": "text", "text": m.content, **set_fields(cache_control=m.cache_control)} for m in system]
    return [block for block in blocks if block["text"]]


def tool_definition(tool: Tool) -> dict[str, Any]:
    # `strict` is dropped rather than refused: SDK helpers (openai's pydantic_function_tool, agent
    # frameworks) set it by default, and refusing it would shut those clients out of every Claude route.
    schema = {"type": "object", **(tool.parameters or EMPTY_SCHEMA)}
    optional = set_fields(description=tool.description, cache_control=tool.cache_control)
    return {"name": tool.name, "input_schema": schema, **optional}


def format_tool(response_format: ResponseFormat) -> dict[str, Any]:
    """Structured output as a tool the answer is forced through: this works on every Claude model."""
    schema = response_format.schema if response_format.type == "json_schema" else None
    return {
        "name": response_format.name,
        "description": FORMAT_TOOL_DESCRIPTION,
        "input_schema": schema or EMPTY_SCHEMA,
    }


def tools_field(request: ChatRequest) -> list[dict[str, Any]]:
    tools = [tool_definition(tool) for tool in request.tools]
    return tools + ([format_tool(request.response_format)] if request.response_format is not None else [])


def tool_choice_field(request: ChatRequest) -> dict[str, Any] | None:
    if request.response_format is not None:  # one call of the format's tool, nothing else
        return {"type": "tool", "name": request.response_format.name, "disable_parallel_tool_use": True}
    choice, single_call = request.tool_choice, request.parallel_tool_calls is False
    if not request.tools or (choice is None and not single_call):
        return None  # the provider's default: auto
    mode = choice.mode if choice is not None else "auto"
    wire = {"type": TOOL_CHOICE_TYPES[mode], **set_fields(name=choice.name if mode == "tool" and choice else None)}
    if single_call and mode != "none":  # the "none" choice takes no other field
        wire["disable_parallel_tool_use"] = True
    return wire


def thinking_field(request: ChatRequest) -> dict[str, Any] | None:
    budget = thinking_budget(request)
    return None if budget is None else {"type": "enabled", "budget_tokens": budget}


# ---- the answer ----------------------------------------------------------------------------


def reasoning_of(block: dict[str, Any]) -> Reasoning | None:
    if block["type"] == "thinking":
        return Reasoning(block["thinking"], signature=block.get("signature"))
    if block["type"] == "redacted_thinking":
        return Reasoning(block["data"], redacted=True)
    return None


def message_result(message: dict[str, Any], model: str, answered_by: str | None = None) -> ChatResult:
    """The answer; with response_format, the forced call's input is the answer's text (JSON)."""
    blocks = message["content"]
    calls = [ToolCall(b["id"], b["name"], json.dumps(b["input"])) for b in blocks if b["type"] == "tool_use"]
    answers = [call.arguments for call in calls if call.name == answered_by]
    text = "".join(block["text"] for block in blocks if block["type"] == "text")
    return ChatResult(
        content=answers[0] if answers else text,
        finish_reason=stop_reason(message.get("stop_reason"), answered_by_tool=bool(answers)),
        usage=anthropic_usage(counts_of(message["usage"])),
        upstream_model=message.get("model") or model,
        upstream_id=message.get("id"),
        tool_calls=tuple(call for call in calls if call.name != answered_by),
        reasoning=tuple(r for r in map(reasoning_of, blocks) if r is not None),
    )
