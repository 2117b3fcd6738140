"""The Messages API endpoints: POST /v1/messages and POST /v1/messages/count_tokens.

MessagesConsumer is a chat consumer speaking the Anthropic dialect; CountTokensConsumer admits and
moderates the prompt, then asks the route's provider to count it (TokenCounting), with no budget
hold and no ledger row.
"""

from __future__ import annotations

from dataclasses import dataclass

from core.observability import REQUEST_ID_HEADER
from gateway.consumers import ChatConsumer, JsonApiConsumer
from gateway.errors import ApiError, InvalidRequest
from gateway.messages.dialect import AnthropicDialect
from gateway.moderation.pipeline import moderate_prompt
from gateway.pipeline import admit, plan_candidates, try_candidates
from gateway.pipeline.operations import ChatOperation
from providers.clients import client_for
from providers.clients.base import ProviderClient, Usage
from providers.routing import Candidate, arouting_table


class MessagesConsumer(ChatConsumer):
    """POST /v1/messages: the Anthropic Messages API, for the official Anthropic SDKs and Claude Code."""

    dialect = AnthropicDialect
    path = "/v1/messages"

    def _begin(self) -> None:
        super()._begin()
        # The Anthropic SDKs read the request id from request-id (error.request_id, message._request_id).
        self.common_headers["request-id"] = self.common_headers[REQUEST_ID_HEADER]


@dataclass(frozen=True)
class TokenCounting(ChatOperation[int]):
    """Counting a prompt's input tokens at the provider. Nothing is generated, so nothing is billed,
    held against the budget or written to the ledger."""

    async def call(self, candidate: Candidate) -> int:
        client = client_for(candidate.provider)
        return await client.count_tokens(self.request_for(candidate), model=candidate.upstream_model)

    def unsupported(self, candidate: Candidate) -> None:
        # The generation limits (max_tokens above the thinking budget, sampling) bind no count.
        return None

    def usage_of(self, result: int) -> Usage:
        return Usage()


def counts_tokens(candidate: Candidate) -> bool:
    """Whether the candidate's client implements count_tokens (the base class only refuses)."""
    return type(client_for(candidate.provider)).count_tokens is not ProviderClient.count_tokens


class CountTokensConsumer(JsonApiConsumer):
    """POST /v1/messages/count_tokens: {"input_tokens": N} from the model's provider (Anthropic and
    Gemini count; others answer 400).

    Admitted (key, rate limit) and moderated like any request, since the prompt reaches a provider
    (and the count is then of the prompt a generation would send, redactions included). It holds no
    budget and makes no ledger row: nothing is generated, and providers do not charge for counting."""

    path = "/v1/messages/count_tokens"

    async def _handle(self, body: bytes) -> int:
        self._require_post()
        admission = await admit(self.headers)
        self.common_headers.update(admission.headers)
        counting = TokenCounting(AnthropicDialect.parse_count(self._json(body)))
        table = await arouting_table()
        planned = plan_candidates(counting, table)
        candidates = [candidate for candidate in planned if counts_tokens(candidate)]
        if not candidates:
            raise InvalidRequest(
                f"Counting tokens is not supported for this model's provider ({planned[0].provider.kind}).",
                code="unsupported_capability",
                param="model",
            )
        route, principal = table.match(counting.model), admission.principal
        counting = await moderate_prompt(counting, route=route, principal=principal, request_id=self.request_id)
        settled = await try_candidates(candidates, counting)
        answered_by = settled.candidate
        headers = {"X-Pulse-Provider": answered_by.provider.name, "X-Pulse-Model": answered_by.upstream_model}
        await self._send_json(200, {"input_tokens": settled.result}, headers)
        return 200

    async def _send_error(self, error: ApiError) -> None:
        await self._send_json(error.status, AnthropicDialect.error_body(error), error.headers)


MESSAGES_CONSUMERS: tuple[type[JsonApiConsumer], ...] = (MessagesConsumer, CountTokensConsumer)
