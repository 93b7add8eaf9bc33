"""Error mapping: every error is the OpenAI envelope with the right status, type and param."""

from __future__ import annotations

import json

import msgspec
import pytest

from gateway.errors import (
    GatewayError,
    bad_request,
    error_frame,
    from_validation_error,
    model_not_found,
    no_capacity,
    upstream_failed,
)
from gateway.protocol import ChatRequestView, decode_request


def envelope(error: GatewayError) -> dict[str, object]:
    body: dict[str, object] = json.loads(error.body())["error"]
    return body


def test_constructors_set_status_type_and_code() -> None:
    cases = [
        (bad_request("no", param="messages"), 400, "invalid_request_error", None),
        (model_not_found("gpt-9"), 404, "invalid_request_error", "model_not_found"),
        (no_capacity("m", retry_after_s=7), 503, "service_unavailable", "no_capacity"),
        (upstream_failed("reset"), 502, "upstream_error", "upstream_error"),
        (GatewayError(413, "too big"), 413, "invalid_request_error", None),
        (GatewayError(500, "boom"), 500, "server_error", None),
    ]
    for error, status, type_, code in cases:
        body = envelope(error)
        assert error.status == status
        assert set(body) == {"message", "type", "param", "code"}
        assert (body["type"], body["code"]) == (type_, code)
    assert no_capacity("m", retry_after_s=7).headers == {"Retry-After": "7"}
    assert envelope(model_not_found("gpt-9"))["param"] == "model"


@pytest.mark.parametrize(
    ("body", "param"),
    [
        (b'{"model": "m", "messages": [{"role": 3}]}', "messages[0].role"),
        (b'{"model": "m", "messages": [], "stream": true}', "messages"),
        (b'{"model": 1, "messages": [{"role": "user"}]}', "model"),
        (b'{"messages": [{"role": "user"}]}', None),
    ],
)
def test_validation_errors_carry_the_param_path(body: bytes, param: str | None) -> None:
    with pytest.raises(msgspec.ValidationError) as caught:
        decode_request(body, ChatRequestView)
    error = from_validation_error(caught.value)
    assert error.status == 400
    assert envelope(error)["param"] == param


def test_error_frame_ends_the_stream() -> None:
    frame = error_frame(upstream_failed("reset"))
    first, done, rest = frame.split(b"\n\n")
    assert json.loads(first.removeprefix(b"data: "))["error"]["type"] == "upstream_error"
    assert (done, rest) == (b"data: [DONE]", b"")
