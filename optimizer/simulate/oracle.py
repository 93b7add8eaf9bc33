"""The oracle: a bound, not a policy one could run.

Every interval it solves the fleet MILP (`solve_fleet`) on the TRUE capacities for the demand that
will really arrive in that interval, and its instances are ready the moment it asks for them.
It plans at full utilization (no headroom: it knows the demand), so its SLO attainment shows
what planning at the capacity's edge costs in latency.

It resizes the pools it runs freely, but changes which pools it runs only for a saving of at least
`SWITCH_MARGIN`: a Poisson count wobbles from one 15-second interval to the next, and chasing
the cheapest composition of each wobble pays for the drain of every instance it swaps out.
"""

from __future__ import annotations

from collections.abc import Mapping

from optimizer.simulate.policies import Decision, Policy, PoolView, split_weights
from optimizer.solver import prefer_pools, solve_fleet

__all__ = ["SWITCH_MARGIN", "Oracle"]

SWITCH_MARGIN = 0.25
"""Share of the cost a different set of pools must save to replace the pools running now."""


class Oracle(Policy, name="oracle"):
    instant = True
    _fleet: dict[str, int] | None = None

    def start(self) -> Decision:
        return self._plan(0.0)

    def decide(self, now: float, fleet: Mapping[str, PoolView]) -> Decision | None:
        if now >= self.world.duration_s:
            return None
        return self._plan(now)

    def _plan(self, now: float) -> Decision:
        world = self.world
        end = min(now + world.interval_s, world.duration_s)
        demand = world.demand_between(now, end)
        offers = world.offers()
        allocation = solve_fleet(demand, offers, utilization=1.0)
        if allocation.status == "failed":
            raise RuntimeError(f"oracle at {now:.0f}s: {'; '.join(allocation.notes)}")
        if self._fleet is not None:
            running = {name for name, count in self._fleet.items() if count > 0}
            allocation = prefer_pools(allocation, demand, offers, running, margin=SWITCH_MARGIN)
        self._fleet = dict(allocation.instances)
        weights, class_weights = split_weights(allocation.shares, demand, world.size_classes)
        if not weights:  # no demand in the interval: keep the fleet's traffic where its instances are
            weights = {name: float(count) for name, count in allocation.instances.items()}
        return Decision(targets=dict(allocation.instances), weights=weights, class_weights=class_weights)
