"""The in-process record feed, and whether and where spans are exported."""

from __future__ import annotations

import pytest
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from observability import semconv
from observability.config import ObservabilityConfig
from observability.records import RequestRecord, from_attributes
from observability.tracing import RecordFeed, build_tracer_provider, otlp_traces_url


def record(model: str) -> RequestRecord:
    attributes = {semconv.GEN_AI_OPERATION_NAME: "chat", semconv.GEN_AI_REQUEST_MODEL: model}
    return from_attributes(attributes, trace_id="", span_id="", start=1.0, end=2.0)


def test_records_reach_every_subscriber_even_if_one_fails() -> None:
    feed = RecordFeed()
    assert not feed.wanted
    received: list[RequestRecord] = []

    def broken(_: RequestRecord) -> None:
        raise RuntimeError("subscriber bug")

    feed.subscribe(broken)
    unsubscribe = feed.subscribe(received.append)
    assert feed.wanted
    feed.publish(record("m"))
    assert [r.model for r in received] == ["m"]
    unsubscribe()
    feed.publish(record("n"))
    assert len(received) == 1


def test_no_spans_unless_something_reads_them(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):
        monkeypatch.delenv(name, raising=False)
    assert build_tracer_provider(ObservabilityConfig()) is None
    assert build_tracer_provider(ObservabilityConfig(otlp_endpoint="http://127.0.0.1:1")) is not None
    assert build_tracer_provider(ObservabilityConfig(), [SimpleSpanProcessor(InMemorySpanExporter())]) is not None


@pytest.mark.parametrize(
    ("configured", "env", "expected"),
    [
        (None, {}, None),
        ("http://collector:4318/", {}, "http://collector:4318/v1/traces"),
        (None, {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"}, "http://c:4318/v1/traces"),
        (None, {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://t:1/x"}, "http://t:1/x"),
        ("http://mine:4318", {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"}, "http://mine:4318/v1/traces"),
    ],
)
def test_export_endpoint(
    configured: str | None, env: dict[str, str], expected: str | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert otlp_traces_url(ObservabilityConfig(otlp_endpoint=configured)) == expected
