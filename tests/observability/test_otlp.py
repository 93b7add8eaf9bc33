"""OTLP/HTTP export from the gateway to a receiver, and decoding both OTLP encodings."""

from __future__ import annotations

import base64
import json

import msgspec
import openai
import pytest
from google.protobuf import json_format
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from gateway.bench.stub_backend import StubServer
from observability import semconv
from observability.config import ObservabilityConfig
from observability.otlp import OTLPDecodeError, decode_export, request_records
from observability.records import RequestRecord, from_attributes
from tests.support import OTLPReceiver, running_gateway, static_config


async def test_gateway_exports_request_spans_over_otlp(stub: StubServer) -> None:
    fed: list[RequestRecord] = []
    config = static_config({"a": [stub.url]})
    with OTLPReceiver() as receiver:
        config.observability = ObservabilityConfig(otlp_endpoint=receiver.url)
        async with running_gateway(config, records=fed) as url:
            client = openai.AsyncOpenAI(base_url=url + "/v1", api_key="unused", max_retries=0)
            await client.completions.create(model="stub", prompt="x", max_tokens=5)
            stream = await client.chat.completions.create(
                model="stub", messages=[{"role": "user", "content": "x"}], max_tokens=6, stream=True
            )
            _ = [chunk async for chunk in stream]
    # Leaving the gateway flushed its batch exporter: everything has arrived, and a receiver
    # elsewhere reads the same records as the gateway's own feed.
    assert len(fed) == 2
    assert sorted(receiver.received(), key=lambda r: r.start) == sorted(fed, key=lambda r: r.start)
    assert {r.output_tokens for r in receiver.received()} == {5, 6}
    assert set(receiver.content_types) == {"application/x-protobuf"}


def exported_spans() -> tuple[bytes, list[RequestRecord]]:
    """A protobuf export of real SDK spans: one request span, one attempt span."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("test")
    with tracer.start_as_current_span("chat m", kind=SpanKind.SERVER) as span:
        span.set_attributes(
            {
                semconv.GEN_AI_OPERATION_NAME: "chat",
                semconv.GEN_AI_REQUEST_MODEL: "m",
                semconv.GEN_AI_USAGE_INPUT_TOKENS: 11,
                semconv.GEN_AI_USAGE_OUTPUT_TOKENS: 22,
                semconv.THRIFTY_POOL: "p",
                semconv.THRIFTY_STREAM: True,
                semconv.THRIFTY_TTFT_S: 0.25,
                semconv.THRIFTY_COST_USD: 1e-5,
                semconv.HTTP_RESPONSE_STATUS_CODE: 200,
            }
        )
        with tracer.start_as_current_span("upstream chat", kind=SpanKind.CLIENT):
            pass
    spans = exporter.get_finished_spans()
    records = [
        from_attributes(
            s.attributes or {},
            trace_id=f"{s.context.trace_id:032x}",
            span_id=f"{s.context.span_id:016x}",
            start=(s.start_time or 0) / 1e9,
            end=(s.end_time or 0) / 1e9,
        )
        for s in spans
        if s.kind is SpanKind.SERVER and s.context is not None
    ]
    return encode_spans(spans).SerializeToString(), records


def test_protobuf_and_json_decode_to_the_same_records() -> None:
    body, expected = exported_spans()
    assert len(expected) == 1 and expected[0].output_tokens == 22 and expected[0].ttft_s == 0.25
    assert request_records(decode_export(body, "application/x-protobuf")) == expected

    # OTLP/JSON: protobuf's JSON mapping, but trace and span ids in hex (the spec's one difference).
    document = json_format.MessageToDict(decode_export(body, "application/x-protobuf"))
    for resource in document["resourceSpans"]:
        for scope in resource["scopeSpans"]:
            for span in scope["spans"]:
                for key in ("traceId", "spanId", "parentSpanId"):
                    if key in span:
                        span[key] = base64.b64decode(span[key]).hex()
    decoded = request_records(decode_export(json.dumps(document).encode(), "application/json; charset=utf-8"))
    assert decoded == expected


@pytest.mark.parametrize(
    ("body", "content_type"),
    [(b"\xff\x00garbage", "application/x-protobuf"), (b"{not json", "application/json"), (b"{}", "text/plain")],
)
def test_bad_exports_are_rejected_cleanly(body: bytes, content_type: str) -> None:
    with pytest.raises(OTLPDecodeError):
        decode_export(body, content_type)


def test_records_are_plain_data() -> None:
    _, (record,) = exported_spans()
    assert msgspec.json.decode(msgspec.json.encode(record), type=RequestRecord) == record
