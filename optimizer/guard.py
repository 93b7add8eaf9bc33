"""The guard: what of the solver's proposal reaches the fleet, and when.

Traffic shares move toward the proposal by at most `weight_step` of growth per pool per tick
(traffic may leave a pool at once: moving away from trouble is never the risky direction), and
changes under the deadband are ignored, unless they open a pool to traffic or close it. Instances
are added at once when demand needs them, but for economy only when the saving repays the cold
starts within the payback horizon; they are removed one step at a time, after cooldowns, and only
once the surplus has lasted longer than a cold start costs (keeping an idle instance that long
before removing it is the ski-rental rule: never more than twice the cost of knowing the future).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace

from optimizer.policy import GuardConfig

__all__ = ["PoolMemory", "ScaleStep", "break_even_s", "guard_shares", "guard_target"]

_CLOSED = 1e-9
"""A share at or below this is no traffic (what rounding leaves of a pool moved to 0)."""


@dataclass(frozen=True)
class PoolMemory:
    """What the guard remembers of a pool between ticks."""

    last_up: float | None = None
    last_change: float | None = None
    surplus_since: float | None = None
    """Start of the surplus the pool is in, if any."""
    surplus_kept_s: float = 0.0
    """Time since `surplus_since` that the proposal kept the pool after all (a wobble, not an end)."""
    seen_at: float | None = None
    """The last tick that looked at the surplus."""
    last_direction: int = 0
    direction_changes: int = 0


@dataclass(frozen=True)
class ScaleStep:
    target: int
    memory: PoolMemory
    reason: str


def break_even_s(cold_start_s: float, price_per_hour: float, risk_usd: float) -> float:
    """How long an idle instance costs as much as starting one again (time to ready x price, plus risk)."""
    if price_per_hour <= 0:
        return cold_start_s
    return cold_start_s + risk_usd / (price_per_hour / 3600)


def guard_target(
    now: float,
    current: int,
    proposed: int,
    memory: PoolMemory,
    config: GuardConfig,
    *,
    needed: bool,
    economical: bool,
    hold_s: float,
    economy_wait: str | None = None,
) -> ScaleStep:
    """The pool's next target from its current one and the solver's proposal.

    `needed`: the fleet as it is cannot serve the demand, so growth is for capacity (never held
    back by the saving test). `economical`: the proposal's saving repays its cold starts.
    `hold_s`: how long a surplus must last before removal (the break-even and the configured delay).
    `economy_wait`: why growth for economy must wait this tick (None: it need not). Its saving rests on
    estimates: it waits for a full window of evidence, and for the last change's instances to be
    ready and observed, because several bets placed together on unchecked estimates can each go
    wrong and call for the next.
    """
    if proposed > current:
        memory = _clear_surplus(memory)
        if not needed and economy_wait:
            return ScaleStep(current, memory, f"hold at {current}: {economy_wait}")
        if not needed and not economical:
            why = f"hold at {current}: growing to {proposed} would not repay its cold start"
            return ScaleStep(current, memory, why)
        if memory.last_up is not None and now - memory.last_up < config.scale_up_cooldown_s:
            return ScaleStep(current, memory, f"hold at {current}: scale-up cooldown")
        target = min(proposed, current + config.max_scale_up)
        why = "demand exceeds capacity" if needed else "cheaper fleet"
        return ScaleStep(target, _changed(memory, now, +1, up=True), f"scale up {current} -> {target}: {why}")
    if proposed < current:
        since = memory.surplus_since if memory.surplus_since is not None else now
        memory = replace(memory, surplus_since=since, seen_at=now)
        lasted = now - since - memory.surplus_kept_s
        if lasted < hold_s:
            return ScaleStep(current, memory, f"hold at {current}: surplus for {lasted:.0f}s of {hold_s:.0f}s")
        if memory.last_change is not None and now - memory.last_change < config.scale_down_cooldown_s:
            return ScaleStep(current, memory, f"hold at {current}: scale-down cooldown")
        target = max(proposed, current - config.max_scale_down)
        why = f"scale down {current} -> {target}: surplus for {lasted:.0f}s"
        return ScaleStep(target, _changed(memory, now, -1), why)
    return ScaleStep(current, _keep(memory, now), "")


def _keep(memory: PoolMemory, now: float) -> PoolMemory:
    """A tick whose proposal keeps the pool as it is. A surplus ends once it has been kept as long as it
    lasted: near a boundary the estimates wobble, and one tick of them must not restart the wait."""
    if memory.surplus_since is None:
        return memory
    kept = memory.surplus_kept_s + (now - memory.seen_at if memory.seen_at is not None else 0.0)
    if kept >= now - memory.surplus_since - kept:
        return _clear_surplus(memory)
    return replace(memory, surplus_kept_s=kept, seen_at=now)


def _clear_surplus(memory: PoolMemory) -> PoolMemory:
    if memory.surplus_since is None:
        return memory
    return replace(memory, surplus_since=None, surplus_kept_s=0.0, seen_at=None)


def _changed(memory: PoolMemory, now: float, direction: int, *, up: bool = False) -> PoolMemory:
    flipped = memory.last_direction != 0 and memory.last_direction != direction
    # A surplus removed one step at a time stays a surplus: the next step waits for the cooldown only.
    kept = memory if direction < 0 else _clear_surplus(memory)
    return replace(
        kept,
        last_up=now if up else memory.last_up,
        last_change=now,
        last_direction=direction,
        direction_changes=memory.direction_changes + int(flipped),
    )


def guard_shares(
    old: Mapping[str, float], proposed: Mapping[str, float], blocked: set[str], config: GuardConfig
) -> dict[str, float]:
    """Move one split (shares summing to 1 over the same pools) toward the proposal within the step limits.

    Blocked pools (unhealthy, gated, without a ready instance) drop to 0 at once and their share goes where
    the proposal puts it.
    """
    pools = sorted(set(old) | set(proposed))
    target = {p: 0.0 if p in blocked else max(0.0, proposed.get(p, 0.0)) for p in pools}
    total = sum(target.values())
    if total <= 0:
        return {p: (0.0 if p in blocked else old.get(p, 0.0)) for p in pools}
    target = {p: v / total for p, v in target.items()}
    old_total = sum(max(0.0, old.get(p, 0.0)) for p in pools)
    if old_total <= 0:
        return target
    start = {p: max(0.0, old.get(p, 0.0)) / old_total for p in pools}
    freed = sum(start[p] for p in blocked if p in start)
    start = {p: 0.0 if p in blocked else start[p] + freed * target[p] for p in pools}
    if all(abs(target[p] - start[p]) < config.weight_deadband and _open(target[p]) == _open(start[p]) for p in pools):
        return start  # noise; but opening a pool to traffic (its exploration share) or closing it never is
    growth = {p: min(target[p] - start[p], config.weight_step) for p in pools if target[p] > start[p]}
    room = {p: start[p] - target[p] for p in pools if target[p] < start[p]}
    moved = min(sum(growth.values()), sum(room.values()))
    grown = sum(growth.values())
    shrink = sum(room.values())
    result = dict(start)
    for p, amount in growth.items():
        result[p] += amount * (moved / grown if grown else 0.0)
    for p, amount in room.items():
        result[p] -= amount * (moved / shrink if shrink else 0.0)
    return {p: v if _open(v) else 0.0 for p, v in result.items()}  # no rounding residue left on a closed pool


def _open(share: float) -> bool:
    return share > _CLOSED
