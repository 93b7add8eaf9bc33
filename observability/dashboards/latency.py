"""The latency and SLO board: TTFT and TPOT against each model's objectives, duration, queueing, traffic."""

from __future__ import annotations

from observability import metrics as m
from observability.dashboards.model import Board, Chart, Query, Section
from observability.dashboards.promql import MODEL_AND_POOL, quantile_queries, slo_attainment, slo_line, sum_rate
from observability.metrics import MetricDef

__all__ = ["board"]


def board() -> Board:
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
                (*quantile_queries(histogram), slo_line(slo)),
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
                (Query(slo_attainment(histogram, slo, bounds), "{{model}} / {{pool}}"),),
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
                quantile_queries(m.DURATION),
            ),
            Chart(
                "Gateway queue wait p50 / p95 / p99",
                f"Arrival to the first dispatch to an instance ({m.QUEUE_WAIT.name}): time spent waiting "
                "for capacity in the gateway, before any engine queue.",
                "s",
                quantile_queries(m.QUEUE_WAIT),
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
                (Query(sum_rate(m.REQUESTS, "status", MODEL_AND_POOL), "{{status}}"),),
                stacked=True,
            ),
            Chart(
                "Upstream attempts/s by pool and outcome",
                f"{m.ATTEMPTS.help} Per second, by pool; a request retried on another instance counts "
                "one attempt per try.",
                "reqps",
                (Query(sum_rate(m.ATTEMPTS, "pool, outcome", MODEL_AND_POOL), "{{pool}} {{outcome}}"),),
            ),
        ),
    )
