"""Config section owned by observability: trace export, cost window, engine and host metrics."""

from __future__ import annotations

from typing import Annotated

import msgspec
from msgspec import Meta

__all__ = ["ObservabilityConfig"]


class ObservabilityConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    service_name: Annotated[str, Meta(min_length=1)] = "thrifty-gateway"
    """`service.name` of the spans."""
    otlp_endpoint: Annotated[str, Meta(pattern=r"^https?://")] | None = None
    """Base URL of an OTLP/HTTP receiver (spans go to `<endpoint>/v1/traces`). Unset: the standard
    OTEL_EXPORTER_OTLP_TRACES_ENDPOINT / OTEL_EXPORTER_OTLP_ENDPOINT variables decide; neither set, no export."""
    otlp_headers: dict[str, str] = {}
    """Extra headers for the OTLP exporter (e.g. an API key of a hosted backend)."""
    trace_sample_ratio: Annotated[float, Meta(ge=0, le=1)] = 1.0
    """Share of traces exported (a client's sampled flag is honoured). The optimizer and the
    metrics see every request whatever this says."""
    cost_window_s: Annotated[float, Meta(ge=10)] = 300.0
    """Rolling window of the tokens-per-dollar and dollars-per-million-tokens gauges."""
    engine_scrape_interval_s: Annotated[float, Meta(gt=0)] = 5.0
    """Period of the scrapes of every vLLM instance's own /metrics."""
    engine_scrape_timeout_s: Annotated[float, Meta(gt=0)] = 2.0
    host_metrics: bool = True
    """CPU and memory through psutil, GPUs through NVML and TPUs through tpu-info where present."""
