"""The fake Gemini API's chat answers: generateContent, streamGenerateContent and countTokens.

An answer is the scripted reply (or the default one) as candidates, one word per stream chunk and
one chunk per function call, usage cumulative; a stream is server-sent events with alt=sse, else one
JSON array, and either stream fault drops the socket. A scripted call the request does not let the
model make is refused; a gemini-3* model signs its first call with a thoughtSignature and refuses a
request whose current turn brings a call back without it.
"""

from __future__ import annotations

import base64
import json
import secrets
from typing import Any

from aiohttp import web

from ..server import STREAM_ONLY, Answer, Fault, Received
from .chat_checks import ChatAsk, check_count_tokens, check_request
from .common import SAFETY_RATINGS, GeminiServer, Invalid, proto_bytes, usage
from .contents import Turn, current_turn_start

# A candidate that ends for one of these reasons carries no content at all.
NO_CONTENT = {"SAFETY", "RECITATION", "BLOCKLIST", "PROHIBITED_CONTENT", "SPII", "IMAGE_SAFETY"}
# The API's words; the position's numbering is unverified.
MISSING_SIGNATURE = (
    "Function call is missing a thought_signature in functionCall parts. This is required for tools to work "
    "correctly, and missing thought_signature may lead to degraded model performance. Additional data, "
    "function call `default_api:{name}` , position {position}. Please refer to "
    "https://ai.google.dev/gemini-api/docs/thought-signatures for more details."
)


def same_candidates(parts: list[dict[str, Any]], count: int, finish: str | None) -> list[dict[str, Any]]:
    """`count` candidates with the same parts (the fake's candidates agree), the finish reason on each."""
    finish_field = {"finishReason": finish} if finish else {}
    return [{"content": {"parts": parts, "role": "model"}, "index": i, **finish_field} for i in range(count)]


class ChatEndpoints(GeminiServer):
    """The chat side of generateContent and streamGenerateContent, and countTokens."""

    _signatures: set[bytes]  # set up by FakeGemini.__init__

    def _count_tokens(self, model: str, received: Received) -> web.Response:
        """What generateContent would count as the prompt (a scripted input_tokens included)."""
        try:
            ask = check_request(check_count_tokens(received.json), model)
        except Invalid as exc:
            return self.invalid(exc)
        total = self.answer(ask.prompt_tokens, None).input_tokens
        return web.json_response(
            {"totalTokens": total, "promptTokensDetails": [{"modality": "TEXT", "tokenCount": total}]}
        )

    def _check_signatures(self, turns: list[Turn], model: str) -> None:
        """Gemini 3: the first functionCall part of each model step in the current turn must carry the
        thoughtSignature this fake gave it (a made-up or altered one is refused too)."""
        if not model.startswith("gemini-3"):
            return
        for index in range(current_turn_start(turns), len(turns)):
            role, parts = turns[index]
            calls = [part for part in parts if "functionCall" in part]
            if role != "model" or not calls:
                continue
            signature = calls[0].get("thoughtSignature")
            if signature is None:
                name = calls[0]["functionCall"]["name"]
                raise Invalid(MISSING_SIGNATURE.format(name=name, position=index + 1))
            with self._lock:
                known = proto_bytes(signature) in self._signatures
            if not known:
                raise Invalid("Corrupted thought signature.")

    def _call_parts(self, answer: Answer, ask: ChatAsk, model: str) -> list[dict[str, Any]]:
        """The scripted calls as functionCall parts; a Gemini 3 model signs the first. A call the request
        does not let the model make is a mistake in the test's script, answered as a 400 that says so."""
        for call in answer.tool_calls:
            if not ask.may_call(call.name):
                raise Invalid(
                    f"the fake was scripted to call {call.name!r}, which this request does not let the model call"
                )
        parts: list[dict[str, Any]] = [
            {"functionCall": {"name": c.name, "args": c.arguments}} for c in answer.tool_calls
        ]
        if parts and model.startswith("gemini-3"):
            parts[0]["thoughtSignature"] = self._new_signature()
        return parts

    def _new_signature(self) -> str:
        signature = secrets.token_bytes(48)  # real ones are longer; any bytes do
        with self._lock:
            self._signatures.add(signature)
        return base64.b64encode(signature).decode()

    @staticmethod
    def _chunks(answer: Answer, calls: list[dict[str, Any]], candidates: int) -> list[dict[str, Any]]:
        """The stream's chunks: one word each, then one per function call (Gemini sends each call whole),
        usage cumulative, finishReason on the last. Every chunk holds each of the candidates asked for."""
        if answer.finish_reason in NO_CONTENT:
            candidate = {"finishReason": answer.finish_reason, "index": 0, "safetyRatings": SAFETY_RATINGS}
            return [{"candidates": [candidate], "usageMetadata": usage(answer.input_tokens, 0, answer.counts)}]
        steps = [[{"text": piece}] for piece in answer.pieces] + [[call] for call in calls]
        steps = steps or [[{"text": ""}]]
        chunks = []
        for n, parts in enumerate(steps, start=1):
            last = n == len(steps)
            # candidatesTokenCount counts the output of every candidate.
            output = (answer.output_tokens if last else min(n, answer.output_tokens)) * candidates
            metadata = usage(answer.input_tokens, output, answer.counts)
            finish = answer.finish_reason if last else None
            chunks.append({"candidates": same_candidates(parts, candidates, finish), "usageMetadata": metadata})
        return chunks

    @staticmethod
    def _merge(chunks: list[dict[str, Any]], answer: Answer, calls: list[dict[str, Any]]) -> dict[str, Any]:
        """The non-stream response: the last chunk, holding the whole text and every call."""
        merged = json.loads(json.dumps(chunks[-1]))
        parts = ([{"text": answer.text}] if answer.text or not calls else []) + calls
        for candidate in merged.get("candidates", []):
            if "content" in candidate:
                candidate["content"]["parts"] = parts
        return merged

    async def _stream(
        self, request: web.Request, received: Received, chunks: list[dict[str, Any]], fault: Fault | None
    ) -> web.StreamResponse:
        sse = received.query.get("alt") == "sse"
        if sse:
            response = await self.open_stream(request)
        else:  # without alt=sse the real API streams one JSON array, not events
            response = web.StreamResponse()
            response.content_type = "application/json"
            await response.prepare(request)
        if fault is not None and fault.kind == "malformed":
            await self.send(response, 'data: {"candidates": [{"content": \r\n\r\n')
            return response
        # Gemini has no mid-stream error event: both stream faults just drop the socket.
        limit = fault.after_chunks if fault is not None and fault.kind in STREAM_ONLY else None
        for n, chunk in enumerate(chunks[:limit]):
            if sse:
                await self.send(response, f"data: {json.dumps(chunk)}\r\n\r\n")
            else:
                await self.send(response, ("[" if n == 0 else ",\r\n") + json.dumps(chunk))
        if limit is not None:
            self.cut(request)
        elif not sse:
            await self.send(response, "]")
        return response
