"""The SLO-feasible capacity of one instance, from a sweep's measured levels.

Capacity is the feasible level with the highest measured request throughput; a level is
feasible when no request failed and its TTFT p95 and TPOT p95 are within the SLO. There is no
interpolation between a feasible level and the next infeasible one: latency rises steeply and
non-linearly near saturation (queueing), so a straight line between the two would overstate
what the instance sustains. A finer sweep is the way to a tighter number.
"""

from __future__ import annotations

from collections.abc import Sequence

from runtimes.profile.profile_file import SLO, Capacity, Level, LevelMetrics

__all__ = ["infeasibility", "is_feasible", "select_capacity", "tokens_per_dollar"]


def infeasibility(metrics: LevelMetrics, slo: SLO) -> str | None:
    """Why a level does not meet the SLO, or None when it does."""
    if metrics.completed == 0:
        return "no request completed"
    if metrics.failed:
        return f"{metrics.failed} requests failed"
    if metrics.p95_ttft_ms > slo.ttft_p95_ms:
        return f"TTFT p95 {metrics.p95_ttft_ms:.0f} ms > {slo.ttft_p95_ms:g} ms"
    if metrics.p95_tpot_ms > slo.tpot_p95_ms:
        return f"TPOT p95 {metrics.p95_tpot_ms:.1f} ms > {slo.tpot_p95_ms:g} ms"
    return None


def is_feasible(metrics: LevelMetrics, slo: SLO) -> bool:
    return infeasibility(metrics, slo) is None


def tokens_per_dollar(output_tokens_per_s: float, price_per_hour: float | None) -> float | None:
    """Output tokens one USD buys at this rate; None without a price (or a free one)."""
    if not price_per_hour:
        return None
    return output_tokens_per_s * 3600 / price_per_hour


def select_capacity(
    levels: Sequence[Level], slo: SLO, price_per_hour: float | None, instances: int = 1
) -> Capacity | None:
    """The best feasible level, per instance; None when no level met the SLO."""
    feasible = [level for level in levels if is_feasible(level.metrics, slo)]
    if not feasible:
        return None
    best = max(feasible, key=lambda level: level.metrics.request_throughput)
    output_per_instance = best.metrics.output_throughput / instances
    return Capacity(
        level=best.label,
        request_throughput=best.metrics.request_throughput / instances,
        output_throughput=output_per_instance,
        p95_ttft_ms=best.metrics.p95_ttft_ms,
        p95_tpot_ms=best.metrics.p95_tpot_ms,
        tokens_per_dollar=tokens_per_dollar(output_per_instance, price_per_hour),
    )
