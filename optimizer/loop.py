"""The thin driver around the tick: a clock, a sleep, the fleet's state in, the plan out, failures caught.

It applies plans through two small protocols the gateway implements (a weight sink and a
scaler), so the optimizer never imports the gateway. A tick that fails leaves the last good plan
in force and is kept as a `failed` decision.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Callable, Mapping
from typing import Protocol

from observability.records import RequestRecord
from optimizer.signals import PoolStatus
from optimizer.tick import Decision, Plan, Setup, State, initial_state, tick

__all__ = ["OptimizerLoop", "Scaler", "WeightSink"]

log = logging.getLogger(__name__)


class WeightSink(Protocol):
    def set_weights(self, weights: Mapping[str, float], class_weights: Mapping[str, Mapping[str, float]]) -> None:
        """Route by these shares from now on (pool weights, and per size class where given)."""


class Scaler(Protocol):
    async def set_target(self, pool: str, count: int) -> int:
        """Move the pool toward `count` instances (draining the ones it removes); returns the target set."""


class OptimizerLoop:
    def __init__(
        self,
        setup: Setup,
        *,
        status: Callable[[], Mapping[str, PoolStatus]],
        sink: WeightSink,
        scaler: Scaler,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.setup = setup
        self.status = status
        self.sink = sink
        self.scaler = scaler
        self.clock = clock
        self.collector = setup.collector()
        self.state: State = initial_state(setup)
        self.plan: Plan | None = None
        self.decisions: collections.deque[Decision] = collections.deque(maxlen=setup.policy.decisions_kept)
        self.ticks: collections.Counter[str] = collections.Counter()
        self.changes: collections.Counter[tuple[str, str]] = collections.Counter()

    def add(self, record: RequestRecord) -> None:
        """A finished request, from this gateway's feed, another gateway's OTLP export, or a trace file."""
        self.collector.add(record)

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.setup.policy.interval_s)
            if self.setup.policy.enabled:
                await self.step()

    async def step(self) -> Decision:
        now = self.clock()
        try:
            status = dict(self.status())
            result = tick(now, self.collector.snapshot(now, status), self.state, self.setup)
        except Exception as exc:  # a bad tick must not take routing down: the last good plan stays
            log.exception("optimizer tick failed; the last good plan stays")
            return self._keep(Decision(at=now, outcome="failed", summary=f"tick failed, last good plan kept: {exc!r}"))
        self.sink.set_weights(result.plan.weights, result.plan.class_weights)
        for pool, target in result.plan.targets.items():
            if pool in status and target != status[pool].target:
                try:
                    await self.scaler.set_target(pool, target)
                except Exception:
                    log.exception("pool %s: setting its target to %d failed", pool, target)
        self.state, self.plan = result.state, result.plan
        if result.decision.changes:
            log.info("optimizer: %s", result.decision.summary)
        return self._keep(result.decision)

    def reconfigure(self, setup: Setup) -> None:
        """A new policy (hot reload): estimates of pools that stay are kept, windows re-read if their shape changed."""
        old = self.setup
        self.setup = setup
        state, pools = self.state, setup.pools
        same_classes = old.policy.size_classes == setup.policy.size_classes
        self.state = State(
            estimates={name: state.estimates.get(name) or setup.prior_estimates[name] for name in pools},
            memory={name: memory for name, memory in state.memory.items() if name in pools},
            plan=state.plan,
            corrections={key: factor for key, factor in state.corrections.items() if key[0] in pools},
            proposed={name: count for name, count in state.proposed.items() if name in pools},
            cut_at={key: at for key, at in state.cut_at.items() if key[0] in pools},
            demand_seen=state.demand_seen if same_classes else (),
        )
        if (old.policy.window_s, old.policy.size_classes) != (setup.policy.window_s, setup.policy.size_classes):
            records = list(self.collector.records)
            self.collector = setup.collector()
            self.collector.extend(records)
        if old.policy.decisions_kept != setup.policy.decisions_kept:
            self.decisions = collections.deque(self.decisions, maxlen=setup.policy.decisions_kept)

    def note(self, outcome: str, summary: str) -> Decision:
        """Keep an event that is not a tick (a reload) among the decisions."""
        return self._keep(Decision(at=self.clock(), outcome=outcome, summary=summary))

    def _keep(self, decision: Decision) -> Decision:
        self.decisions.append(decision)
        self.ticks[decision.outcome] += 1
        self.changes.update((change.pool, change.what) for change in decision.changes)
        return decision
