"""A Messages API stream: the normalised deltas as Anthropic's named server-sent events.

AnthropicStream keeps one content block open at a time and numbers the blocks as they open, so
thinking, text and each tool call arrive as the Anthropic SDKs and Claude Code expect them.
"""

from __future__ import annotations

import uuid
from decimal import Decimal
from typing import Any

from gateway.chat_formats import Answered, StreamRenderer, sse
from gateway.errors import ApiError
from gateway.messages.answer import error_envelope, message_head, stop_reason, usage_json
from providers.clients.base import ChatDelta, ToolCallDelta, Usage

EMPTY_BLOCKS: dict[str, dict[str, Any]] = {
    "thinking": {"type": "thinking", "thinking": "", "signature": ""},
    "text": {"type": "text", "text": ""},
}


def event(name: str, payload: dict[str, Any]) -> bytes:
    return sse({"type": name, **payload}, name)


class AnthropicStream(StreamRenderer):
    """Anthropic's named events: message_start, then each content block as content_block_start, its
    deltas and content_block_stop (indexes counting up, one block open at a time: thinking closes
    before text opens, text before a tool_use), then message_delta and message_stop.

    The normalised stream reports usage only at its end, so message_start says 0 input tokens and
    message_delta carries the whole usage (input and cache counts too: the SDK takes them from there)."""

    def __init__(self, answered: Answered, include_usage: bool):
        super().__init__(answered, include_usage)
        self.next_index = 0
        self.open_index: int | None = None
        self.open_kind: str | None = None  # "thinking" | "text" | "tool_use"
        self.call_blocks: dict[int, int] = {}  # a tool call's index -> its block's index

    def start(self) -> bytes:
        message = message_head(self.answered) | {
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": usage_json(Usage()),
        }
        return event("message_start", {"message": message})

    def delta(self, delta: ChatDelta) -> bytes:
        frames = b""
        if delta.redacted_reasoning:  # a whole block: opened and closed at once
            frames += self._open("redacted_thinking", {"type": "redacted_thinking", "data": delta.redacted_reasoning})
            frames += self._close()
        if delta.reasoning:
            frames += self._into("thinking") + self._piece({"type": "thinking_delta", "thinking": delta.reasoning})
        if delta.reasoning_signature:
            # The signature seals its thinking block: more thinking after it is a new block.
            frames += self._into("thinking")
            frames += self._piece({"type": "signature_delta", "signature": delta.reasoning_signature}) + self._close()
        if delta.content:
            frames += self._into("text") + self._piece({"type": "text_delta", "text": delta.content})
        for piece in delta.tool_calls:
            frames += self._tool_piece(piece)
        return frames

    def end(self, finish_reason: str, usage: Usage, cost_usd: Decimal) -> bytes:
        reason = stop_reason(finish_reason, bool(self.call_blocks))
        message_delta = {"delta": {"stop_reason": reason, "stop_sequence": None}, "usage": usage_json(usage)}
        return self._close() + event("message_delta", message_delta) + event("message_stop", {})

    def error(self, error: ApiError) -> bytes:
        return event("error", {"error": error_envelope(error)["error"]})

    # --- blocks ---------------------------------------------------------------------------
    def _open(self, kind: str, block: dict[str, Any]) -> bytes:
        frames = self._close()
        self.open_index, self.open_kind = self.next_index, kind
        self.next_index += 1
        return frames + event("content_block_start", {"index": self.open_index, "content_block": block})

    def _close(self) -> bytes:
        if self.open_index is None:
            return b""
        index, self.open_index, self.open_kind = self.open_index, None, None
        return event("content_block_stop", {"index": index})

    def _into(self, kind: str) -> bytes:
        """Open a block of this kind unless one is open already."""
        if self.open_kind == kind:
            return b""
        return self._open(kind, EMPTY_BLOCKS[kind])

    def _piece(self, delta: dict[str, Any], index: int | None = None) -> bytes:
        return event("content_block_delta", {"index": self.open_index if index is None else index, "delta": delta})

    def _tool_piece(self, piece: ToolCallDelta) -> bytes:
        frames = b""
        if piece.index not in self.call_blocks:  # a call's first piece: its id and name
            call_id = piece.id or f"toolu_{uuid.uuid4().hex[:24]}"
            block = {"type": "tool_use", "id": call_id, "name": piece.name or "", "input": {}}
            frames += self._open("tool_use", block)
            self.call_blocks[piece.index] = self.next_index - 1
        if piece.arguments:
            # Providers stream one call after another; a piece of an earlier call still names its own block.
            partial = {"type": "input_json_delta", "partial_json": piece.arguments}
            frames += self._piece(partial, self.call_blocks[piece.index])
        return frames
