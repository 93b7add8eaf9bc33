"""Replay a recorded trace through the same collector and tick as the live loop, on the trace's own clock.

The fleet's state is not in a trace, so each pool's instances are taken as the distinct instances
that served it in the window (at least its minimum) and its target as the last plan's.
"""

from __future__ import annotations

from collections.abc import Iterable

from observability.records import RequestRecord
from optimizer.signals import PoolStatus, SignalCollector
from optimizer.tick import Setup, State, TickResult, initial_state, tick

__all__ = ["replay"]


def replay(records: Iterable[RequestRecord], setup: Setup, interval_s: float | None = None) -> list[TickResult]:
    """Tick every `interval_s` (the policy's by default) of trace time, from the first request to the last."""
    ordered = sorted(records, key=lambda record: record.end)
    if not ordered:
        return []
    interval = interval_s or setup.policy.interval_s
    collector = setup.collector()
    state = initial_state(setup)
    results: list[TickResult] = []
    now = min(record.start for record in ordered) + interval
    for record in ordered:
        while record.end > now:
            results.append(_tick(now, collector, state, setup))
            state = results[-1].state
            now += interval
        collector.add(record)
    results.append(_tick(now, collector, state, setup))
    return results


def _tick(now: float, collector: SignalCollector, state: State, setup: Setup) -> TickResult:
    targets = state.plan.targets if state.plan else {}
    since = now - setup.policy.window_s
    seen: dict[str, set[str]] = {name: set() for name in setup.pools}
    for record in collector.records:
        if record.end >= since and record.pool in seen:
            seen[record.pool].add(record.instance)
    status = {}
    for name, spec in setup.pools.items():
        ready = max(len(seen[name]), spec.min_instances)
        status[name] = PoolStatus(ready=ready, target=targets.get(name, ready))
    return tick(now, collector.snapshot(now, status), state, setup)
