"""Decoding OTLP/HTTP trace exports (protobuf or JSON) into request records.

An OTLP receiver (the optimizer's, or a test's) hands the body of a `POST /v1/traces` here and
gets back the gateway request spans it carried, as the same `RequestRecord`s the in-process feed
produces. Spans that are not gateway request spans are skipped.
"""

from __future__ import annotations

import base64
import json
from typing import Any

from google.protobuf import json_format
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span as ProtoSpan
from opentelemetry.trace import SpanKind

from observability.records import RequestRecord, from_attributes, is_request_span

__all__ = ["OTLPDecodeError", "decode_export", "request_records"]

_PROTOBUF = "application/x-protobuf"
_JSON = "application/json"
_ID_FIELDS = ("traceId", "spanId", "parentSpanId")
_KINDS = {
    ProtoSpan.SPAN_KIND_INTERNAL: SpanKind.INTERNAL,
    ProtoSpan.SPAN_KIND_SERVER: SpanKind.SERVER,
    ProtoSpan.SPAN_KIND_CLIENT: SpanKind.CLIENT,
    ProtoSpan.SPAN_KIND_PRODUCER: SpanKind.PRODUCER,
    ProtoSpan.SPAN_KIND_CONSUMER: SpanKind.CONSUMER,
}


class OTLPDecodeError(ValueError):
    """The body is not an OTLP trace export in the announced encoding."""


def decode_export(body: bytes, content_type: str) -> ExportTraceServiceRequest:
    """The export request in a body of `application/x-protobuf` or `application/json`."""
    media_type = content_type.split(";", 1)[0].strip().lower()
    request = ExportTraceServiceRequest()
    try:
        if media_type == _PROTOBUF:
            request.ParseFromString(body)
        elif media_type == _JSON:
            # OTLP/JSON writes trace and span ids as hex; protobuf's JSON mapping expects base64.
            json_format.ParseDict(_ids_as_base64(json.loads(body)), request)
        else:
            raise OTLPDecodeError(f"unsupported content type {content_type!r}: use {_PROTOBUF} or {_JSON}")
    except (DecodeError, json_format.ParseError, ValueError) as exc:
        if isinstance(exc, OTLPDecodeError):
            raise
        raise OTLPDecodeError(f"not an OTLP trace export: {exc}") from exc
    return request


def request_records(request: ExportTraceServiceRequest) -> list[RequestRecord]:
    """The gateway request spans of an export, as records."""
    records = []
    for resource_spans in request.resource_spans:
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                attributes = {kv.key: _value(kv.value) for kv in span.attributes}
                if not is_request_span(_KINDS.get(span.kind, SpanKind.INTERNAL), attributes):
                    continue
                records.append(
                    from_attributes(
                        attributes,
                        trace_id=span.trace_id.hex(),
                        span_id=span.span_id.hex(),
                        start=span.start_time_unix_nano / 1e9,
                        end=span.end_time_unix_nano / 1e9,
                    )
                )
    return records


def _value(value: AnyValue) -> Any:
    field = value.WhichOneof("value")
    if field in {"string_value", "bool_value", "int_value", "double_value"}:
        return getattr(value, field)
    return None  # arrays, maps and bytes carry nothing a request record reads


def _ids_as_base64(node: Any) -> Any:
    if isinstance(node, dict):
        return {
            key: _hex_to_base64(value) if key in _ID_FIELDS and isinstance(value, str) else _ids_as_base64(value)
            for key, value in node.items()
        }
    if isinstance(node, list):
        return [_ids_as_base64(item) for item in node]
    return node


def _hex_to_base64(value: str) -> str:
    try:
        return base64.b64encode(bytes.fromhex(value)).decode()
    except ValueError:
        return value  # already base64 (some exporters do so); protobuf decides
