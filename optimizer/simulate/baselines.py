"""Fixed fleets an operator would deploy without an optimizer, each sized once for the run's peak demand.

All four plan on the TRUE capacities (measured on the engine model) at the same utilization as
the optimizer under test (`OptimizerConfig.utilization`), so they differ only in how they pick
and split the fleet:

- `best-single`: the one pool that serves the peak for the least (the most true tokens per dollar
  at that demand, whole instances counted);
- `round-robin`: equal weights over every pool that can serve every class, each sized for its share;
- `capacity-proportional`: the same number of instances of each such pool, traffic split by capacity;
- `melange`: Melange-style offline allocation: the fleet MILP (`solve_fleet`) on the peak's class mix.

A pool counts as able to serve a class when its true capacity for that class is above zero.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from optimizer.simulate.policies import Decision, Policy, split_weights
from optimizer.simulate.world import World
from optimizer.solver import DemandClass, solve_fleet

__all__ = ["BestSingle", "CapacityProportional", "Melange", "RoundRobin", "mix_capacity", "servers"]


def mix_capacity(capacity: Mapping[str, float], demand: Sequence[DemandClass]) -> float:
    """Requests per second of the demand's mix one instance sustains (0 if it cannot serve some class)."""
    total = sum(d.rate for d in demand)
    if total <= 0:
        return 0.0
    load = 0.0
    for d in demand:
        cap = capacity.get(d.size_class, 0.0)
        if cap <= 0:
            return 0.0
        load += d.rate / total / cap
    return 1.0 / load


def servers(world: World) -> dict[str, float]:
    """Pools that can serve every class of the peak, with their capacity on its mix."""
    found = {name: mix_capacity(world.capacities[name], world.peak) for name in world.pools}
    return {name: value for name, value in found.items() if value > 0}


def _count(rate: float, capacity: float, utilization: float, maximum: int) -> int:
    return min(maximum, max(1, math.ceil(rate / (capacity * utilization) - 1e-9)))


class BestSingle(Policy, name="best-single"):
    def start(self) -> Decision:
        world, utilization = self.world, self.world.optimizer.utilization
        rate = sum(d.rate for d in world.peak)
        output = sum(d.rate * d.output_tokens for d in world.peak) / rate
        candidates = servers(world)
        if not candidates:
            raise ValueError("no pool can serve every size class of the workload within the SLO")

        def count(name: str) -> int:
            return _count(rate, candidates[name], utilization, world.pools[name].config.max_instances)

        def tokens_per_dollar(name: str) -> float:
            return rate * output * 3600 / (count(name) * world.pools[name].price_per_hour)

        def covers(name: str) -> bool:
            return rate <= count(name) * candidates[name] * utilization

        ranked = sorted(candidates, key=lambda name: (-tokens_per_dollar(name), -candidates[name]))
        best = next((name for name in ranked if covers(name)), ranked[0])
        targets = {name: (count(name) if name == best else 0) for name in world.pools}
        note = f"{best} x{count(best)}: {tokens_per_dollar(best) / 1e6:.2f} M tokens/$ at the peak"
        return Decision(targets=targets, weights={best: 1.0}, note=note)


class RoundRobin(Policy, name="round-robin"):
    def start(self) -> Decision:
        world, utilization = self.world, self.world.optimizer.utilization
        candidates = servers(self.world)
        if not candidates:
            raise ValueError("no pool can serve every size class of the workload within the SLO")
        share = sum(d.rate for d in world.peak) / len(candidates)
        targets = {
            name: (_count(share, candidates[name], utilization, world.pools[name].config.max_instances)
                   if name in candidates else 0)
            for name in world.pools
        }  # fmt: skip
        return Decision(targets=targets, weights={name: 1.0 for name in candidates})


class CapacityProportional(Policy, name="capacity-proportional"):
    def start(self) -> Decision:
        world, utilization = self.world, self.world.optimizer.utilization
        candidates = servers(self.world)
        if not candidates:
            raise ValueError("no pool can serve every size class of the workload within the SLO")
        rate = sum(d.rate for d in world.peak)
        each = max(1, math.ceil(rate / (utilization * sum(candidates.values())) - 1e-9))
        targets = {
            name: (min(each, world.pools[name].config.max_instances) if name in candidates else 0)
            for name in world.pools
        }
        weights = {name: targets[name] * capacity for name, capacity in candidates.items()}
        return Decision(targets=targets, weights=weights)


class Melange(Policy, name="melange"):
    def start(self) -> Decision:
        world = self.world
        allocation = solve_fleet(world.peak, world.offers(), utilization=world.optimizer.utilization)
        if allocation.status == "failed":
            raise ValueError(f"melange: {'; '.join(allocation.notes)}")
        weights, class_weights = split_weights(allocation.shares, world.peak, world.size_classes)
        note = f"${allocation.cost_per_hour:.2f}/h ({allocation.status})"
        return Decision(targets=dict(allocation.instances), weights=weights, class_weights=class_weights, note=note)
