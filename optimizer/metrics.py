"""The optimizer's Prometheus metrics, read from its loop at scrape time (names in `observability.metrics`)."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import Metric

from observability import metrics as m
from optimizer.loop import OptimizerLoop

__all__ = ["OptimizerCollector"]


class OptimizerCollector:
    def __init__(self, loop: OptimizerLoop) -> None:
        self.loop = loop

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        loop = self.loop
        yield m.OPTIMIZER_TICKS.family(((outcome,), float(n)) for outcome, n in loop.ticks.items())
        yield m.OPTIMIZER_CHANGES.family(((pool, what), float(n)) for (pool, what), n in loop.changes.items())
        decision = next((d for d in reversed(loop.decisions) if d.outcome != "failed"), None)
        if loop.decisions:
            yield m.OPTIMIZER_LAST_TICK.family([((), loop.decisions[-1].at)])
        if loop.plan is not None:
            yield m.OPTIMIZER_PLAN_COST.family([((), loop.plan.cost_per_hour)])
            if loop.plan.tokens_per_dollar is not None:
                yield m.OPTIMIZER_PLAN_TOKENS_PER_USD.family([((), loop.plan.tokens_per_dollar)])
        if decision is None:
            return
        yield m.OPTIMIZER_DEMAND.family(((d.model, d.size_class), d.rate) for d in decision.demand)
        yield m.OPTIMIZER_CAPACITY.family(
            ((p.pool, size_class), value) for p in decision.pools for size_class, value in p.capacity.items()
        )
        yield m.OPTIMIZER_CONFIDENCE.family(((p.pool,), p.confidence) for p in decision.pools)
        yield m.OPTIMIZER_PROPOSED.family(((p.pool,), float(p.proposed)) for p in decision.pools)
        yield m.OPTIMIZER_ELIGIBLE.family(((p.pool,), float(p.eligible)) for p in decision.pools)
