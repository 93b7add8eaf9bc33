"""The policies a run compares, and what they hand the simulated fleet: weights and instance targets.

A policy registers itself by name (`class Oracle(Policy, name="oracle")`). The simulation asks it
for the fleet it starts with (ready at time 0), then calls `decide` every interval; `None` keeps
everything as it is. Policies that learn from traffic (`wants_records`) get every finished
request's record before the interval's decision.
"""

from __future__ import annotations

import collections
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from observability.records import RequestRecord
from optimizer.simulate.world import World
from optimizer.sizes import SizeClasses
from optimizer.solver import DemandClass

__all__ = ["POLICIES", "Decision", "Policy", "PoolView", "initial_fleet", "split_weights"]

POLICIES: dict[str, type[Policy]] = {}


@dataclass(frozen=True)
class Decision:
    targets: dict[str, int]
    """Pool -> instances wanted."""
    weights: dict[str, float]
    """Pool -> traffic weight (any scale; the router normalizes over what is routable)."""
    class_weights: dict[str, dict[str, float]] = field(default_factory=dict)
    """Prompt bucket (`in<=1024`) -> pool -> weight, where the policy splits by size."""
    note: str = ""


@dataclass(frozen=True)
class PoolView:
    """A pool as the provider reports it at a decision."""

    ready: int
    starting: int
    draining: int
    target: int
    in_flight: int


class Policy:
    name: ClassVar[str]
    instant: ClassVar[bool] = False
    """Instances are ready the moment they are asked for (the oracle's bound)."""
    wants_records: ClassVar[bool] = False
    plans_on_truth: ClassVar[bool] = True
    """It reads the true capacities (measured once per run, before any policy that needs them runs)."""

    def __init_subclass__(cls, name: str, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.name = name
        POLICIES[name] = cls

    def __init__(self, world: World) -> None:
        self.world = world
        self.failures: list[str] = []
        """Decisions that could not be made (kept going with the last one), with why."""

    def start(self) -> Decision:
        """The fleet at time 0, ready at once."""
        raise NotImplementedError

    def decide(self, now: float, fleet: Mapping[str, PoolView]) -> Decision | None:
        """The interval's decision; None keeps the last one."""
        return None

    def observe(self, record: RequestRecord) -> None:
        """A finished (or failed) request, in order of its end."""


def initial_fleet(world: World) -> dict[str, int]:
    """The instances each pool of the scenario runs at time 0 (`initial`, else its minimum)."""
    return {name: pool.config.initial if pool.config.initial is not None else pool.config.min_instances
            for name, pool in world.pools.items()}  # fmt: skip


def split_weights(
    shares: Mapping[tuple[str, str], Mapping[str, float]],
    demand: Sequence[DemandClass],
    size_classes: SizeClasses,
) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
    """Per-pool weights and per-prompt-bucket weights from a solver's class shares, weighted by each class's rate.

    The router cannot see output lengths, so the full classes' shares are merged into their prompt bucket.
    """
    overall: dict[str, float] = collections.defaultdict(float)
    buckets: dict[str, dict[str, float]] = collections.defaultdict(lambda: collections.defaultdict(float))
    for d in demand:
        for pool, share in shares.get(d.key, {}).items():
            overall[pool] += d.rate * share
            buckets[size_classes.input_of(d.size_class)][pool] += d.rate * share
    return dict(overall), {bucket: dict(table) for bucket, table in buckets.items()}
