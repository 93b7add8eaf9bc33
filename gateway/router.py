"""Request routing: a pool by traffic weight, then an instance by load.

Pools are chosen at random in proportion to their weight among the model's pools that have a
routable instance (ready and not ejected). The optimizer may give weights per request-size class;
a request uses the first of its classes that has weights, else the pools' own. Within the pool
an instance policy picks one; the policies register by name and `choose` is pure and synchronous.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping, Sequence
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
        self.class_weights: dict[str, dict[str, float]] = {}
        """Size class -> pool -> weight, from the optimizer's plan."""
        self.by_model: dict[str, list[PoolRoute]] = {}
        for pool in pools:
            self.by_model.setdefault(pool.model, []).append(pool)

    def serves(self, model: str) -> bool:
        return model in self.by_model

    def set_weights(
        self, weights: Mapping[str, float], class_weights: Mapping[str, Mapping[str, float]] | None = None
    ) -> None:
        """Apply new traffic weights by pool name (pools not named keep theirs), and per size class if given."""
        for name, weight in weights.items():
            if name in self.pools:
                self.pools[name].weight = max(0.0, weight)
        if class_weights is not None:
            self.class_weights = {
                size_class: {name: max(0.0, w) for name, w in shares.items() if name in self.pools}
                for size_class, shares in class_weights.items()
            }

    def has_ready(self, model: str, now: float) -> bool:
        return any(
            instance.routable(now)
            for pool in self.by_model.get(model, ())
            if not pool.excluded
            for instance in pool.instances()
        )

    def choose(
        self, model: str, now: float, exclude: frozenset[str] = frozenset(), classes: Sequence[str] = ()
    ) -> Instance | None:
        """An instance for the next attempt of a request, skipping instances already tried.

        `classes`: the request's size classes, most specific first (see `optimizer.sizes`).
        """
        by_class = next((self.class_weights[c] for c in classes if c in self.class_weights), None)
        candidates: list[tuple[float, float, list[Instance]]] = []
        for pool in self.by_model.get(model, ()):
            if pool.excluded:
                continue
            class_weight = pool.weight if by_class is None else by_class.get(pool.name, 0.0)
            if pool.weight <= 0 and class_weight <= 0:
                continue
            routable = [i for i in pool.instances() if i.routable(now) and i.id not in exclude]
            if routable:
                candidates.append((class_weight, pool.weight, routable))
        if not candidates:
            return None
        if len(candidates) == 1:
            instances = candidates[0][2]
        else:
            weights = [class_weight for class_weight, _, _ in candidates]
            if sum(weights) <= 0:  # the class's pools have no routable instance: the pool weights decide
                weights = [pool_weight for _, pool_weight, _ in candidates]
            instances = self.rng.choices(candidates, weights=weights)[0][2]
        return self.policy.choose(instances)

    def failed(self, instance: Instance, now: float) -> None:
        """Passive ejection: skip the instance for a while, longer after each failure in a row."""
        instance.failures += 1
        instance.ejected_until = now + self.eject_s * min(2 ** (instance.failures - 1), 8)

    def succeeded(self, instance: Instance) -> None:
        if instance.failures:
            instance.failures = 0
            instance.ejected_until = 0.0
