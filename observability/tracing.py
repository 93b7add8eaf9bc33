"""OpenTelemetry setup: a tracer provider per gateway, OTLP/HTTP export, and the in-process feed.

Every span is recorded (the optimizer needs all of them, whatever a client's sampling flag
says); export to an OTLP receiver is batched on a background thread. Request spans are also
handed, as `RequestRecord`s, to in-process subscribers when they end.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable

from opentelemetry.context import Context
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.sampling import ALWAYS_ON

from observability.config import ObservabilityConfig
from observability.records import RequestRecord, from_readable_span

__all__ = ["RecordFeed", "build_tracer_provider", "otlp_traces_url"]

log = logging.getLogger(__name__)

_ENV_ENDPOINTS = ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")


class RecordFeed(SpanProcessor):
    """Turns each finished request span into a `RequestRecord` for the subscribers, synchronously.

    Subscribers run on the thread that ends the span (the gateway's event loop): they must be
    quick, like appending to a window. One that raises is logged and does not stop the others.
    """

    def __init__(self) -> None:
        self._subscribers: list[Callable[[RequestRecord], None]] = []

    def subscribe(self, subscriber: Callable[[RequestRecord], None]) -> Callable[[], None]:
        """Add a subscriber; returns the function that removes it."""
        self._subscribers.append(subscriber)
        return lambda: self._subscribers.remove(subscriber)

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        return None

    def on_end(self, span: ReadableSpan) -> None:
        if not self._subscribers:
            return
        record = from_readable_span(span)
        if record is None:
            return
        for subscriber in list(self._subscribers):
            try:
                subscriber(record)
            except Exception:
                log.exception("a request-record subscriber failed")

    def shutdown(self) -> None:
        self._subscribers.clear()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


def otlp_traces_url(config: ObservabilityConfig) -> str | None:
    """Where spans are exported: the config's endpoint, else the standard environment variables."""
    if config.otlp_endpoint:
        return config.otlp_endpoint.rstrip("/") + "/v1/traces"
    if os.environ.get(_ENV_ENDPOINTS[0]):
        return os.environ[_ENV_ENDPOINTS[0]]
    if os.environ.get(_ENV_ENDPOINTS[1]):
        return os.environ[_ENV_ENDPOINTS[1]].rstrip("/") + "/v1/traces"
    return None


def build_tracer_provider(
    config: ObservabilityConfig, processors: Iterable[SpanProcessor], instance_id: str = ""
) -> TracerProvider:
    """A provider with the given in-process processors, plus OTLP export when an endpoint is set."""
    attributes = {"service.name": config.service_name}
    if instance_id:
        attributes["service.instance.id"] = instance_id
    provider = TracerProvider(resource=Resource.create(attributes), sampler=ALWAYS_ON)
    for processor in processors:
        provider.add_span_processor(processor)
    url = otlp_traces_url(config)
    if url is not None:
        exporter = OTLPSpanExporter(endpoint=url, headers=dict(config.otlp_headers) or None)
        provider.add_span_processor(BatchSpanProcessor(exporter))
        log.info("exporting spans to %s", url)
    return provider
