"""PromQL building blocks the boards' queries are made of, filtered by the `$model` and `$pool` variables.

Pool-level metrics carry no `model` label; their queries keep the pools of the selected models
with `and on (pool) thrifty_pool_info{model=~"$model"}`, since an "All" pool selection is `.*`.
"""

from __future__ import annotations

from observability import metrics as m
from observability.dashboards.model import Query
from observability.metrics import MetricDef

__all__ = [
    "MODEL_AND_POOL",
    "POOL",
    "fleet_rate",
    "fleet_ratio",
    "of_selected_pools",
    "per_hour",
    "per_minute",
    "pool_gauge",
    "pool_ratio",
    "quantile_queries",
    "rate",
    "slo_attainment",
    "slo_line",
    "sum_rate",
]

MODEL_AND_POOL = '{model=~"$model", pool=~"$pool"}'
POOL = '{pool=~"$pool"}'
_SELECTED_POOLS = f'{m.POOL_INFO.name}{{model=~"$model", pool=~"$pool"}}'
_QUANTILES = (0.5, 0.95, 0.99)


def rate(series: str, matchers: str = "") -> str:
    return f"rate({series}{matchers}[$__rate_interval])"


def sum_rate(metric: MetricDef, by: str, matchers: str) -> str:
    return f"sum by ({by}) ({rate(metric.name, matchers)})"


def fleet_rate(metric: MetricDef) -> str:
    return f"sum({rate(metric.name)})"


def fleet_ratio(numerator: MetricDef, denominator: MetricDef) -> str:
    return f"{fleet_rate(numerator)} / {fleet_rate(denominator)}"


def of_selected_pools(expr: str) -> str:
    """Keeps the pools of the selected models: pool-level metrics carry no `model` label."""
    return f"{expr} and on (pool) {_SELECTED_POOLS}"


def pool_gauge(metric: MetricDef) -> str:
    return of_selected_pools(f"{metric.name}{POOL}")


def pool_ratio(numerator: MetricDef, denominator: MetricDef) -> str:
    return of_selected_pools(f"{sum_rate(numerator, 'pool', POOL)} / {sum_rate(denominator, 'pool', POOL)}")


def per_hour(rate_expr: str) -> str:
    return f"{rate_expr} * 3600"


def per_minute(rate_expr: str) -> str:
    return f"{rate_expr} * 60"


def _quantile(quantile: float, histogram: MetricDef) -> str:
    buckets = rate(f"{histogram.name}_bucket", MODEL_AND_POOL)
    return f"histogram_quantile({quantile}, sum by (le, model, pool) ({buckets}))"


def quantile_queries(histogram: MetricDef) -> tuple[Query, ...]:
    return tuple(
        Query(_quantile(quantile, histogram), f"p{quantile * 100:g} " + "{{model}} / {{pool}}")
        for quantile in _QUANTILES
    )


def slo_line(slo: MetricDef) -> Query:
    return Query(f'max by (model) ({slo.name}{{model=~"$model"}})', "objective {{model}}", reference=True)


def slo_attainment(histogram: MetricDef, slo: MetricDef, bounds: tuple[float, ...]) -> str:
    """Share of observations in buckets at or below the model's objective.

    PromQL cannot compare a bucket's `le` label with a number, so every bucket bound at or below
    the objective becomes a series labelled with that `le` (formatted as prometheus_client writes
    it); the bucket counters that match are cumulative, so the largest is the count within the
    objective. The 1e-9 absorbs float noise in an objective converted from milliseconds.
    """
    within_objective = " or ".join(
        f'label_replace({slo.name} >= {bound!r} - 1e-9, "le", "{bound!r}", "", "")' for bound in map(float, bounds)
    )
    buckets = f"sum by (model, pool, le) ({rate(f'{histogram.name}_bucket', MODEL_AND_POOL)})"
    total = f"sum by (model, pool) ({rate(f'{histogram.name}_count', MODEL_AND_POOL)})"
    return f"max by (model, pool) ({buckets} and on (model, le) ({within_objective})) / {total}"
