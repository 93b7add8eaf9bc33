"""The clairvoyant: the oracle's knowledge on a fleet that moves like a real one.

It knows what the oracle knows (the TRUE capacities, and the demand of every interval to come),
but it starts from the scenario's initial fleet, and its instances take their cold start to become
ready, as any policy one could run. So the gap between it and the oracle is what moving a real
fleet costs even with perfect knowledge: the instance that has to be paid while its replacement
starts, the interval served by the pools that happen to be up. The gap between the optimizer
and the clairvoyant is what is left to learn and to guess.

Every interval it plans, like the oracle (`solve_fleet` at full utilization, switching pools only
for `SWITCH_MARGIN`), for the demand that comes once the slowest pool's cold start is over, so what
it starts now is ready when that demand comes: each class at its highest interval rate within the
next cold start's span (planning on one 15-second interval started pools for a Poisson dip).
While the planned fleet is not ready yet, the instances that are ready stay, and traffic goes to
the ready instances that will stay; once it is ready, whatever it does not need goes at once.
It is a reference, not a bound: another schedule could start sooner or keep an instance longer.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from optimizer.simulate.oracle import SWITCH_MARGIN
from optimizer.simulate.policies import Decision, Policy, PoolView, initial_fleet, split_weights
from optimizer.solver import DemandClass, highest_rates, prefer_pools, solve_fleet, solve_routing

__all__ = ["Clairvoyant"]


class Clairvoyant(Policy, name="clairvoyant"):
    def start(self) -> Decision:
        counts = initial_fleet(self.world)
        return Decision(targets=counts, weights={name: 1.0 for name, count in counts.items() if count > 0})

    def decide(self, now: float, fleet: Mapping[str, PoolView]) -> Decision | None:
        world = self.world
        if now >= world.duration_s:
            return None
        offers = world.offers()
        lead = max(pool.config.cold_start_s for pool in world.pools.values())
        demand_ahead = self._peak_ahead(now + lead, lead)
        planned = solve_fleet(demand_ahead, offers, utilization=1.0)
        if planned.status == "failed":
            raise RuntimeError(f"clairvoyant at {now:.0f}s: {'; '.join(planned.notes)}")
        running = {name for name, view in fleet.items() if view.target > 0}
        planned = prefer_pools(planned, demand_ahead, offers, running, margin=SWITCH_MARGIN)
        wanted = dict(planned.instances)
        if any(fleet[name].ready < count for name, count in wanted.items()):
            wanted = {name: max(count, fleet[name].ready) for name, count in wanted.items()}
        demand_now = world.demand_between(now, min(now + world.interval_s, world.duration_s))
        ready = {name: min(view.ready, wanted[name]) for name, view in fleet.items()}  # the instances that stay
        routing = solve_routing(demand_now, offers, ready, utilization=1.0)
        weights, class_weights = split_weights(routing.shares, demand_now, world.size_classes)
        if not weights:  # no demand now, or none the ready instances can serve: spread over what is up
            weights = {name: float(count) for name, count in ready.items() if count > 0}
        return Decision(targets=wanted, weights=weights, class_weights=class_weights)

    def _peak_ahead(self, start: float, span: float) -> list[DemandClass]:
        """Each class of the demand in [start, start + span) at its highest rate over the intervals there."""
        world = self.world
        step = world.interval_s
        start = min(start, max(0.0, world.duration_s - step))
        end = min(start + span, world.duration_s)
        times = [start + i * step for i in range(max(1, math.ceil((end - start) / step)))]
        return highest_rates(world.demand_between(at, min(at + step, world.duration_s)) for at in times)
