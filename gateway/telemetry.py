"""The gateway's telemetry: a span per request and per attempt, Prometheus metrics, attributed cost.

The app opens an `Exchange` when a request arrives and finishes it after the last byte; the
proxy reports each attempt on an instance. Everything else (span attributes, histograms, the
cost ledger's leases) is derived here, so the request path only fills in the record.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from opentelemetry.sdk.trace import SpanProcessor
from opentelemetry.trace import INVALID_SPAN, Span, SpanKind, Status, StatusCode, set_span_in_context
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import Metric

from gateway.config import Config
from gateway.protocol import Usage
from gateway.router import Router
from observability import metrics, semconv
from observability.cost import CostLedger, Lease
from observability.engine import EngineScraper, ScrapeTarget
from observability.host import HostCollector
from observability.records import RequestRecord, from_attributes
from observability.tracing import RecordFeed, build_tracer_provider
from runtimes.config import PoolConfig, VllmEngineConfig
from runtimes.fleet import Fleet
from runtimes.instance import Instance, InstanceState

__all__ = ["CANCELLED", "CLIENT_CLOSED", "Attempt", "Exchange", "Telemetry"]

CLIENT_CLOSED = 499
"""Status recorded for a request whose client went away first (nginx's convention)."""
CANCELLED = "cancelled"
"""The error of an attempt cut short because its client went away: not the instance's fault."""

_propagator = TraceContextTextMapPropagator()
_SCRAPED_STATES = (InstanceState.READY, InstanceState.DRAINING)


@dataclass(eq=False)
class Exchange:
    """What happened to one request: filled in as it goes, turned into a span and metrics at the end."""

    operation: str
    span: Span
    """The request's span; a non-recording one when nothing reads spans."""
    arrived: float = field(default_factory=time.monotonic)
    arrived_ns: int = field(default_factory=time.time_ns)
    """Wall-clock arrival: the span's start time."""
    trace_lines: bytes = b""
    """The client's own trace headers, passed on as they are when the gateway records no spans."""
    model: str = ""
    served: bool = False
    """The model is one the gateway serves (only those become metric labels)."""
    streaming: bool = False
    max_tokens: int | None = None
    size_classes: tuple[str, ...] = ()
    """The request's size classes for routing, most specific first."""
    instance: Instance | None = None
    """The instance of the latest attempt."""
    dispatched_at: float | None = None
    status: int = 0
    usage: Usage | None = None
    first_token_at: float | None = None
    cost_usd: float = 0.0
    tries: list[Attempt] = field(default_factory=list)
    """Attempts made so far; their spans end with the request's, off the answer's critical path."""

    @property
    def attempts(self) -> int:
        return len(self.tries)


@dataclass(eq=False, slots=True)
class Attempt:
    """One try on one instance: its cost lease, its span and the trace header the instance gets."""

    instance: Instance
    lease: Lease
    span: Span
    header_lines: bytes
    ended_ns: int = 0
    status: int | None = None
    error: str | None = None
    cost_usd: float = 0.0


@dataclass(frozen=True)
class _PoolFacts:
    model: str
    accelerator: str
    variant: str
    engine: str
    usd_per_hour: float

    @classmethod
    def of(cls, pool: PoolConfig, usd_per_hour: float) -> _PoolFacts:
        return cls(pool.model, pool.accelerator, pool.engine.variant, _engine_name(pool), usd_per_hour)


class _RequestMetrics:
    """The request-path metrics, with each label set's children cached (`labels()` takes a lock)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        def counter(metric: metrics.MetricDef) -> Counter:
            return Counter(metric.name, metric.help, metric.labels, registry=registry)

        def histogram(metric: metrics.MetricDef, buckets: Sequence[float]) -> Histogram:
            return Histogram(metric.name, metric.help, metric.labels, registry=registry, buckets=buckets)

        self.requests = counter(metrics.REQUESTS)
        self.input_tokens = counter(metrics.INPUT_TOKENS)
        self.output_tokens = counter(metrics.OUTPUT_TOKENS)
        self.attempts = counter(metrics.ATTEMPTS)
        self.cost = counter(metrics.REQUEST_COST)
        self.ttft = histogram(metrics.TTFT, metrics.TTFT_BUCKETS)
        self.tpot = histogram(metrics.TPOT, metrics.TPOT_BUCKETS)
        self.duration = histogram(metrics.DURATION, metrics.DURATION_BUCKETS)
        self.queue_wait = histogram(metrics.QUEUE_WAIT, metrics.QUEUE_WAIT_BUCKETS)
        self._children: dict[tuple[Any, ...], Any] = {}

    def child(self, metric: Counter | Histogram, *labels: str) -> Any:
        key = (id(metric), *labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child


class _Collector:
    """Adapts a function to prometheus_client's custom-collector protocol."""

    def __init__(self, collect: Any) -> None:
        self.collect = collect

    def describe(self) -> list[Metric]:
        return []


class Telemetry:
    """Spans, metrics and cost of one gateway; the fleet tells it when instances start and stop."""

    def __init__(
        self, config: Config, router: Router, fleet: Fleet, span_processors: Iterable[SpanProcessor] = ()
    ) -> None:
        settings = config.observability
        self.config = config
        self.router = router
        self.fleet = fleet
        self.pools = {pool.name: _PoolFacts.of(pool, config.price_per_hour(pool)) for pool in config.pools}
        self.ledger = CostLedger(settings.cost_window_s)
        self.feed = RecordFeed()
        """Every finished request's record, for in-process consumers (the optimizer)."""
        self.tracer_provider = build_tracer_provider(settings, list(span_processors), config.gateway.listen)
        self.tracer = None if self.tracer_provider is None else self.tracer_provider.get_tracer("thrifty.gateway")
        self.scraper = EngineScraper(
            self._scrape_targets, settings.engine_scrape_interval_s, settings.engine_scrape_timeout_s
        )
        self.registry = CollectorRegistry()
        self.request_metrics = _RequestMetrics(self.registry)
        self.registry.register(_Collector(self._collect_pools))
        self.registry.register(self.ledger)
        self.registry.register(self.scraper)
        self.host = HostCollector() if settings.host_metrics else None
        if self.host is not None:
            self.registry.register(self.host)
        fleet.add_listener(self)

    @contextlib.asynccontextmanager
    async def running(self, session: aiohttp.ClientSession) -> Any:
        """Engine scrapes while the gateway runs; spans flushed to the exporter when it stops."""
        scraping = asyncio.create_task(self.scraper.run(session), name="engine metric scrapes")
        try:
            yield
        finally:
            scraping.cancel()
            await asyncio.gather(scraping, return_exceptions=True)
            if self.tracer_provider is not None:
                await asyncio.to_thread(self.tracer_provider.shutdown)  # flushes the exporter
            if self.host is not None:
                self.host.close()

    # --- instance lifecycle (InstanceListener) ---

    def instance_started(self, instance: Instance) -> None:
        self.ledger.open(instance.id, instance.pool, self.pools[instance.pool].usd_per_hour)

    def instance_stopped(self, instance: Instance) -> None:
        self.ledger.close(instance.id)

    # --- the request path ---

    def begin(self, operation: str, headers: Iterable[tuple[bytes, bytes]]) -> Exchange:
        """A request arrived; its span continues the client's trace if it sent `traceparent`."""
        carrier = _trace_headers(headers)
        if self.tracer is None:
            lines = "".join(f"{name}: {value}\r\n" for name, value in carrier.items()).encode()
            return Exchange(operation, INVALID_SPAN, trace_lines=lines)
        context = _propagator.extract(carrier) if carrier else None
        now_ns = time.time_ns()
        span = self.tracer.start_span(operation, context=context, kind=SpanKind.SERVER, start_time=now_ns)
        return Exchange(operation, span, arrived_ns=now_ns)

    def attempt(self, exchange: Exchange, instance: Instance) -> Attempt:
        """An attempt on `instance` starts: it holds the instance (in flight, cost) until `end_attempt`."""
        if exchange.dispatched_at is None:
            exchange.dispatched_at = time.monotonic()
        exchange.instance = instance
        instance.in_flight += 1
        lease = self.ledger.begin(instance.id)
        if self.tracer is None:
            attempt = Attempt(instance, lease, INVALID_SPAN, exchange.trace_lines)
        else:
            span = self.tracer.start_span(
                f"{semconv.ATTEMPT} {exchange.operation}",
                context=set_span_in_context(exchange.span),
                kind=SpanKind.CLIENT,
            )
            carrier: dict[str, str] = {}
            _propagator.inject(carrier, context=set_span_in_context(span))
            header_lines = "".join(f"{name}: {value}\r\n" for name, value in carrier.items()).encode()
            attempt = Attempt(instance, lease, span, header_lines)
        exchange.tries.append(attempt)
        return attempt

    def end_attempt(
        self, attempt: Attempt, exchange: Exchange, status: int | None = None, error: str | None = None
    ) -> None:
        """The attempt let go of its instance: with the upstream's status, or the error that ended it.

        Only the bookkeeping the next request depends on happens now; its span ends in `finish`.
        """
        attempt.ended_ns = time.time_ns()
        attempt.status, attempt.error = status, error
        attempt.instance.in_flight -= 1
        attempt.cost_usd = self.ledger.end(attempt.lease, attempt.instance.id)
        exchange.cost_usd += attempt.cost_usd
        model = exchange.model if exchange.served else ""
        outcome = CANCELLED if error == CANCELLED else "failed" if _failed(attempt) else "ok"
        self.request_metrics.child(self.request_metrics.attempts, model, attempt.instance.pool, outcome).inc()

    def finish(self, exchange: Exchange) -> None:
        """The request is over (answered, failed or abandoned): record it everywhere, end its span."""
        now = time.monotonic()
        pool = exchange.instance.pool if exchange.instance is not None else ""
        model = exchange.model if exchange.served else ""
        usage = exchange.usage or Usage()
        duration = now - exchange.arrived
        ttft, tpot = _stream_latencies(exchange, now, usage.completion_tokens)
        queue_wait = None if exchange.dispatched_at is None else exchange.dispatched_at - exchange.arrived
        self._record_metrics(exchange, model, pool, usage, duration, ttft, tpot, queue_wait)
        span = exchange.span
        if not self.feed.wanted and not span.is_recording():
            return

        attributes: dict[str, Any] = {
            semconv.GEN_AI_OPERATION_NAME: exchange.operation,
            semconv.GEN_AI_REQUEST_MODEL: exchange.model,
            semconv.HTTP_RESPONSE_STATUS_CODE: exchange.status,
            semconv.THRIFTY_STREAM: exchange.streaming,
            semconv.THRIFTY_DURATION_S: duration,
            semconv.THRIFTY_ATTEMPTS: exchange.attempts,
            semconv.THRIFTY_RETRIES: max(exchange.attempts - 1, 0),
            semconv.THRIFTY_COST_USD: exchange.cost_usd,
        }
        if exchange.max_tokens is not None:
            attributes[semconv.GEN_AI_REQUEST_MAX_TOKENS] = exchange.max_tokens
        if exchange.usage is not None:
            attributes[semconv.GEN_AI_USAGE_INPUT_TOKENS] = usage.prompt_tokens
            attributes[semconv.GEN_AI_USAGE_OUTPUT_TOKENS] = usage.completion_tokens
        facts = self.pools.get(pool)
        if exchange.instance is not None and facts is not None:
            attributes |= {
                semconv.THRIFTY_POOL: pool,
                semconv.THRIFTY_INSTANCE: exchange.instance.id,
                semconv.THRIFTY_ACCELERATOR: facts.accelerator,
                semconv.THRIFTY_QUANTIZATION: facts.variant,
                semconv.THRIFTY_PRICE_USD_PER_HOUR: facts.usd_per_hour,
                semconv.GEN_AI_PROVIDER_NAME: facts.engine,
            }
        for key, value in ((semconv.THRIFTY_TTFT_S, ttft), (semconv.THRIFTY_TPOT_S, tpot)):
            if value is not None:
                attributes[key] = value
        if queue_wait is not None:
            attributes[semconv.THRIFTY_QUEUE_WAIT_S] = queue_wait
        if exchange.status >= 500:
            attributes[semconv.ERROR_TYPE] = str(exchange.status)
        end_ns = exchange.arrived_ns + int(duration * 1e9)
        if self.feed.wanted:
            self.feed.publish(_record(exchange, attributes, end_ns))
        if not span.is_recording():
            return
        if exchange.status >= 500:
            span.set_status(Status(StatusCode.ERROR))
        if exchange.model:
            span.update_name(semconv.span_name(exchange.operation, exchange.model))
        for attempt in exchange.tries:
            if attempt.span.is_recording():
                _end_attempt_span(attempt)
        span.set_attributes(attributes)
        span.end(end_time=end_ns)

    def _record_metrics(
        self,
        exchange: Exchange,
        model: str,
        pool: str,
        usage: Usage,
        duration: float,
        ttft: float | None,
        tpot: float | None,
        queue_wait: float | None,
    ) -> None:
        m = self.request_metrics
        m.child(m.requests, model, pool, str(exchange.status)).inc()
        m.child(m.duration, model, pool).observe(duration)
        if usage.prompt_tokens:
            m.child(m.input_tokens, model, pool).inc(usage.prompt_tokens)
        if usage.completion_tokens:
            m.child(m.output_tokens, model, pool).inc(usage.completion_tokens)
            self.ledger.output_tokens(pool, usage.completion_tokens)
        if exchange.cost_usd:
            m.child(m.cost, model, pool).inc(exchange.cost_usd)
        if ttft is not None:
            m.child(m.ttft, model, pool).observe(ttft)
        if tpot is not None:
            m.child(m.tpot, model, pool).observe(tpot)
        if queue_wait is not None:
            m.child(m.queue_wait, model, pool).observe(queue_wait)

    # --- scraped state ---

    def _scrape_targets(self) -> list[ScrapeTarget]:
        return [
            ScrapeTarget(instance.pool, instance.id, instance.url)
            for name, provider in self.fleet.providers.items()
            if self.pools[name].engine == "vllm"
            for instance in provider.instances
            if instance.state in _SCRAPED_STATES and instance.url
        ]

    def _collect_pools(self) -> Iterator[Metric]:
        providers = sorted(self.fleet.providers.items())
        yield metrics.POOL_INFO.family(
            ((name, f.model, f.accelerator, f.variant, f.engine), 1.0) for name, f in sorted(self.pools.items())
        )
        yield metrics.POOL_PRICE.family(((name,), f.usd_per_hour) for name, f in sorted(self.pools.items()))
        yield metrics.POOL_INSTANCES.family(
            ((name, str(state)), float(sum(i.state is state for i in provider.instances)))
            for name, provider in providers
            for state in InstanceState
            if state is not InstanceState.STOPPED
        )
        yield metrics.POOL_TARGET.family(((name,), float(provider.target)) for name, provider in providers)
        routes = sorted(self.router.pools.items())
        yield metrics.POOL_WEIGHT.family(((name,), route.weight) for name, route in routes)
        yield metrics.POOL_EXCLUDED.family(((name,), float(route.excluded is not None)) for name, route in routes)
        yield metrics.POOL_IN_FLIGHT.family(
            ((name,), float(sum(i.in_flight for i in provider.instances))) for name, provider in providers
        )
        yield metrics.SLO_TTFT.family(((m.name,), m.slo.ttft_p95_ms / 1000) for m in self.config.models)
        yield metrics.SLO_TPOT.family(((m.name,), m.slo.tpot_p95_ms / 1000) for m in self.config.models)


def _failed(attempt: Attempt) -> bool:
    """The instance's fault: an error other than the client leaving, or a 5xx."""
    return attempt.error not in (None, CANCELLED) or (attempt.status is not None and attempt.status >= 500)


def _end_attempt_span(attempt: Attempt) -> None:
    instance = attempt.instance
    address = urlsplit(instance.url)
    attributes: dict[str, Any] = {
        semconv.THRIFTY_POOL: instance.pool,
        semconv.THRIFTY_INSTANCE: instance.id,
        semconv.SERVER_ADDRESS: address.hostname or "",
        semconv.THRIFTY_COST_USD: attempt.cost_usd,
    }
    if address.port is not None:
        attributes[semconv.SERVER_PORT] = address.port
    if attempt.status is not None:
        attributes[semconv.HTTP_RESPONSE_STATUS_CODE] = attempt.status
    if attempt.error is not None or _failed(attempt):
        attributes[semconv.ERROR_TYPE] = attempt.error or str(attempt.status)
    if _failed(attempt):
        attempt.span.set_status(Status(StatusCode.ERROR, attempt.error))
    attempt.span.set_attributes(attributes)
    attempt.span.end(end_time=attempt.ended_ns or None)


def _trace_headers(headers: Iterable[tuple[bytes, bytes]]) -> dict[str, str]:
    """The client's W3C trace context headers, if it sent any (most requests don't)."""
    return {
        name.decode("latin-1"): value.decode("latin-1")
        for name, value in headers
        if name in (b"traceparent", b"tracestate")
    }


def _record(exchange: Exchange, attributes: dict[str, Any], end_ns: int) -> RequestRecord:
    """The request's record, read from its span attributes exactly as a span received over OTLP is."""
    context = exchange.span.get_span_context()
    ids = (f"{context.trace_id:032x}", f"{context.span_id:016x}") if context.is_valid else ("", "")
    return from_attributes(
        attributes,
        trace_id=ids[0],
        span_id=ids[1],
        start=exchange.arrived_ns / 1e9,
        end=end_ns / 1e9,
    )


def _stream_latencies(exchange: Exchange, now: float, output_tokens: int) -> tuple[float | None, float | None]:
    """TTFT and TPOT as vLLM's benchmarks define them; only a stream shows when its first token came."""
    if not exchange.streaming or exchange.first_token_at is None:
        return None, None
    ttft = exchange.first_token_at - exchange.arrived
    tpot = (now - exchange.first_token_at) / (output_tokens - 1) if output_tokens > 1 else None
    return ttft, tpot


def _engine_name(pool: PoolConfig) -> str:
    return "vllm" if isinstance(pool.engine, VllmEngineConfig) else "openai"
