"""Grafana dashboards for thrifty, as code: `python -m observability.dashboards [DIR]` writes them.

The dashboards are declared here as plain data (boards of sections of charts, each chart a few
PromQL queries) built from the metric catalogue, then rendered to Grafana's JSON with
grafana-foundation-sdk. The SDK is a dev dependency, so it is imported only where dashboards are
rendered: the query helpers (`panel_queries`, `expand_variables`, `metric_names`), which tests
and the end-to-end checks use, work without it.

Pool-level metrics carry no `model` label; their queries keep the pools of the selected models
with `and on (pool) thrifty_pool_info{model=~"$model"}`, since an "All" pool selection is `.*`.
"""

from __future__ import annotations

import argparse
import json
import re
import string
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from observability import metrics as m
from observability.metrics import MetricDef

if TYPE_CHECKING:
    from grafana_foundation_sdk.builders import dashboard as grafana
    from grafana_foundation_sdk.builders import stat, timeseries
    from grafana_foundation_sdk.cog.builder import Builder
    from grafana_foundation_sdk.models.dashboard import DataSourceRef
    from grafana_foundation_sdk.models.dashboard import Panel as PanelModel

__all__ = [
    "DATASOURCE_UID",
    "DEFAULT_DIRECTORY",
    "PanelQuery",
    "build_dashboards",
    "expand_variables",
    "main",
    "metric_names",
    "panel_queries",
    "write_dashboards",
]

DATASOURCE_UID = "prometheus"
"""The Prometheus datasource every panel uses (deploy/grafana/provisioning/datasources/prometheus.yaml)."""
DEFAULT_DIRECTORY = Path("deploy/grafana/dashboards")
TAG = "thrifty"
REFRESH = "15s"


# ---------------------------------------------------------------------------------------------
# Dashboards as data


@dataclass(frozen=True)
class Query:
    expr: str
    legend: str
    reference: bool = False
    """A line to compare against (an objective, a fleet total, a target): drawn dashed."""


@dataclass(frozen=True)
class Chart:
    title: str
    description: str
    unit: str
    queries: tuple[Query, ...]
    kind: Literal["timeseries", "stat"] = "timeseries"
    width: int = 12
    height: int = 8
    max: float | None = None
    stacked: bool = False
    objective: float | None = None
    """Drawn as a dashed threshold line: red below, green at or above."""


@dataclass(frozen=True)
class Note:
    title: str
    description: str
    markdown: str
    width: int = 24
    height: int = 4


@dataclass(frozen=True)
class Section:
    title: str
    panels: tuple[Chart | Note, ...]
    collapsed: bool = False


@dataclass(frozen=True)
class Board:
    uid: str
    title: str
    description: str
    sections: tuple[Section, ...]


# ---------------------------------------------------------------------------------------------
# PromQL building blocks

_MODEL_AND_POOL = '{model=~"$model", pool=~"$pool"}'
_POOL = '{pool=~"$pool"}'
_SELECTED_POOLS = f'{m.POOL_INFO.name}{{model=~"$model", pool=~"$pool"}}'
_QUANTILES = (0.5, 0.95, 0.99)
_FLEET_NOTE = "All pools: ignores the model and pool filters."


def _rate(series: str, matchers: str = "") -> str:
    return f"rate({series}{matchers}[$__rate_interval])"


def _sum_rate(metric: MetricDef, by: str, matchers: str) -> str:
    return f"sum by ({by}) ({_rate(metric.name, matchers)})"


def _fleet_rate(metric: MetricDef) -> str:
    return f"sum({_rate(metric.name)})"


def _fleet_ratio(numerator: MetricDef, denominator: MetricDef) -> str:
    return f"{_fleet_rate(numerator)} / {_fleet_rate(denominator)}"


def _of_selected_pools(expr: str) -> str:
    """Keeps the pools of the selected models: pool-level metrics carry no `model` label."""
    return f"{expr} and on (pool) {_SELECTED_POOLS}"


def _pool_gauge(metric: MetricDef) -> str:
    return _of_selected_pools(f"{metric.name}{_POOL}")


def _pool_ratio(numerator: MetricDef, denominator: MetricDef) -> str:
    return _of_selected_pools(f"{_sum_rate(numerator, 'pool', _POOL)} / {_sum_rate(denominator, 'pool', _POOL)}")


def _per_hour(rate_expr: str) -> str:
    return f"{rate_expr} * 3600"


def _quantile(quantile: float, histogram: MetricDef) -> str:
    buckets = _rate(f"{histogram.name}_bucket", _MODEL_AND_POOL)
    return f"histogram_quantile({quantile}, sum by (le, model, pool) ({buckets}))"


def _quantile_queries(histogram: MetricDef) -> tuple[Query, ...]:
    return tuple(
        Query(_quantile(quantile, histogram), f"p{quantile * 100:g} " + "{{model}} / {{pool}}")
        for quantile in _QUANTILES
    )


def _slo_line(slo: MetricDef) -> Query:
    return Query(f'max by (model) ({slo.name}{{model=~"$model"}})', "objective {{model}}", reference=True)


def _slo_attainment(histogram: MetricDef, slo: MetricDef, bounds: tuple[float, ...]) -> str:
    """Share of observations in buckets at or below the model's objective.

    PromQL cannot compare a bucket's `le` label with a number, so every bucket bound at or below
    the objective becomes a series labelled with that `le` (formatted as prometheus_client writes
    it); the bucket counters that match are cumulative, so the largest is the count within the
    objective. The 1e-9 absorbs float noise in an objective converted from milliseconds.
    """
    within_objective = " or ".join(
        f'label_replace({slo.name} >= {bound!r} - 1e-9, "le", "{bound!r}", "", "")' for bound in map(float, bounds)
    )
    buckets = f"sum by (model, pool, le) ({_rate(f'{histogram.name}_bucket', _MODEL_AND_POOL)})"
    total = f"sum by (model, pool) ({_rate(f'{histogram.name}_count', _MODEL_AND_POOL)})"
    return f"max by (model, pool) ({buckets} and on (model, le) ({within_objective})) / {total}"


# ---------------------------------------------------------------------------------------------
# Charts used on more than one board


def _tokens_per_usd_by_pool() -> Chart:
    return Chart(
        "Output tokens per $ by pool (rolling window)",
        "Output tokens per dollar of instance cost over the gateway's rolling cost window "
        f"({m.COST_WINDOW.name}); dashed: the whole fleet. Higher is better.",
        "short",
        (
            Query(_pool_gauge(m.POOL_TOKENS_PER_USD), "{{pool}}"),
            Query(m.FLEET_TOKENS_PER_USD.name, "fleet", reference=True),
        ),
        width=8,
    )


def _cost_rate_by_pool() -> Chart:
    return Chart(
        "Cost by pool ($/hour)",
        "What each pool's instances cost now: instances x price per instance-hour. Dashed: all pools together.",
        "currencyUSD",
        (
            Query(_pool_gauge(m.POOL_COST_RATE), "{{pool}}"),
            Query(f"sum({m.POOL_COST_RATE.name})", "fleet", reference=True),
        ),
        width=8,
    )


def _price_by_pool() -> Chart:
    return Chart(
        "Price per instance-hour by pool",
        "What one instance of each pool costs per hour: the price the optimizer weighs tokens against.",
        "currencyUSD",
        (Query(_pool_gauge(m.POOL_PRICE), "{{pool}}"),),
        width=8,
    )


# ---------------------------------------------------------------------------------------------
# Fleet economics


def _economics() -> Board:
    return Board(
        "thrifty-economics",
        "thrifty: Fleet economics",
        "What the fleet costs and what it produces: tokens per second, dollars per hour, tokens per dollar.",
        (_fleet_headline(), _throughput_and_cost(), _efficiency(), _idle_and_attributed_cost()),
    )


def _headline(title: str, description: str, unit: str, expr: str) -> Chart:
    return Chart(title, f"{description} {_FLEET_NOTE}", unit, (Query(expr, title),), kind="stat", width=4, height=4)


def _fleet_headline() -> Section:
    idle, cost = m.POOL_IDLE_COST.name, m.POOL_COST.name
    return Section(
        "Fleet",
        (
            _headline(
                "Fleet cost ($/hour)", "What all instances cost now.", "currencyUSD", f"sum({m.POOL_COST_RATE.name})"
            ),
            _headline("Output tokens/s", "Tokens generated per second.", "short", _fleet_rate(m.OUTPUT_TOKENS)),
            _headline(
                "Output tokens per $",
                f"Over the rolling cost window ({m.COST_WINDOW.name}).",
                "short",
                m.FLEET_TOKENS_PER_USD.name,
            ),
            _headline(
                "$ per million output tokens",
                f"Over the rolling cost window ({m.COST_WINDOW.name}).",
                "currencyUSD",
                m.FLEET_USD_PER_MTOK.name,
            ),
            _headline(
                "Idle share of cost",
                "Share of the cost over the dashboard's time range paid while instances had no request.",
                "percentunit",
                f"sum(increase({idle}[$__range])) / sum(increase({cost}[$__range]))",
            ),
            _headline(
                "Spend over the time range",
                "Instance cost accrued over the dashboard's time range.",
                "currencyUSD",
                f"sum(increase({cost}[$__range]))",
            ),
        ),
    )


def _throughput_and_cost() -> Section:
    return Section(
        "Throughput and cost by pool",
        (
            Chart(
                "Output tokens/s by pool",
                f"Tokens generated per second, stacked by pool: rate of {m.OUTPUT_TOKENS.name}.",
                "short",
                (Query(_sum_rate(m.OUTPUT_TOKENS, "pool", _MODEL_AND_POOL), "{{pool}}"),),
                width=8,
                stacked=True,
            ),
            Chart(
                "Input tokens/s by pool",
                "Prompt tokens of answered requests per second, stacked by pool: prefill work the output "
                "tokens per dollar do not show.",
                "short",
                (Query(_sum_rate(m.INPUT_TOKENS, "pool", _MODEL_AND_POOL), "{{pool}}"),),
                width=8,
                stacked=True,
            ),
            _cost_rate_by_pool(),
        ),
    )


def _efficiency() -> Section:
    from_counters = f"{_sum_rate(m.OUTPUT_TOKENS, 'pool', _MODEL_AND_POOL)} / {_sum_rate(m.POOL_COST, 'pool', _POOL)}"
    return Section(
        "Efficiency",
        (
            _tokens_per_usd_by_pool(),
            Chart(
                "Output tokens per $ by pool (from counters)",
                "rate(output tokens) / rate(pool cost) over $__rate_interval: the same ratio as the rolling "
                "gauges, computed by Prometheus, so it reacts as fast as the rate window. Dashed: the fleet.",
                "short",
                (
                    Query(from_counters, "{{pool}}"),
                    Query(_fleet_ratio(m.OUTPUT_TOKENS, m.POOL_COST), "fleet", reference=True),
                ),
                width=8,
            ),
            Chart(
                "$ per million output tokens by pool",
                "Dollars of instance cost per million output tokens over the rolling cost window. "
                "Dashed: the fleet. Lower is better.",
                "currencyUSD",
                (
                    Query(_pool_gauge(m.POOL_USD_PER_MTOK), "{{pool}}"),
                    Query(m.FLEET_USD_PER_MTOK.name, "fleet", reference=True),
                ),
                width=8,
            ),
        ),
    )


def _idle_and_attributed_cost() -> Section:
    return Section(
        "Idle and attributed cost",
        (
            Chart(
                "Idle cost by pool ($/hour)",
                "Cost accrued while an instance had no request, as dollars per hour: "
                f"rate of {m.POOL_IDLE_COST.name} x 3600.",
                "currencyUSD",
                (Query(_of_selected_pools(_per_hour(_sum_rate(m.POOL_IDLE_COST, "pool", _POOL))), "{{pool}}"),),
                width=8,
            ),
            Chart(
                "Idle share of cost by pool",
                "rate(idle cost) / rate(cost): the share of what a pool costs that buys no tokens. "
                "Dashed: the whole fleet.",
                "percentunit",
                (
                    Query(_pool_ratio(m.POOL_IDLE_COST, m.POOL_COST), "{{pool}}"),
                    Query(_fleet_ratio(m.POOL_IDLE_COST, m.POOL_COST), "fleet", reference=True),
                ),
                width=8,
                max=1,
            ),
            Chart(
                "Attributed cost by model and pool ($/hour)",
                "Instance cost attributed to requests (busy time shared between concurrent requests), "
                "as dollars per hour, stacked.",
                "currencyUSD",
                (
                    Query(
                        _per_hour(_sum_rate(m.REQUEST_COST, "model, pool", _MODEL_AND_POOL)),
                        "{{model}} / {{pool}}",
                    ),
                ),
                width=8,
                stacked=True,
            ),
        ),
    )


# ---------------------------------------------------------------------------------------------
# Latency and SLO


def _latency() -> Board:
    return Board(
        "thrifty-latency",
        "thrifty: Latency & SLO",
        "Time to first token and per output token against each model's objectives; duration, queueing, traffic.",
        (
            _objective_section("Time to first token", "TTFT", m.TTFT, m.SLO_TTFT, m.TTFT_BUCKETS),
            _objective_section("Time per output token", "TPOT", m.TPOT, m.SLO_TPOT, m.TPOT_BUCKETS),
            _duration_and_queueing(),
            _traffic(),
        ),
    )


def _objective_section(
    title: str, short: str, histogram: MetricDef, slo: MetricDef, bounds: tuple[float, ...]
) -> Section:
    return Section(
        title,
        (
            Chart(
                f"{short} p50 / p95 / p99 vs objective",
                f"{histogram.help} Quantiles by model and pool from {histogram.name}, interpolated within "
                f"buckets; dashed: the model's p95 objective ({slo.name}).",
                "s",
                (*_quantile_queries(histogram), _slo_line(slo)),
                width=16,
            ),
            Chart(
                f"{short} SLO attainment",
                f"Share of {short} observations at or below the model's objective ({slo.name}), over "
                "$__rate_interval. PromQL cannot compare a bucket's `le` label with a number, so the query "
                "turns each bucket bound at or below the objective into a series labelled with that `le`, keeps "
                "the bucket counters that match, takes the largest (buckets are cumulative) and divides by the "
                "count. Exact when the objective is a bucket bound, otherwise a lower bound; empty when the "
                "objective is below the first bucket. The objective is a p95: met while above the 95% line.",
                "percentunit",
                (Query(_slo_attainment(histogram, slo, bounds), "{{model}} / {{pool}}"),),
                width=8,
                max=1,
                objective=0.95,
            ),
        ),
    )


def _duration_and_queueing() -> Section:
    return Section(
        "Duration and queueing",
        (
            Chart(
                "Request duration p50 / p95 / p99",
                f"End to end, arrival to last byte, by model and pool ({m.DURATION.name}).",
                "s",
                _quantile_queries(m.DURATION),
            ),
            Chart(
                "Gateway queue wait p50 / p95 / p99",
                f"Arrival to the first dispatch to an instance ({m.QUEUE_WAIT.name}): time spent waiting "
                "for capacity in the gateway, before any engine queue.",
                "s",
                _quantile_queries(m.QUEUE_WAIT),
            ),
        ),
    )


def _traffic() -> Section:
    return Section(
        "Traffic",
        (
            Chart(
                "Requests/s by status",
                "Answered requests per second by HTTP status, stacked (499: the client went away).",
                "reqps",
                (Query(_sum_rate(m.REQUESTS, "status", _MODEL_AND_POOL), "{{status}}"),),
                stacked=True,
            ),
            Chart(
                "Upstream attempts/s by pool and outcome",
                f"{m.ATTEMPTS.help} Per second, by pool; a request retried on another instance counts "
                "one attempt per try.",
                "reqps",
                (Query(_sum_rate(m.ATTEMPTS, "pool, outcome", _MODEL_AND_POOL), "{{pool}} {{outcome}}"),),
            ),
        ),
    )


# ---------------------------------------------------------------------------------------------
# Pools and instances


def _pools() -> Board:
    return Board(
        "thrifty-pools",
        "thrifty: Pools & instances",
        "Instances, load and engine state per pool; the gateway host's CPU, GPU and TPU use.",
        (_instances(), _engines_by_pool(), _host(), _engines_by_instance()),
    )


def _instances() -> Section:
    instances = m.POOL_INSTANCES.name
    return Section(
        "Instances",
        (
            Chart(
                "Instances by state",
                "Instances of each pool by state (starting, ready, draining, failed), stacked.",
                "short",
                (Query(_of_selected_pools(f"sum by (pool, state) ({instances}{_POOL})"), "{{pool}} {{state}}"),),
                width=8,
                stacked=True,
            ),
            Chart(
                "Target vs actual instances",
                "The instance count the provider moves toward (dashed) against the instances starting or "
                "ready; draining instances are on their way out and do not count toward the target.",
                "short",
                (
                    Query(_pool_gauge(m.POOL_TARGET), "{{pool}} target", reference=True),
                    Query(
                        _of_selected_pools(f'sum by (pool) ({instances}{{pool=~"$pool", state=~"starting|ready"}})'),
                        "{{pool}} starting+ready",
                    ),
                ),
                width=8,
            ),
            Chart(
                "Requests in flight by pool",
                "Requests on the pool's instances now, as the gateway counts them.",
                "short",
                (Query(_pool_gauge(m.POOL_IN_FLIGHT), "{{pool}}"),),
                width=8,
            ),
        ),
    )


def _engines_by_pool() -> Section:
    up = f"{m.ENGINE_UP.name}{_POOL}"
    return Section(
        "Engines by pool",
        (
            Chart(
                "Engine queue depth by pool",
                "Requests queued inside the engines (vllm:num_requests_waiting), summed over the pool.",
                "short",
                (Query(_pool_gauge(m.POOL_ENGINE_WAITING), "{{pool}}"),),
                width=6,
            ),
            Chart(
                "Engine requests running by pool",
                "Requests the engines are running (vllm:num_requests_running), summed over the pool.",
                "short",
                (Query(_pool_gauge(m.POOL_ENGINE_RUNNING), "{{pool}}"),),
                width=6,
            ),
            Chart(
                "KV-cache use by pool",
                "KV-cache blocks in use, mean over the pool's engines (vllm:kv_cache_usage_perc).",
                "percentunit",
                (Query(_pool_gauge(m.POOL_KV_USAGE), "{{pool}}"),),
                width=6,
                max=1,
            ),
            Chart(
                "Engines up by pool",
                "Engines whose last metrics scrape worked, against the engines scraped (dashed).",
                "short",
                (
                    Query(_of_selected_pools(f"sum by (pool) ({up})"), "{{pool}} up"),
                    Query(_of_selected_pools(f"count by (pool) ({up})"), "{{pool}} scraped", reference=True),
                ),
                width=6,
            ),
        ),
    )


def _host() -> Section:
    return Section(
        "Host",
        (
            Chart(
                "Device utilization",
                "Busy share of the gateway host's CPU cores, GPUs (NVML) and TPU chips (tpu-info). The GPU "
                "and TPU series exist only on hosts that have them, so they share this panel with the CPU.",
                "percentunit",
                (
                    Query(m.HOST_CPU.name, "CPU"),
                    Query(m.GPU_UTILIZATION.name, "GPU {{gpu}} {{name}}"),
                    Query(m.TPU_DUTY_CYCLE.name, "TPU {{chip}}"),
                ),
                max=1,
            ),
            Chart(
                "Device memory",
                "Memory in use against the total (dashed): host RAM, GPU memory (NVML), TPU HBM (tpu-info). "
                "The GPU and TPU series exist only on hosts that have them.",
                "bytes",
                (
                    Query(m.HOST_MEMORY_USED.name, "host used"),
                    Query(m.HOST_MEMORY_TOTAL.name, "host total", reference=True),
                    Query(m.GPU_MEMORY_USED.name, "GPU {{gpu}} used"),
                    Query(m.GPU_MEMORY_TOTAL.name, "GPU {{gpu}} total", reference=True),
                    Query(m.TPU_MEMORY_USED.name, "TPU {{chip}} used"),
                    Query(m.TPU_MEMORY_TOTAL.name, "TPU {{chip}} total", reference=True),
                ),
            ),
        ),
    )


def _instance_chart(title: str, metric: MetricDef, unit: str, max_value: float | None = None) -> Chart:
    return Chart(
        title,
        f"{metric.help} One line per engine instance.",
        unit,
        (Query(_pool_gauge(metric), "{{pool}} / {{instance}}"),),
        width=6,
        max=max_value,
    )


def _engines_by_instance() -> Section:
    # Collapsed: one line per instance is detail, and it is only queried when opened.
    return Section(
        "Engines by instance",
        (
            _instance_chart("Engine queue depth by instance", m.ENGINE_WAITING, "short"),
            _instance_chart("Engine requests running by instance", m.ENGINE_RUNNING, "short"),
            _instance_chart("KV-cache use by instance", m.ENGINE_KV_USAGE, "percentunit", max_value=1),
            _instance_chart("Engine up by instance", m.ENGINE_UP, "short", max_value=1),
        ),
        collapsed=True,
    )


# ---------------------------------------------------------------------------------------------
# Optimizer


def _optimizer() -> Board:
    requests = m.REQUESTS.name
    served = f'{requests}{{model=~"$model", pool=~"$pool", pool!=""}}'
    per_model = f'{requests}{{model=~"$model", pool!=""}}'
    observed_share = (
        f"sum by (model, pool) ({_rate(served)}) / on (model) group_left sum by (model) ({_rate(per_model)})"
    )
    return Board(
        "thrifty-optimizer",
        "thrifty: Optimizer",
        "What the optimizer steers (traffic weights, instance targets) and the economics it steers by.",
        (
            Section(
                "Optimizer",
                (
                    Note(
                        "The optimizer's plans",
                        "Placeholder for the optimizer's plan and decision panels.",
                        "The optimizer is being built next: panels for its plans and the reason behind each "
                        "change land with it. Until then this row shows what it will steer: traffic weights "
                        "and instance targets per pool.",
                    ),
                    Chart(
                        "Traffic weight by pool",
                        "The pool's traffic weight within its model, as the router uses it now.",
                        "short",
                        (Query(_pool_gauge(m.POOL_WEIGHT), "{{pool}}"),),
                        width=8,
                    ),
                    Chart(
                        "Observed traffic share by pool",
                        "Share of each model's answered requests that each pool served, to compare with "
                        "the weights (requests that never reached a pool are left out).",
                        "percentunit",
                        (Query(observed_share, "{{model}} / {{pool}}"),),
                        width=8,
                        max=1,
                    ),
                    Chart(
                        "Target instances by pool",
                        "The instance count the provider moves toward.",
                        "short",
                        (Query(_pool_gauge(m.POOL_TARGET), "{{pool}}"),),
                        width=8,
                    ),
                ),
            ),
            Section("Economics, for context", (_tokens_per_usd_by_pool(), _cost_rate_by_pool(), _price_by_pool())),
        ),
    )


_BOARDS = (_economics, _latency, _pools, _optimizer)


# ---------------------------------------------------------------------------------------------
# Rendering with grafana-foundation-sdk


def build_dashboards() -> dict[str, dict[str, Any]]:
    """File name -> dashboard JSON, as Grafana's file provisioning loads it."""
    boards = (declare() for declare in _BOARDS)
    return {f"{board.uid}.json": _render(board) for board in boards}


def write_dashboards(directory: Path) -> list[Path]:
    """Writes every dashboard to `directory`, pretty-printed with sorted keys (stable diffs)."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, dashboard in sorted(build_dashboards().items()):
        path = directory / name
        path.write_text(json.dumps(dashboard, indent=2, sort_keys=True) + "\n")
        written.append(path)
    return written


def _render(board: Board) -> dict[str, Any]:
    from grafana_foundation_sdk.builders import dashboard as grafana
    from grafana_foundation_sdk.cog.encoder import JSONEncoder
    from grafana_foundation_sdk.models.dashboard import DashboardCursorSync, DashboardLinkType

    builder = (
        grafana.Dashboard(board.title)
        .uid(board.uid)
        .description(board.description)
        .tags([TAG])
        .refresh(REFRESH)
        .time("now-1h", "now")
        .timezone("browser")
        .tooltip(DashboardCursorSync.CROSSHAIR)
        .link(
            grafana.DashboardLink("thrifty dashboards")
            .type(DashboardLinkType.DASHBOARDS)
            .tags([TAG])
            .as_dropdown(True)
            .include_vars(True)
            .keep_time(True)
        )
        .with_variable(_variable("model", "Model", f"label_values({m.POOL_INFO.name}, model)"))
        .with_variable(_variable("pool", "Pool", f'label_values({m.POOL_INFO.name}{{model=~"$model"}}, pool)'))
    )
    for section in board.sections:
        _add_section(builder, section)
    rendered: dict[str, Any] = json.loads(json.dumps(builder.build(), cls=JSONEncoder))
    _number_panels(rendered)
    return rendered


def _datasource() -> DataSourceRef:
    from grafana_foundation_sdk.models.dashboard import DataSourceRef

    return DataSourceRef(type_val="prometheus", uid=DATASOURCE_UID)


def _variable(name: str, label: str, query: str) -> grafana.QueryVariable:
    from grafana_foundation_sdk.builders import dashboard as grafana
    from grafana_foundation_sdk.models.dashboard import VariableOption, VariableRefresh, VariableSort

    return (
        grafana.QueryVariable(name)
        .label(label)
        .query(query)
        .datasource(_datasource())
        .multi(True)
        .include_all(True)
        .all_value(".*")
        .current(VariableOption(selected=True, text=["All"], value=["$__all"]))
        .refresh(VariableRefresh.ON_TIME_RANGE_CHANGED)
        .sort(VariableSort.ALPHABETICAL_ASC)
    )


def _add_section(builder: grafana.Dashboard, section: Section) -> None:
    from grafana_foundation_sdk.builders import dashboard as grafana

    row = grafana.Row(section.title)
    if section.collapsed:
        # Grafana keeps a row's own panels only when the row is collapsed.
        for panel in section.panels:
            row.with_panel(_panel(panel))
        builder.with_row(row)
        return
    builder.with_row(row)
    for panel in section.panels:
        builder.with_panel(_panel(panel))


def _panel(panel: Chart | Note) -> Builder[PanelModel]:
    if isinstance(panel, Note):
        return _note(panel)
    if panel.kind == "stat":
        return _stat(panel)
    return _timeseries(panel)


def _note(note: Note) -> Builder[PanelModel]:
    from grafana_foundation_sdk.builders import text
    from grafana_foundation_sdk.models.text import TextMode

    return (
        text.Panel()
        .title(note.title)
        .description(note.description)
        .mode(TextMode.MARKDOWN)
        .content(note.markdown)
        .span(note.width)
        .height(note.height)
    )


def _lettered(queries: tuple[Query, ...]) -> list[tuple[str, Query]]:
    """Grafana's reference ids: A, B, C..."""
    return list(zip(string.ascii_uppercase, queries, strict=False))


def _configure(panel: stat.Panel | timeseries.Panel, chart: Chart) -> None:
    """What stat and time-series panels share: text, unit, size, datasource and queries."""
    from grafana_foundation_sdk.builders import prometheus

    panel.title(chart.title).description(chart.description).unit(chart.unit).datasource(_datasource())
    panel.span(chart.width).height(chart.height)
    for ref_id, query in _lettered(chart.queries):
        panel.with_target(prometheus.Dataquery().ref_id(ref_id).expr(query.expr).legend_format(query.legend))
    if chart.max is not None:
        panel.max(chart.max)


def _stat(chart: Chart) -> Builder[PanelModel]:
    from grafana_foundation_sdk.builders import common, stat
    from grafana_foundation_sdk.builders import dashboard as grafana
    from grafana_foundation_sdk.models.common import BigValueColorMode, BigValueGraphMode
    from grafana_foundation_sdk.models.dashboard import Threshold, ThresholdsMode

    panel = (
        stat.Panel()
        .reduce_options(common.ReduceDataOptions().calcs(["lastNotNull"]).values(False))
        .graph_mode(BigValueGraphMode.AREA)
        .color_mode(BigValueColorMode.VALUE)
        # One neutral step: Grafana's default thresholds would paint any value above 80 red.
        .thresholds(grafana.ThresholdsConfig().mode(ThresholdsMode.ABSOLUTE).steps([Threshold(None, "blue")]))
    )
    _configure(panel, chart)
    return panel


def _timeseries(chart: Chart) -> Builder[PanelModel]:
    from grafana_foundation_sdk.builders import common, timeseries
    from grafana_foundation_sdk.models.common import (
        LegendDisplayMode,
        LegendPlacement,
        SortOrder,
        StackingMode,
        TooltipDisplayMode,
    )
    from grafana_foundation_sdk.models.dashboard import DynamicConfigValue

    panel = (
        timeseries.Panel()
        .min(0)
        .fill_opacity(10)
        .legend(
            common.VizLegendOptions()
            .show_legend(True)
            .display_mode(LegendDisplayMode.TABLE)
            .placement(LegendPlacement.BOTTOM)
            .calcs(["mean", "max", "lastNotNull"])
        )
        .tooltip(common.VizTooltipOptions().mode(TooltipDisplayMode.MULTI).sort(SortOrder.DESCENDING))
    )
    _configure(panel, chart)
    if chart.stacked:
        panel.stacking(common.StackingConfig().mode(StackingMode.NORMAL))
    if chart.objective is not None:
        _draw_objective(panel, chart.objective)
    dashed = DynamicConfigValue(id_val="custom.lineStyle", value={"fill": "dash", "dash": [10, 10]})
    for ref_id, query in _lettered(chart.queries):
        if query.reference:
            panel.override_by_query(ref_id, [dashed])
    return panel


def _draw_objective(panel: timeseries.Panel, objective: float) -> None:
    from grafana_foundation_sdk.builders import common
    from grafana_foundation_sdk.builders import dashboard as grafana
    from grafana_foundation_sdk.models.common import GraphTresholdsStyleMode
    from grafana_foundation_sdk.models.dashboard import Threshold, ThresholdsMode

    steps = [Threshold(None, "red"), Threshold(objective, "green")]
    panel.thresholds(grafana.ThresholdsConfig().mode(ThresholdsMode.ABSOLUTE).steps(steps))
    panel.thresholds_style(common.GraphThresholdsStyleConfig().mode(GraphTresholdsStyleMode.DASHED))


def _number_panels(dashboard: dict[str, Any]) -> None:
    """Gives every panel, rows and their nested panels included, a unique id in layout order."""
    for number, panel in enumerate(_all_panels(dashboard), start=1):
        panel["id"] = number


# ---------------------------------------------------------------------------------------------
# Reading dashboards back: queries, variables, metric names


@dataclass(frozen=True)
class PanelQuery:
    dashboard: str
    """The dashboard's uid."""
    panel: str
    """The panel's title."""
    ref_id: str
    expr: str


def _all_panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Top-level panels and rows, then each collapsed row's own panels after it."""
    for panel in dashboard.get("panels", []):
        yield panel
        yield from panel.get("panels", [])


def panel_queries(dashboard: dict[str, Any]) -> list[PanelQuery]:
    """Every target of every panel, panels inside collapsed rows included."""
    return [
        PanelQuery(dashboard["uid"], panel["title"], target["refId"], target.get("expr", ""))
        for panel in _all_panels(dashboard)
        for target in panel.get("targets", [])
    ]


_VARIABLE = re.compile(r"\$(?:\{(?P<braced>\w+)(?::[^}]*)?\}|(?P<bare>\w+))")


def expand_variables(expr: str, rate_interval: str = "1m") -> str:
    """Replaces the Grafana variables the dashboards use, so Prometheus can run the query as is.

    `$model` and `$pool` become `.*` (their "All" value); anything else that looks like a
    variable (such as `$1` in a label_replace replacement) is left alone.
    """
    values = {
        "__rate_interval": rate_interval,
        "__interval": rate_interval,
        "__range": "5m",
        "model": ".*",
        "pool": ".*",
    }

    def substitute(match: re.Match[str]) -> str:
        return values.get(match["braced"] or match["bare"], match[0])

    return _VARIABLE.sub(substitute, expr)


_STRING = re.compile(r'"(?:\\.|[^"\\])*"|\'(?:\\.|[^\'\\])*\'|`[^`]*`')
_COMMENT = re.compile(r"#[^\n]*")
_MATCHERS = re.compile(r"\{[^}]*\}")
_RANGE = re.compile(r"\[[^\]]*\]")
_LABEL_LIST = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", re.IGNORECASE)
# An identifier not glued to a number (the `m` of `5m`, the `e` of `1e-9`), and not a call.
_NAME = re.compile(r"(?<![\w.:])[A-Za-z_:][\w:]*(?![\w:])(?!\s*\()")
_KEYWORDS = frozenset(
    {"and", "or", "unless", "atan2", "bool", "by", "without", "on", "ignoring", "group_left", "group_right"}
    | {"offset", "inf", "nan"}
)


def metric_names(expr: str) -> set[str]:
    """The metric (series) names a PromQL expression selects.

    Strings, comments, label matchers, range and subquery brackets and grouping label lists are
    removed first; what remains that is a name, not a function call or a keyword, is a metric.
    """
    for pattern, replacement in (
        (_STRING, '""'),
        (_COMMENT, ""),
        (_MATCHERS, "{}"),
        (_RANGE, "[]"),
        (_LABEL_LIST, " "),
    ):
        expr = pattern.sub(replacement, expr)
    return {name for name in _NAME.findall(expr) if name.lower() not in _KEYWORDS}


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m observability.dashboards", description="Writes thrifty's Grafana dashboards."
    )
    parser.add_argument("directory", nargs="?", type=Path, default=DEFAULT_DIRECTORY)
    arguments = parser.parse_args(argv)
    for path in write_dashboards(arguments.directory):
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
