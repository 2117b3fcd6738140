"""OpenAPI documentation of the endpoints that Channels consumers serve.

drf-spectacular documents DRF views; the chat endpoints are consumers routed
ahead of Django (pulse/asgi.py), so the schema is generated from a urlconf that
adds these documentation-only views at the same paths. They are never routed
for serving; the serializers they name are the ones the consumers validate with.
"""

from django.urls import include, path
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from drf_spectacular.plumbing import build_bearer_security_scheme_object
from drf_spectacular.utils import OpenApiResponse, extend_schema, extend_schema_field, inline_serializer
from rest_framework import serializers
from rest_framework.views import APIView

from gateway.chat_formats import ChatCompleteRequest, ChatCompleteResponse, ChatCompletionsRequest
from gateway.chat_parts import Messages, ResponseFormatField, ToolChoiceField, Tools
from gateway.consumers import ChatCompletionsConsumer, ChatConsumer
from gateway.jobs.consumers import ImageGenerateConsumer, VideoGenerateConsumer
from gateway.jobs.requests import ImageGenerateRequest, VideoGenerateRequest
from gateway.jobs.serializers import JobSerializer
from gateway.messages import (
    AnthropicMessages,
    AnthropicSystem,
    AnthropicToolChoice,
    AnthropicTools,
    CacheControlField,
    CountTokensConsumer,
    CountTokensRequest,
    MessagesConsumer,
    MessagesRequest,
    MetadataField,
    OutputConfigField,
    ThinkingField,
)


class ApiKeyScheme(OpenApiAuthenticationExtension):
    target_class = "gateway.auth.ApiKeyAuthentication"
    name = "ApiKey"

    def get_security_definition(self, auto_schema):
        return build_bearer_security_scheme_object(header_name="Authorization", token_prefix="Bearer")


TEXT_PART = {"type": "object", "properties": {"type": {"enum": ["text"]}, "text": {"type": "string"}}}
IMAGE_PART = {
    "type": "object",
    "properties": {
        "type": {"enum": ["image_url"]},
        "image_url": {
            "type": "object",
            "properties": {
                "url": {"type": "string", "description": "https URL or data:image/...;base64,"},
                "detail": {"enum": ["auto", "low", "high"]},
            },
        },
    },
}
TOOL_CALL = {
    "type": "object",
    "properties": {
        "id": {"type": "string"},
        "type": {"enum": ["function"]},
        "function": {
            "type": "object",
            "properties": {"name": {"type": "string"}, "arguments": {"type": "string", "description": "JSON text"}},
        },
    },
}
extend_schema_field(
    {
        "type": "array",
        "items": {
            "type": "object",
            "properties": {
                "role": {"enum": ["system", "developer", "user", "assistant", "tool"]},
                "content": {
                    "oneOf": [
                        {"type": "string"},
                        {"type": "array", "items": {"oneOf": [TEXT_PART, IMAGE_PART]}},
                    ],
                    "nullable": True,
                },
                "tool_calls": {"type": "array", "items": TOOL_CALL, "description": "assistant messages"},
                "tool_call_id": {"type": "string", "description": "tool messages: the call answered"},
            },
            "required": ["role"],
        },
    }
)(Messages)
extend_schema_field(
    {
        "type": "array",
        "items": {
            "type": "object",
            "properties": {
                "type": {"enum": ["function"]},
                "function": {
                    "type": "object",
                    "properties": {
                        "name": {"type": "string"},
                        "description": {"type": "string"},
                        "parameters": {"type": "object", "description": "JSON Schema"},
                        "strict": {"type": "boolean"},
                    },
                },
            },
        },
    }
)(Tools)
extend_schema_field(
    {
        "oneOf": [
            {"enum": ["auto", "none", "required"]},
            {"type": "object", "properties": {"type": {"enum": ["function"]}, "function": {"type": "object"}}},
        ]
    }
)(ToolChoiceField)
extend_schema_field(
    {
        "type": "object",
        "properties": {
            "type": {"enum": ["text", "json_object", "json_schema"]},
            "json_schema": {
                "type": "object",
                "properties": {"name": {"type": "string"}, "schema": {"type": "object"}, "strict": {"type": "boolean"}},
            },
        },
    }
)(ResponseFormatField)

ERROR = inline_serializer(
    "Error",
    {
        "error": inline_serializer(
            "ErrorBody",
            {
                "type": serializers.CharField(),
                "code": serializers.CharField(),
                "message": serializers.CharField(),
                "param": serializers.CharField(allow_null=True),
            },
        )
    },
)
ERRORS = {
    400: OpenApiResponse(ERROR, "Bad input (param names the field), or content_policy_violation"),
    401: OpenApiResponse(ERROR, "No or bad API key"),
    404: OpenApiResponse(ERROR, "model_not_found"),
    413: OpenApiResponse(ERROR, "Body too large"),
    429: OpenApiResponse(ERROR, "rate_limit_exceeded or quota_exceeded"),
    502: OpenApiResponse(ERROR, "Every candidate provider failed (error.attempts lists them)"),
    503: OpenApiResponse(ERROR, "Every candidate provider was overloaded or cooling down"),
    504: OpenApiResponse(ERROR, "Every candidate provider timed out"),
}


class ChatCompleteDoc(APIView):
    @extend_schema(
        operation_id="chat_complete",
        tags=["chat"],
        request=ChatCompleteRequest,
        summary="Chat completion in Pulse's format; with stream=true, Server-Sent Events",
        description='Stream events: `event: delta` with `{"delta"}`, then `event: done` with id, model, '
        "provider, finish_reason, usage and cost_usd, or `event: error` with the error envelope.",
        responses={200: ChatCompleteResponse, **ERRORS},
    )
    def post(self, request):  # pragma: no cover - documentation only, served by ChatConsumer
        raise NotImplementedError


class ChatCompletionsDoc(APIView):
    @extend_schema(
        operation_id="chat_completions",
        tags=["chat"],
        request=ChatCompletionsRequest,
        summary="OpenAI-compatible chat completions (use the official OpenAI SDKs with base_url=<pulse>/v1)",
        description="Answers in the OpenAI `chat.completion` format; with stream=true, `chat.completion.chunk` "
        "SSE ending in `data: [DONE]`, with a usage chunk when stream_options.include_usage is set.",
        responses={200: OpenApiResponse(description="An OpenAI chat.completion object"), **ERRORS},
    )
    def post(self, request):  # pragma: no cover - documentation only, served by ChatCompletionsConsumer
        raise NotImplementedError


# ---------------------------------------------------------------- the Anthropic Messages API
CACHE_CONTROL = {
    "type": "object",
    "properties": {"type": {"enum": ["ephemeral"]}, "ttl": {"enum": ["5m", "1h"]}},
    "description": "A prompt-cache breakpoint after this block (Claude; other providers cache by themselves)",
}
ANTHROPIC_TEXT = {
    "type": "object",
    "properties": {"type": {"enum": ["text"]}, "text": {"type": "string"}, "cache_control": CACHE_CONTROL},
}
ANTHROPIC_IMAGE = {
    "type": "object",
    "properties": {
        "type": {"enum": ["image"]},
        "source": {
            "type": "object",
            "description": '{"type": "base64", "media_type", "data"} or {"type": "url", "url"}',
            "properties": {
                "type": {"enum": ["base64", "url"]},
                "media_type": {"enum": ["image/jpeg", "image/png", "image/gif", "image/webp"]},
                "data": {"type": "string"},
                "url": {"type": "string"},
            },
        },
        "cache_control": CACHE_CONTROL,
    },
}
ANTHROPIC_BLOCK = {
    "type": "object",
    "description": "text and image (user); tool_result (user: tool_use_id, content, is_error); tool_use "
    "(assistant: id, name, input); thinking (thinking, signature) and redacted_thinking (data), as Claude "
    "gave them; each may carry cache_control",
    "properties": {
        "type": {"enum": ["text", "image", "tool_use", "tool_result", "thinking", "redacted_thinking"]},
        "cache_control": CACHE_CONTROL,
    },
}
extend_schema_field(
    {
        "type": "array",
        "items": {
            "type": "object",
            "properties": {
                "role": {"enum": ["user", "assistant"]},
                "content": {"oneOf": [{"type": "string"}, {"type": "array", "items": ANTHROPIC_BLOCK}]},
            },
            "required": ["role", "content"],
        },
    }
)(AnthropicMessages)
extend_schema_field({"oneOf": [{"type": "string"}, {"type": "array", "items": ANTHROPIC_TEXT}]})(AnthropicSystem)
extend_schema_field(
    {
        "type": "array",
        "description": "Client tools only: server tools (web_search, bash, ...) are refused",
        "items": {
            "type": "object",
            "properties": {
                "name": {"type": "string"},
                "description": {"type": "string"},
                "input_schema": {"type": "object", "description": "JSON Schema of an object"},
                "cache_control": CACHE_CONTROL,
            },
            "required": ["name", "input_schema"],
        },
    }
)(AnthropicTools)
extend_schema_field(
    {
        "type": "object",
        "properties": {
            "type": {"enum": ["auto", "any", "tool", "none"]},
            "name": {"type": "string"},
            "disable_parallel_tool_use": {"type": "boolean"},
        },
    }
)(AnthropicToolChoice)
extend_schema_field(
    {
        "type": "object",
        "properties": {
            "type": {"enum": ["enabled", "adaptive", "disabled"]},
            "budget_tokens": {"type": "integer", "minimum": 1024, "description": "enabled: the thinking budget"},
        },
        "description": "adaptive takes its depth from output_config.effort",
    }
)(ThinkingField)
extend_schema_field(
    {
        "type": "object",
        "properties": {"effort": {"enum": ["low", "medium", "high", "xhigh", "max"]}},
        "description": "effort sets how much adaptive thinking to do (xhigh and max as high); format is refused",
    }
)(OutputConfigField)
extend_schema_field({**CACHE_CONTROL, "description": "A breakpoint on the request's last block"})(CacheControlField)
extend_schema_field({"type": "object", "properties": {"user_id": {"type": "string", "nullable": True}}})(MetadataField)

ANTHROPIC_ERROR = inline_serializer(
    "AnthropicError",
    {
        "type": serializers.ChoiceField(choices=["error"]),
        "error": inline_serializer(
            "AnthropicErrorBody",
            {
                "type": serializers.CharField(help_text="invalid_request_error, authentication_error, ..."),
                "message": serializers.CharField(),
                "code": serializers.CharField(help_text="Pulse's error code"),
                "param": serializers.CharField(allow_null=True),
            },
        ),
    },
)
ANTHROPIC_ERRORS = {
    400: OpenApiResponse(ANTHROPIC_ERROR, "invalid_request_error (param names the field)"),
    401: OpenApiResponse(ANTHROPIC_ERROR, "authentication_error: no or bad API key"),
    403: OpenApiResponse(ANTHROPIC_ERROR, "permission_error"),
    404: OpenApiResponse(ANTHROPIC_ERROR, "not_found_error: unknown model"),
    413: OpenApiResponse(ANTHROPIC_ERROR, "request_too_large"),
    429: OpenApiResponse(ANTHROPIC_ERROR, "rate_limit_error (rate limit or quota)"),
    502: OpenApiResponse(ANTHROPIC_ERROR, "api_error: every candidate provider failed"),
    503: OpenApiResponse(ANTHROPIC_ERROR, "overloaded_error: every candidate was overloaded or cooling down"),
    504: OpenApiResponse(ANTHROPIC_ERROR, "timeout_error: every candidate timed out"),
}


class MessagesDoc(APIView):
    @extend_schema(
        operation_id="messages_create",
        tags=["chat"],
        request=MessagesRequest,
        summary="Anthropic Messages API (use the official Anthropic SDKs or Claude Code with base_url=<pulse>)",
        description="Any chat model, Claude natively and others translated. Authenticate with `x-api-key` or "
        "`Authorization: Bearer`. Answers an Anthropic `message` (usage.input_tokens excludes cache reads and "
        "writes, as Anthropic counts it); with stream=true, Anthropic's named SSE events (message_start, "
        "content_block_start/delta/stop, message_delta with the whole usage, message_stop; `event: error` "
        "mid-stream). Errors use Anthropic's envelope.",
        responses={200: OpenApiResponse(description="An Anthropic message object"), **ANTHROPIC_ERRORS},
    )
    def post(self, request):  # pragma: no cover - documentation only, served by MessagesConsumer
        raise NotImplementedError


class CountTokensDoc(APIView):
    @extend_schema(
        operation_id="messages_count_tokens",
        tags=["chat"],
        request=CountTokensRequest,
        summary="Count a Messages API prompt's input tokens at the model's provider (Anthropic and Gemini)",
        description='Answers `{"input_tokens": N}`. Nothing is generated: no ledger row, no cost. Models of '
        "providers that cannot count answer 400.",
        responses={
            200: inline_serializer("TokenCount", {"input_tokens": serializers.IntegerField()}),
            **ANTHROPIC_ERRORS,
        },
    )
    def post(self, request):  # pragma: no cover - documentation only, served by CountTokensConsumer
        raise NotImplementedError


JOB_CREATED = {
    200: OpenApiResponse(JobSerializer, "With `Prefer: wait=N`: the job finished within N seconds"),
    202: OpenApiResponse(JobSerializer, "The job, queued or running; poll `GET /v1/jobs/{id}` (the Location)"),
    **ERRORS,
}


class ImageGenerateDoc(APIView):
    @extend_schema(
        operation_id="images_generate",
        tags=["jobs"],
        request=ImageGenerateRequest,
        summary="Generate images as a job (`Prefer: wait=N`, N up to 60, waits for it)",
        description="Values are checked against the model: a 400 names the param and lists what it allows.",
        responses=JOB_CREATED,
    )
    def post(self, request):  # pragma: no cover - documentation only, served by ImageGenerateConsumer
        raise NotImplementedError


class VideoGenerateDoc(APIView):
    @extend_schema(
        operation_id="video_generate",
        tags=["jobs"],
        request=VideoGenerateRequest,
        summary="Generate a video as a job (`Prefer: wait=N`, N up to 60, waits for it)",
        description="Durations longer than one provider call are made in steps (Veo 3.1: 8 s, then 7 s "
        "extensions), billed for the seconds delivered; a 400 lists the durations the model can make.",
        responses=JOB_CREATED,
    )
    def post(self, request):  # pragma: no cover - documentation only, served by VideoGenerateConsumer
        raise NotImplementedError


urlpatterns = [
    path(ImageGenerateConsumer.path.removeprefix("/"), ImageGenerateDoc.as_view()),
    path(VideoGenerateConsumer.path.removeprefix("/"), VideoGenerateDoc.as_view()),
    path(ChatConsumer.path.removeprefix("/"), ChatCompleteDoc.as_view()),
    path(ChatCompletionsConsumer.path.removeprefix("/"), ChatCompletionsDoc.as_view()),
    path(MessagesConsumer.path.removeprefix("/"), MessagesDoc.as_view()),
    path(CountTokensConsumer.path.removeprefix("/"), CountTokensDoc.as_view()),
    path("", include("pulse.urls")),
]
