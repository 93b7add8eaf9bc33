"""The run's results as a rich table and as a JSON file (results, true capacities, time series)."""

from __future__ import annotations

from pathlib import Path

import msgspec
from rich.table import Table

from optimizer.simulate.metrics import PolicyResult
from optimizer.simulate.runner import ScenarioRun
from optimizer.simulate.simulation import Series

__all__ = ["RunReport", "build_report", "results_table", "write_json"]


class PoolReport(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    accelerator: str
    variant: str
    price_per_hour: float
    cold_start_s: float
    true_capacity: dict[str, float]
    """Size class -> requests per second per instance within the SLO (empty when no baseline ran)."""


class SeriesReport(msgspec.Struct, frozen=True, kw_only=True):
    times: list[float]
    demand: list[float]
    weights: dict[str, list[float]]
    routed: dict[str, list[float]]
    instances: dict[str, list[int]]
    ready: dict[str, list[int]]
    cost_per_hour: list[float]


class RunReport(msgspec.Struct, frozen=True, kw_only=True):
    scenario: str
    description: str
    model: str
    duration_s: float
    seed: int
    interval_s: float
    requests: int
    slo: dict[str, float]
    pools: list[PoolReport]
    results: list[PolicyResult]
    series: dict[str, SeriesReport]
    capacity_wall_s: float
    wall_s: float


def build_report(run: ScenarioRun) -> RunReport:
    world = run.world
    measured = "capacities" in world.__dict__  # a cached property: present only when a baseline needed it
    return RunReport(
        scenario=world.scenario.name,
        description=world.scenario.description,
        model=world.model.name,
        duration_s=world.duration_s,
        seed=world.seed,
        interval_s=world.interval_s,
        requests=len(world.arrivals),
        slo={"ttft_p95_ms": world.scenario.slo.ttft_p95_ms, "tpot_p95_ms": world.scenario.slo.tpot_p95_ms},
        pools=[
            PoolReport(
                name=name,
                accelerator=pool.config.accelerator,
                variant=pool.config.variant,
                price_per_hour=pool.price_per_hour,
                cold_start_s=pool.config.cold_start_s,
                true_capacity=world.capacities[name] if measured else {},
            )
            for name, pool in world.pools.items()
        ],
        results=run.results,
        series={name: _series(output.series) for name, output in run.outputs.items()},
        capacity_wall_s=run.capacity_s,
        wall_s=run.wall_s,
    )


def write_json(report: RunReport, path: str | Path) -> Path:
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(msgspec.json.format(msgspec.json.encode(report), indent=1))
    return target


def results_table(report: RunReport) -> Table:
    slo = report.slo
    table = Table(
        title=(
            f"{report.scenario}: {report.model}, {report.requests} requests over {report.duration_s / 3600:.2f} h, "
            f"SLO TTFT p95 {slo['ttft_p95_ms']:g} ms, TPOT p95 {slo['tpot_p95_ms']:g} ms"
        ),
        caption=(
            "% oracle: tokens per dollar against the oracle's. 2nd half: tokens within the SLO per dollar over the "
            "run's second half against the oracle's, where a policy settles once its start is behind it."
        ),
    )
    for column in ("policy", "tokens/$", "SLO tokens/$", "cost $", "$/h", "TTFT ok", "TPOT ok", "both ok",
                   "scale/h", "turns/pool/h", "% oracle", "2nd half"):  # fmt: skip
        table.add_column(column, justify="left" if column == "policy" else "right")
    for r in report.results:
        table.add_row(
            r.policy,
            _count(r.tokens_per_dollar),
            _count(r.goodput_tokens_per_dollar),
            f"{r.cost_usd:.2f}",
            f"{r.cost_per_hour:.2f}",
            f"{r.slo_ttft:.1%}",
            f"{r.slo_tpot:.1%}",
            f"{r.slo_both:.1%}",
            f"{r.scale_actions_per_hour:.1f}",
            f"{r.direction_changes_per_pool_per_hour:.2f}",
            "-" if r.tokens_per_dollar_vs_oracle is None else f"{r.tokens_per_dollar_vs_oracle:.0%}",
            "-" if r.second_half_vs_oracle is None else f"{r.second_half_vs_oracle:.0%}",
        )
    return table


def _count(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value / 1e6:.2f}M" if value >= 1e6 else f"{value / 1e3:.0f}k"


def _series(series: Series) -> SeriesReport:
    return SeriesReport(
        times=series.times,
        demand=series.demand,
        weights=series.weights,
        routed=series.routed,
        instances=series.instances,
        ready=series.ready,
        cost_per_hour=series.cost_per_hour,
    )
