"""Every error the gateway returns, in the OpenAI envelope, and the one place that maps exceptions to it.

{"error": {"message": "...", "type": "invalid_request_error", "param": "messages", "code": null}}
"""

from __future__ import annotations

import logging
from typing import Any

import msgspec
from litestar import Request, Response
from litestar.exceptions import HTTPException
from litestar.types import ExceptionHandlersMap

__all__ = [
    "ErrorBody",
    "ErrorDetail",
    "GatewayError",
    "bad_request",
    "body_too_large",
    "error_frame",
    "exception_handlers",
    "model_not_found",
    "no_capacity",
    "status_of",
    "upstream_failed",
]

log = logging.getLogger(__name__)


class ErrorDetail(msgspec.Struct, omit_defaults=False):
    message: str
    type: str
    param: str | None = None
    code: str | int | None = None


class ErrorBody(msgspec.Struct):
    error: ErrorDetail


_encoder = msgspec.json.Encoder()

_TYPE_BY_STATUS = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
    502: "upstream_error",
    503: "service_unavailable",
    504: "upstream_error",
}


class GatewayError(Exception):
    """An error the client should see, with its HTTP status and envelope fields."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str | None = None,
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.detail = ErrorDetail(message, type or error_type(status), param, code)
        self.headers = headers or {}

    def body(self) -> bytes:
        return _encoder.encode(ErrorBody(self.detail))


def error_type(status: int) -> str:
    return _TYPE_BY_STATUS.get(status, "invalid_request_error" if status < 500 else "server_error")


def bad_request(message: str, param: str | None = None) -> GatewayError:
    return GatewayError(400, message, param=param)


def body_too_large(limit: int) -> GatewayError:
    return GatewayError(413, f"Request body exceeds the limit of {limit} bytes.", code="body_too_large")


def model_not_found(model: str) -> GatewayError:
    return GatewayError(
        404, f"The model `{model}` does not exist.", type="invalid_request_error", param="model", code="model_not_found"
    )


def no_capacity(model: str, retry_after_s: int) -> GatewayError:
    return GatewayError(
        503,
        f"No instance serving `{model}` is ready; retry later.",
        code="no_capacity",
        headers={"Retry-After": str(retry_after_s)},
    )


def upstream_failed(reason: str) -> GatewayError:
    return GatewayError(502, f"Upstream instance failed: {reason}", code="upstream_error")


def error_frame(error: GatewayError) -> bytes:
    """An error as the last data frames of a stream that already started."""
    return b"data: " + error.body() + b"\n\ndata: [DONE]\n\n"


def from_validation_error(exc: msgspec.ValidationError) -> GatewayError:
    """A schema error; `param` is the JSON path without its `$.` root (`messages[0].role`)."""
    message, _, path = str(exc).rpartition(" - at `")
    if not message:
        return bad_request(str(exc))
    param = path.rstrip("`").removeprefix("$").removeprefix(".") or None
    return bad_request(f"{message} at `{param}`" if param else message, param=param)


def _respond(error: GatewayError) -> Response[bytes]:
    return Response(error.body(), status_code=error.status, media_type="application/json", headers=error.headers)


def _on_gateway_error(_: Request[Any, Any, Any], exc: GatewayError) -> Response[bytes]:
    return _respond(exc)


def _on_validation_error(_: Request[Any, Any, Any], exc: msgspec.ValidationError) -> Response[bytes]:
    return _respond(from_validation_error(exc))


def _on_decode_error(_: Request[Any, Any, Any], exc: msgspec.DecodeError) -> Response[bytes]:
    return _respond(bad_request(f"Request body is not valid JSON: {exc}"))


def _on_http_exception(_: Request[Any, Any, Any], exc: HTTPException) -> Response[bytes]:
    headers = dict(exc.headers or {})
    return _respond(GatewayError(exc.status_code, exc.detail, headers=headers))


def _on_unexpected(request: Request[Any, Any, Any], exc: Exception) -> Response[bytes]:
    log.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return _respond(GatewayError(500, "Internal gateway error.", type="server_error"))


def status_of(exc: BaseException) -> int:
    """The HTTP status the exception handlers answer `exc` with."""
    if isinstance(exc, GatewayError):
        return exc.status
    if isinstance(exc, msgspec.ValidationError | msgspec.DecodeError):
        return 400
    if isinstance(exc, HTTPException):
        return exc.status_code
    return 500


exception_handlers: ExceptionHandlersMap = {
    GatewayError: _on_gateway_error,
    msgspec.ValidationError: _on_validation_error,
    msgspec.DecodeError: _on_decode_error,
    HTTPException: _on_http_exception,
    Exception: _on_unexpected,
}
