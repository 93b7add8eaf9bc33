"""The simulated gateway's router: a pool at random by the plan's weights, then power of two choices.

As in `gateway.router`, only pools with a positive weight and a routable instance are candidates.
The gateway sees a request's prompt but not how long its answer will be, so class weights are
looked up by the prompt-length bucket (`SizeClasses.input_class`); a bucket without weights, or
whose weighted pools have nothing routable, falls back to the per-pool weights.
"""

from __future__ import annotations

import random
from collections.abc import Mapping

from optimizer.simulate.fleet import SimInstance, SimPool

__all__ = ["Router"]


class Router:
    def __init__(self, pools: Mapping[str, SimPool], rng: random.Random) -> None:
        self.pools = pools
        self.rng = rng
        self.weights: dict[str, float] = {}
        self.class_weights: dict[str, dict[str, float]] = {}

    def set_weights(self, weights: Mapping[str, float], class_weights: Mapping[str, Mapping[str, float]]) -> None:
        self.weights = {name: max(0.0, value) for name, value in weights.items() if name in self.pools}
        self.class_weights = {
            bucket: {name: max(0.0, value) for name, value in table.items() if name in self.pools}
            for bucket, table in class_weights.items()
        }

    def choose(self, bucket: str, now: float) -> SimInstance | None:
        """An instance for a request of this prompt bucket arriving now, or None when no pool can take it."""
        table = self.class_weights.get(bucket)
        pool = self._pool(table) if table else None
        if pool is None:
            pool = self._pool(self.weights)
        if pool is None:
            return None
        instances = pool.routable
        if len(instances) == 1:
            return instances[0]
        first, second = self.rng.sample(instances, 2)
        first.engine.advance(now)
        second.engine.advance(now)
        return first if first.engine.in_flight <= second.engine.in_flight else second

    def _pool(self, table: Mapping[str, float]) -> SimPool | None:
        candidates = [(self.pools[name], weight) for name, weight in table.items() if weight > 0]
        candidates = [(pool, weight) for pool, weight in candidates if pool.routable]
        if not candidates:
            return None
        if len(candidates) == 1:
            return candidates[0][0]
        total = sum(weight for _, weight in candidates)
        point = self.rng.random() * total
        for pool, weight in candidates:
            point -= weight
            if point < 0:
                return pool
        return candidates[-1][0]
