"""The optimizer under test: the real `optimizer.tick`, fed through the real `SignalCollector`.

It knows what the optimizer knows in production: the catalog (a roofline prior per pool), the
configured prices, bounds and cold starts, and the records of finished requests. It never sees the
true efficiencies or capacities. Like the control loop, a tick that raises is recorded and the
last plan stays.
"""

from __future__ import annotations

from collections.abc import Mapping

from observability.records import RequestRecord
from optimizer.performance import roofline_prior
from optimizer.policy import PoolPolicy
from optimizer.signals import PoolStatus
from optimizer.simulate.policies import Decision, Policy, PoolView
from optimizer.simulate.world import World
from optimizer.tick import Decision as TickDecision
from optimizer.tick import PoolSpec, Setup, initial_state, tick

__all__ = ["Thrifty"]


class Thrifty(Policy, name="thrifty"):
    wants_records = True

    def __init__(self, world: World) -> None:
        super().__init__(world)
        policy = world.optimizer
        pools = {
            name: PoolSpec(
                name=name,
                model=world.model.name,
                price_per_hour=pool.price_per_hour,
                min_instances=pool.config.min_instances,
                max_instances=pool.config.max_instances,
                cold_start_s=_cold_start(policy.pools.get(name), policy.cold_start_s),
                prior=roofline_prior(
                    world.shape, pool.accelerator, pool.config.variant, max_num_seqs=pool.spec.max_num_seqs
                ),
            )
            for name, pool in world.pools.items()
        }
        self.setup = Setup(policy=policy, models={world.model.name: world.model}, pools=pools)
        self.collector = self.setup.collector()
        self.state = initial_state(self.setup)
        self.decisions: list[TickDecision] = []

    def start(self) -> Decision:
        """The scenario's initial fleet, traffic over it by configured weight until the first tick."""
        counts = {name: pool.config.initial if pool.config.initial is not None else pool.config.min_instances
                  for name, pool in self.world.pools.items()}  # fmt: skip
        weights = {name: 1.0 for name, count in counts.items() if count > 0}
        return Decision(targets=counts, weights=weights)

    def observe(self, record: RequestRecord) -> None:
        self.collector.add(record)

    def decide(self, now: float, fleet: Mapping[str, PoolView]) -> Decision | None:
        status = {
            name: PoolStatus(ready=view.ready, starting=view.starting, target=view.target, in_flight=view.in_flight)
            for name, view in fleet.items()
        }
        signals = self.collector.snapshot(now, status)
        try:
            result = tick(now, signals, self.state, self.setup)
        except (RuntimeError, ValueError, ArithmeticError) as exc:
            self.failures.append(f"{now:.0f}s: {type(exc).__name__}: {exc}")
            return None
        self.state = result.state
        self.decisions.append(result.decision)
        plan = result.plan
        return Decision(targets=dict(plan.targets), weights=dict(plan.weights), class_weights=dict(plan.class_weights),
                        note=result.decision.summary)  # fmt: skip


def _cold_start(policy: PoolPolicy | None, default: float) -> float:
    """The pool's configured time to ready, as the optimizer is told it."""
    return policy.cold_start_s if policy is not None and policy.cold_start_s is not None else default
