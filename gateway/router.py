"""Request routing: a pool by traffic weight, then an instance by load.

Pools are chosen at random in proportion to their weight among the model's pools that have a
routable instance (ready and not ejected). Within the pool an instance policy picks one; the
policies register by name and `choose` is pure and synchronous.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from runtimes.instance import Instance

__all__ = ["INSTANCE_POLICIES", "InstancePolicy", "PoolRoute", "Router"]

INSTANCE_POLICIES: dict[str, type[InstancePolicy]] = {}


class InstancePolicy:
    """Picks one of a pool's routable instances."""

    name: ClassVar[str]

    def __init_subclass__(cls, name: str, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.name = name
        INSTANCE_POLICIES[name] = cls

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng

    def choose(self, candidates: Sequence[Instance]) -> Instance:
        raise NotImplementedError


class PowerOfTwoChoices(InstancePolicy, name="power_of_two"):
    """Two instances at random, the one with fewer requests in flight: near least-loaded, no herding."""

    def choose(self, candidates: Sequence[Instance]) -> Instance:
        if len(candidates) == 1:
            return candidates[0]
        first, second = self.rng.sample(candidates, 2)
        return first if first.in_flight <= second.in_flight else second


class LeastOutstanding(InstancePolicy, name="least_outstanding"):
    def choose(self, candidates: Sequence[Instance]) -> Instance:
        return min(candidates, key=lambda instance: instance.in_flight)


@dataclass
class PoolRoute:
    """What the router knows of a pool: its weight and where to find its instances now."""

    name: str
    model: str
    weight: float
    instances: Callable[[], list[Instance]]
    excluded: str | None = None
    """Why the pool gets no traffic whatever its weight (the quality gate), or None."""


class Router:
    def __init__(
        self,
        pools: Sequence[PoolRoute],
        *,
        eject_s: float,
        policy: str = "power_of_two",
        rng: random.Random | None = None,
    ) -> None:
        self.rng = rng or random.Random()
        self.policy = INSTANCE_POLICIES[policy](self.rng)
        self.eject_s = eject_s
        self.pools = {pool.name: pool for pool in pools}
        self.by_model: dict[str, list[PoolRoute]] = {}
        for pool in pools:
            self.by_model.setdefault(pool.model, []).append(pool)

    def serves(self, model: str) -> bool:
        return model in self.by_model

    def set_weights(self, weights: dict[str, float]) -> None:
        """Apply new traffic weights by pool name (pools not named keep theirs)."""
        for name, weight in weights.items():
            self.pools[name].weight = max(0.0, weight)

    def has_ready(self, model: str, now: float) -> bool:
        return any(
            instance.routable(now)
            for pool in self.by_model.get(model, ())
            if not pool.excluded
            for instance in pool.instances()
        )

    def choose(self, model: str, now: float, exclude: frozenset[str] = frozenset()) -> Instance | None:
        """An instance for the next attempt of a request, skipping instances already tried."""
        candidates: list[tuple[PoolRoute, list[Instance]]] = []
        for pool in self.by_model.get(model, ()):
            if pool.weight <= 0 or pool.excluded:
                continue
            routable = [i for i in pool.instances() if i.routable(now) and i.id not in exclude]
            if routable:
                candidates.append((pool, routable))
        if not candidates:
            return None
        if len(candidates) == 1:
            instances = candidates[0][1]
        else:
            weights = [pool.weight for pool, _ in candidates]
            instances = self.rng.choices(candidates, weights=weights)[0][1]
        return self.policy.choose(instances)

    def failed(self, instance: Instance, now: float) -> None:
        """Passive ejection: skip the instance for a while, longer after each failure in a row."""
        instance.failures += 1
        instance.ejected_until = now + self.eject_s * min(2 ** (instance.failures - 1), 8)

    def succeeded(self, instance: Instance) -> None:
        if instance.failures:
            instance.failures = 0
            instance.ejected_until = 0.0
