"""The one error envelope: {"error": {"type", "code", "message", "param"}}.

Every API error goes through here: Pulse's own (ApiError), DRF's exceptions,
Django's 404/500 handlers and unhandled exceptions. The types follow the
OpenAI convention so OpenAI-compatible clients classify them correctly.
"""

from __future__ import annotations

import logging
import math
from typing import Any

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import RequestDataTooBig
from django.http import Http404, HttpRequest, JsonResponse
from rest_framework import exceptions as drf
from rest_framework.response import Response

from core.errors import DomainError, QuotaExceeded

logger = logging.getLogger(__name__)


class ApiError(Exception):
    """An error answered to the client as the envelope, with a status and optional headers."""

    status = 400
    type = "invalid_request_error"
    code = "invalid_request"

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        type: str | None = None,
        code: str | None = None,
        param: str | None = None,
        headers: dict[str, str] | None = None,
        extra: dict[str, Any] | None = None,
    ):
        super().__init__(message)
        self.message = message
        self.status = status or self.status
        self.type = type or self.type
        self.code = code or self.code
        self.param = param
        self.headers = headers or {}
        self.extra = extra or {}

    def body(self) -> dict[str, Any]:
        return error_body(self.type, self.code, self.message, self.param, **self.extra)


class InvalidRequest(ApiError):
    pass


# The challenge every 401 carries (RFC 9110): how to authenticate.
AUTH_CHALLENGE = 'Bearer realm="pulse"'


class AuthenticationError(ApiError):
    status, type, code = 401, "authentication_error", "invalid_api_key"

    def __init__(self, message: str, **kwargs: Any):
        kwargs["headers"] = {"WWW-Authenticate": AUTH_CHALLENGE, **(kwargs.get("headers") or {})}
        super().__init__(message, **kwargs)


class PermissionError_(ApiError):
    status, type, code = 403, "permission_error", "permission_denied"


class NotFound(ApiError):
    status, type, code = 404, "not_found_error", "not_found"


def error_body(type: str, code: str, message: str, param: str | None = None, **extra: Any) -> dict:
    return {"error": {"type": type, "code": code, "message": message, "param": param, **extra}}


def first_validation_error(detail: Any, path: str = "") -> tuple[str | None, str]:
    """(param, message) of the first error in a DRF ValidationError detail, param as a dotted path."""
    if isinstance(detail, dict):
        for key, value in detail.items():
            name = "" if key == "non_field_errors" else str(key)
            return first_validation_error(value, f"{path}.{name}".strip(".") if name else path)
    if isinstance(detail, list):
        for index, value in enumerate(detail):
            if value:  # DRF puts {} in a ListSerializer's detail for valid items
                nested = isinstance(value, (dict, list))
                return first_validation_error(value, f"{path}.{index}".strip(".") if nested else path)
    return (path or None), str(detail)


def _drf_error(exc: drf.APIException) -> ApiError:
    if isinstance(exc, drf.ValidationError):
        param, message = first_validation_error(exc.detail)
        return InvalidRequest(f"{param}: {message}" if param else message, code="invalid_value", param=param)
    if isinstance(exc, (drf.NotAuthenticated, drf.AuthenticationFailed)):
        code = "missing_api_key" if isinstance(exc, drf.NotAuthenticated) else "invalid_api_key"
        specific = exc.get_codes()  # e.g. expired_api_key, set by the authentication class
        if isinstance(specific, str) and specific not in {"authentication_failed", "not_authenticated"}:
            code = specific
        return AuthenticationError(str(exc.detail), code=code)
    if isinstance(exc, drf.Throttled):
        headers = {"Retry-After": str(max(1, math.ceil(exc.wait or 1)))}  # type: ignore[attr-defined]  # set in __init__, missing from the stubs
        return ApiError(
            str(exc.detail), status=429, type="rate_limit_error", code="rate_limit_exceeded", headers=headers
        )
    mapping = {
        drf.PermissionDenied: (403, "permission_error", "permission_denied"),
        drf.NotFound: (404, "not_found_error", "not_found"),
        drf.MethodNotAllowed: (405, "invalid_request_error", "method_not_allowed"),
        drf.NotAcceptable: (406, "invalid_request_error", "not_acceptable"),
        drf.UnsupportedMediaType: (415, "invalid_request_error", "unsupported_media_type"),
        drf.ParseError: (400, "invalid_request_error", "invalid_json"),
    }
    for cls, (status, type_, code) in mapping.items():
        if isinstance(exc, cls):
            return ApiError(str(exc.detail), status=status, type=type_, code=code)
    return ApiError(str(exc.detail), status=exc.status_code, type="api_error", code="error")


# How the API answers each domain error: (status, type, headers).
DOMAIN_ERRORS: dict[type[DomainError], tuple[int, str, dict[str, str]]] = {
    # Retrying will not help until the period turns or an admin raises the cap.
    QuotaExceeded: (429, "insufficient_quota", {"x-should-retry": "false"}),
}


def _domain_error(exc: DomainError) -> ApiError:
    status, type_, headers = next(
        (answer for cls, answer in DOMAIN_ERRORS.items() if isinstance(exc, cls)), (400, "invalid_request_error", {})
    )
    return ApiError(exc.message, status=status, type=type_, code=exc.code, param=exc.param, headers=dict(headers))


def as_api_error(exc: BaseException) -> ApiError:
    """Any exception as the ApiError the client sees; unknown ones become an opaque 500."""
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, DomainError):
        return _domain_error(exc)
    if isinstance(exc, drf.APIException):
        return _drf_error(exc)
    if isinstance(exc, Http404):
        return NotFound("Not found.")
    if isinstance(exc, DjangoPermissionDenied):
        return PermissionError_("You do not have permission to perform this action.")
    if isinstance(exc, RequestDataTooBig):
        return ApiError("Request body is too large.", status=413, code="request_too_large")
    return ApiError(
        "The server had an error while processing your request.", status=500, type="api_error", code="internal_error"
    )


def api_exception_handler(exc: Exception, context: dict) -> Response:
    """DRF's EXCEPTION_HANDLER: every exception of a DRF view becomes the envelope."""
    error = as_api_error(exc)
    if error.status >= 500:
        logger.error("unhandled error in %s", context.get("view").__class__.__name__, exc_info=exc)
    return Response(error.body(), status=error.status, headers=error.headers)


def json_error_response(error: ApiError) -> JsonResponse:
    return JsonResponse(error.body(), status=error.status, headers=error.headers)


def not_found_view(request: HttpRequest, exception: Exception | None = None) -> JsonResponse:
    """handler404: an unknown URL is an envelope too."""
    return json_error_response(NotFound(f"No endpoint at {request.path}."))


def server_error_view(request: HttpRequest) -> JsonResponse:
    """handler500: an unhandled error outside DRF views; the traceback goes to the log, not the client."""
    return json_error_response(as_api_error(Exception()))


def bad_request_view(request: HttpRequest, exception: Exception | None = None) -> JsonResponse:
    return json_error_response(InvalidRequest("Bad request."))


def permission_denied_view(request: HttpRequest, exception: Exception | None = None) -> JsonResponse:
    return json_error_response(PermissionError_("You do not have permission to perform this action."))
