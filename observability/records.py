"""The typed record of one request, read from its span's attributes: what the optimizer consumes.

The gateway builds it from the attributes it gives the request's span, and an OTLP receiver
from the attributes of a span it received (`observability.otlp`), with the same function: one
gateway or many feed the same code.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import msgspec
from opentelemetry.trace import SpanKind

from observability import semconv

__all__ = ["RequestRecord", "from_attributes", "is_request_span"]


class RequestRecord(msgspec.Struct, frozen=True, kw_only=True):
    """One request as the gateway saw it; times in seconds since the epoch, durations in seconds."""

    trace_id: str
    span_id: str
    start: float
    end: float
    operation: str
    model: str
    pool: str
    """"" when the request never reached a pool (rejected or no capacity)."""
    instance: str
    accelerator: str
    quantization: str
    stream: bool
    status: int
    input_tokens: int
    output_tokens: int
    duration_s: float
    queue_wait_s: float | None
    ttft_s: float | None
    tpot_s: float | None
    attempts: int
    cost_usd: float


def is_request_span(kind: SpanKind, attributes: Mapping[str, Any]) -> bool:
    """The gateway's request span (a server span with a GenAI operation), not an attempt span."""
    return kind is SpanKind.SERVER and semconv.GEN_AI_OPERATION_NAME in attributes


def from_attributes(
    attributes: Mapping[str, Any], *, trace_id: str, span_id: str, start: float, end: float
) -> RequestRecord:
    def optional(key: str) -> float | None:
        value = attributes.get(key)
        return None if value is None else float(value)

    return RequestRecord(
        trace_id=trace_id,
        span_id=span_id,
        start=start,
        end=end,
        operation=str(attributes.get(semconv.GEN_AI_OPERATION_NAME, "")),
        model=str(attributes.get(semconv.GEN_AI_REQUEST_MODEL, "")),
        pool=str(attributes.get(semconv.THRIFTY_POOL, "")),
        instance=str(attributes.get(semconv.THRIFTY_INSTANCE, "")),
        accelerator=str(attributes.get(semconv.THRIFTY_ACCELERATOR, "")),
        quantization=str(attributes.get(semconv.THRIFTY_QUANTIZATION, "")),
        stream=bool(attributes.get(semconv.THRIFTY_STREAM, False)),
        status=int(attributes.get(semconv.HTTP_RESPONSE_STATUS_CODE, 0)),
        input_tokens=int(attributes.get(semconv.GEN_AI_USAGE_INPUT_TOKENS, 0)),
        output_tokens=int(attributes.get(semconv.GEN_AI_USAGE_OUTPUT_TOKENS, 0)),
        duration_s=float(attributes.get(semconv.THRIFTY_DURATION_S, end - start)),
        queue_wait_s=optional(semconv.THRIFTY_QUEUE_WAIT_S),
        ttft_s=optional(semconv.THRIFTY_TTFT_S),
        tpot_s=optional(semconv.THRIFTY_TPOT_S),
        attempts=int(attributes.get(semconv.THRIFTY_ATTEMPTS, 0)),
        cost_usd=float(attributes.get(semconv.THRIFTY_COST_USD, 0.0)),
    )
