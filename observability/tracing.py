"""OpenTelemetry setup (a tracer provider per gateway, OTLP/HTTP export) and the in-process feed.

Spans exist only when something reads them: an OTLP exporter or processors a caller adds. The
SDK costs tens of microseconds per span, which a gateway that exports nothing should not pay.
The optimizer does not depend on them: each request's `RequestRecord` is published to the feed
whether or not its span is recorded or sampled, built from the same attributes with the same
function (`records.from_attributes`) that decodes spans received over OTLP.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence

from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

from observability.config import ObservabilityConfig
from observability.records import RequestRecord

__all__ = ["RecordFeed", "build_tracer_provider", "otlp_traces_url"]

log = logging.getLogger(__name__)

_ENV_ENDPOINTS = ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")


class RecordFeed:
    """Hands each finished request's record to the subscribers, synchronously.

    Subscribers run on the gateway's event loop: they must be quick, like appending to a window.
    One that raises is logged and does not stop the others.
    """

    def __init__(self) -> None:
        self._subscribers: list[Callable[[RequestRecord], None]] = []

    def subscribe(self, subscriber: Callable[[RequestRecord], None]) -> Callable[[], None]:
        """Add a subscriber; returns the function that removes it."""
        self._subscribers.append(subscriber)
        return lambda: self._subscribers.remove(subscriber)

    @property
    def wanted(self) -> bool:
        return bool(self._subscribers)

    def publish(self, record: RequestRecord) -> None:
        for subscriber in list(self._subscribers):
            try:
                subscriber(record)
            except Exception:
                log.exception("a request-record subscriber failed")


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
    config: ObservabilityConfig, processors: Sequence[SpanProcessor] = (), instance_id: str = ""
) -> TracerProvider | None:
    """A provider with the given processors, plus OTLP export when an endpoint is set; None if neither."""
    url = otlp_traces_url(config)
    if url is None and not processors:
        return None
    attributes = {"service.name": config.service_name}
    if instance_id:
        attributes["service.instance.id"] = instance_id
    sampler = ParentBased(TraceIdRatioBased(config.trace_sample_ratio))
    provider = TracerProvider(resource=Resource.create(attributes), sampler=sampler)
    for processor in processors:
        provider.add_span_processor(processor)
    if url is not None:
        exporter = OTLPSpanExporter(endpoint=url, headers=dict(config.otlp_headers) or None)
        provider.add_span_processor(BatchSpanProcessor(exporter))
        log.info("exporting spans to %s (sample ratio %g)", url, config.trace_sample_ratio)
    return provider
