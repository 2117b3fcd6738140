"""The fake OpenAI API's chat completions: answers, plain and streamed.

An answer is the scripted reply (or the default one), with n choices, log probabilities and tool
calls when asked, and usage as the API counts it; a stream sends one word per chunk, then each tool
call in fragments, and obeys the stream faults (cut, stall, malformed, an error event). A scripted
tool call the request does not offer is refused, since a real model could not make it.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from ..server import STREAM_ONLY, Answer, FakeToolCall, Fault, Received, count_words, new_id
from .chat_checks import CHAT_PARAMS, check_chat
from .common import ERRORS, Invalid, OpenAIServer, error, text_of


def offered_functions(body: dict[str, Any]) -> set[str]:
    """The functions the model may call: none under tool_choice "none", only the named one when one is named."""
    choice = body.get("tool_choice")
    if choice == "none":
        return set()
    if isinstance(choice, dict):
        return {choice["function"]["name"]}
    return {tool["function"]["name"] for tool in body.get("tools") or ()}


def unoffered_call(body: dict[str, Any], answer: Answer) -> Invalid | None:
    """A scripted call the request gives the model no way to make: the gateway lost the tools (or the
    choice) on the way, and a real model could not have answered so."""
    offered = offered_functions(body)
    names = [call.name for call in answer.tool_calls if call.name not in offered]
    if not names:
        return None
    return Invalid(
        f"FakeOpenAI: the scripted answer calls {', '.join(names)}, but the request offers only "
        f"{sorted(offered) or 'no functions'} (tools and tool_choice).",
        "tools",
    )


@dataclass(frozen=True)
class Choices:
    """What a request asks of its answer: how many choices, and log probabilities (top: how many
    alternatives per token; None: no log probabilities)."""

    n: int
    top: int | None

    @classmethod
    def asked(cls, body: dict[str, Any]) -> Choices:
        top = (body.get("top_logprobs") or 0) if body.get("logprobs") else None
        return cls(body.get("n") or 1, top)


def token_logprob(token: str, top: int) -> dict[str, Any]:
    """The fake's log probabilities: the answer's own token is the likeliest, made-up ones follow."""
    alternatives = [(token, -0.01)] + [(f" alt{rank}", -1.5 * rank) for rank in range(1, top)]
    return {
        "token": token,
        "logprob": -0.01,
        "bytes": list(token.encode()),
        "top_logprobs": [{"token": t, "logprob": p, "bytes": list(t.encode())} for t, p in alternatives[:top]],
    }


def logprobs_of(pieces: list[str], top: int | None) -> dict[str, Any] | None:
    if top is None:
        return None
    return {"content": [token_logprob(piece, top) for piece in pieces], "refusal": None}


def wire_tool_calls(calls: tuple[FakeToolCall, ...]) -> list[dict[str, Any]]:
    return [
        {
            "id": new_id("call_"),
            "type": "function",
            "function": {"name": call.name, "arguments": json.dumps(call.arguments)},
        }
        for call in calls
    ]


def streamed_tool_calls(calls: tuple[FakeToolCall, ...]) -> list[dict[str, Any]]:
    """The deltas of each call as the real API streams them: first its index, id, type and name with
    empty arguments, then the arguments' JSON text in fragments that carry only the index."""
    deltas = []
    for index, call in enumerate(calls):
        head = {
            "index": index,
            "id": new_id("call_"),
            "type": "function",
            "function": {"name": call.name, "arguments": ""},
        }
        deltas.append({"tool_calls": [head]})
        for fragment in re.findall(r"\w+|\W+", json.dumps(call.arguments)):
            deltas.append({"tool_calls": [{"index": index, "function": {"arguments": fragment}}]})
    return deltas


def completion_choice(index: int, answer: Answer, top: int | None) -> dict[str, Any]:
    # content is null in an answer that only calls tools.
    content = (answer.text or None) if answer.tool_calls else answer.text
    message: dict[str, Any] = {"role": "assistant", "content": content, "refusal": None, "annotations": []}
    if answer.tool_calls:
        message["tool_calls"] = wire_tool_calls(answer.tool_calls)
    return {
        "index": index,
        "message": message,
        "logprobs": logprobs_of(answer.pieces, top),
        "finish_reason": answer.finish_reason,
    }


def usage(answer: Answer, n: int = 1) -> dict[str, Any]:
    # prompt_tokens includes the cached ones, completion_tokens the reasoning ones; n choices
    # read the prompt once and each write their own answer.
    counts = answer.counts
    completion = (answer.output_tokens + counts.reasoning) * n
    return {
        "prompt_tokens": answer.input_tokens,
        "completion_tokens": completion,
        "total_tokens": answer.input_tokens + completion,
        "prompt_tokens_details": {"cached_tokens": counts.cached, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": counts.reasoning * n,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


def sse(payload: Any) -> str:
    return f"data: {json.dumps(payload)}\n\n"


class ChatEndpoints(OpenAIServer):
    """POST /v1/chat/completions."""

    extra_params: frozenset[str] = frozenset()  # chat parameters beyond OpenAI's (compatible servers)

    async def _chat(self, request: web.Request, received: Received, fault: Fault | None) -> web.StreamResponse:
        try:
            body = check_chat(received.json, CHAT_PARAMS | self.extra_params)
        except Invalid as exc:
            return self.invalid(exc)
        words = sum(count_words(text_of(m.get("content"))) for m in body["messages"])
        answer = self.answer(words, body.get("max_completion_tokens") or body.get("max_tokens"))
        refusal = unoffered_call(body, answer)
        if refusal is not None:
            return self.invalid(refusal)
        envelope = {
            "id": new_id("chatcmpl-"),
            "created": int(time.time()),
            "model": body["model"],
            "system_fingerprint": "fp_fake",
        }
        asked = Choices.asked(body)
        if not body.get("stream"):
            completion = {
                **envelope,
                "object": "chat.completion",
                "choices": [completion_choice(index, answer, asked.top) for index in range(asked.n)],
                "usage": usage(answer, asked.n),
                "service_tier": "default",
            }
            return web.json_response(completion, headers=self.headers())
        include_usage = (body.get("stream_options") or {}).get("include_usage") is True
        return await self._stream(request, envelope, answer, fault, include_usage, asked)

    async def _stream(
        self,
        request: web.Request,
        envelope: dict[str, Any],
        answer: Answer,
        fault: Fault | None,
        include_usage: bool,
        asked: Choices,
    ) -> web.StreamResponse:
        def chunk(delta: dict[str, Any], index: int, finish: str | None = None, logprobs: Any = None) -> str:
            choice = {"index": index, "delta": delta, "logprobs": logprobs, "finish_reason": finish}
            payload = {**envelope, "object": "chat.completion.chunk", "choices": [choice]}
            if include_usage:
                payload["usage"] = None  # present but null on every chunk but the last
            return sse(payload)

        async def send_pieces(pieces: list[str]) -> None:
            for piece in pieces:
                for index in range(asked.n):  # n > 1 streams its choices interleaved
                    logprobs = logprobs_of([piece], asked.top)
                    await self.send(response, chunk({"content": piece}, index, logprobs=logprobs))

        response = await self.open_stream(request, self.headers())
        opening = {
            "role": "assistant",
            "content": None if answer.tool_calls and not answer.text else "",
            "refusal": None,
        }
        for index in range(asked.n):
            await self.send(response, chunk(opening, index))
        if fault is not None and fault.kind == "malformed":
            await self.send(response, 'data: {"id": "chatcmpl-broken", "choices": [{"delta\n\n')
            await self.send(response, "data: [DONE]\n\n")
            return response
        limit = fault.after_chunks if fault is not None and fault.kind in STREAM_ONLY else None
        await send_pieces(answer.pieces[:limit])
        if fault is not None and fault.kind == "stall":
            await asyncio.sleep(fault.seconds)
            await send_pieces(answer.pieces[limit:])
        if fault is not None and fault.kind == "cut":
            self.cut(request)
            return response
        if fault is not None and fault.kind == "stream_error":
            await self.send(response, sse(error(ERRORS[500][2], "server_error")))
            return response
        for index in range(asked.n):
            for delta in streamed_tool_calls(answer.tool_calls):
                await self.send(response, chunk(delta, index))
            await self.send(response, chunk({}, index, answer.finish_reason))
        if include_usage:
            final = {**envelope, "object": "chat.completion.chunk", "choices": [], "usage": usage(answer, asked.n)}
            await self.send(response, sse(final))
        await self.send(response, "data: [DONE]\n\n")
        return response
