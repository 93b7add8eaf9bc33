"""What a run achieved: tokens per dollar, SLO attainment, and how restless the fleet was.

SLO attainment is the share of all requests (failed ones count as misses) whose own TTFT, TPOT,
or both, are within the model's objectives. The objectives are p95s, so a policy that keeps
them reaches about 95% or more. Tokens per dollar counts the output tokens of every served
request; the goodput variant counts only requests within both objectives. The second half's
goodput per dollar counts the requests that arrived in it against what was paid in it: where a
policy settles once the start from the scenario's fleet is behind it. Flapping is the number of
times a pool's target turned around (up then down, or down then up).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import msgspec
import numpy as np

from optimizer.simulate.simulation import SERVED, RunOutput, ScaleAction
from optimizer.simulate.world import World

__all__ = ["PolicyResult", "direction_changes", "summarize", "with_oracle_share"]


class PolicyResult(msgspec.Struct, frozen=True, kw_only=True):
    policy: str
    requests: int
    served: int
    failed: int
    output_tokens: int
    cost_usd: float
    cost_per_hour: float
    tokens_per_dollar: float | None
    goodput_tokens_per_dollar: float | None
    """Output tokens of requests within both objectives, per dollar."""
    slo_ttft: float
    slo_tpot: float
    slo_both: float
    ttft_p95_ms: float | None
    tpot_p95_ms: float | None
    scale_actions_per_hour: float
    direction_changes_per_pool_per_hour: float
    instance_hours: dict[str, float]
    second_half_goodput_tokens_per_dollar: float | None
    """Goodput tokens per dollar of the run's second half (requests that arrived in it, instances paid in it)."""
    tokens_per_dollar_vs_oracle: float | None = None
    """Tokens per dollar as a share of the oracle's (None without an oracle run)."""
    second_half_vs_oracle: float | None = None
    """The second half's goodput tokens per dollar as a share of the oracle's (None without an oracle run)."""
    wall_s: float = 0.0
    notes: list[str] = []


def summarize(world: World, run: RunOutput) -> PolicyResult:
    slo = world.scenario.slo
    served = run.status == SERVED
    outputs = world.arrivals.output
    ttft_ok = served & (run.ttft_s * 1000 <= slo.ttft_p95_ms)
    tpot_ok = served & (np.isnan(run.tpot_s) | (run.tpot_s * 1000 <= slo.tpot_p95_ms))
    both = ttft_ok & tpot_ok
    count = len(run.status)
    cost = sum(run.cost_usd.values())
    tokens = int(outputs[served].sum())
    good = int(outputs[both].sum())
    late = world.arrivals.time >= world.duration_s / 2
    good_late = int(outputs[both & late].sum())
    cost_late = run.second_half_cost_usd
    hours = world.duration_s / 3600
    ttfts = run.ttft_s[served]
    tpots = run.tpot_s[served & ~np.isnan(run.tpot_s)]
    return PolicyResult(
        policy=run.policy,
        requests=count,
        served=int(served.sum()),
        failed=count - int(served.sum()),
        output_tokens=tokens,
        cost_usd=cost,
        cost_per_hour=cost / hours if hours > 0 else 0.0,
        tokens_per_dollar=tokens / cost if cost > 0 else None,
        goodput_tokens_per_dollar=good / cost if cost > 0 else None,
        second_half_goodput_tokens_per_dollar=good_late / cost_late if cost_late > 0 else None,
        slo_ttft=_share(ttft_ok, count),
        slo_tpot=_share(tpot_ok, count),
        slo_both=_share(both, count),
        ttft_p95_ms=float(np.percentile(ttfts, 95)) * 1000 if len(ttfts) else None,
        tpot_p95_ms=float(np.percentile(tpots, 95)) * 1000 if len(tpots) else None,
        scale_actions_per_hour=len(run.actions) / hours if hours > 0 else 0.0,
        direction_changes_per_pool_per_hour=(
            direction_changes(run.actions) / len(run.pools) / hours if hours > 0 and run.pools else 0.0
        ),
        instance_hours=dict(run.instance_hours),
        wall_s=run.wall_s,
        notes=list(run.notes),
    )


def with_oracle_share(results: Sequence[PolicyResult]) -> list[PolicyResult]:
    """Each result with its tokens per dollar (and its second half's goodput) as a share of the oracle's, when
    the oracle ran."""
    oracle = next((r for r in results if r.policy == "oracle"), None)
    if oracle is None or not oracle.tokens_per_dollar:
        return list(results)
    late = oracle.second_half_goodput_tokens_per_dollar
    return [
        msgspec.structs.replace(
            r,
            tokens_per_dollar_vs_oracle=r.tokens_per_dollar / oracle.tokens_per_dollar if r.tokens_per_dollar else 0.0,
            second_half_vs_oracle=(r.second_half_goodput_tokens_per_dollar or 0.0) / late if late else None,
        )
        for r in results
    ]


def direction_changes(actions: Sequence[ScaleAction]) -> int:
    """How often a pool's target reversed direction, summed over pools."""
    last: dict[str, int] = {}
    turns = 0
    for action in actions:
        direction = int(math.copysign(1, action.after - action.before)) if action.after != action.before else 0
        if direction == 0:
            continue
        if last.get(action.pool, direction) != direction:
            turns += 1
        last[action.pool] = direction
    return turns


def _share(mask: np.ndarray, count: int) -> float:
    return float(mask.sum()) / count if count else 1.0
