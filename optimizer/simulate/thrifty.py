"""The optimizer under test: the real `optimizer.tick`, fed through the real `SignalCollector`.

It knows what the optimizer knows in production: the catalog (a roofline prior per pool), the
configured prices, bounds and cold starts, and the records of finished requests. It never sees the
true efficiencies or capacities. Like the control loop, a tick that raises is recorded and the
last plan stays.

`thrifty-profiled` is the same optimizer on a fleet whose pools were profiled before the run
(`profiling.profile_engine`: the profiler's sweep on one simulated instance, at the workload's
mean request size), as a configured `profile:` seeds it in production. Melange-style planning
assumes that knowledge; this row shows what it is worth to the optimizer.
"""

from __future__ import annotations

from collections.abc import Mapping

from observability.records import RequestRecord
from optimizer.performance import LatencyPrior, profile_prior, roofline_prior
from optimizer.policy import PoolPolicy
from optimizer.signals import PoolStatus
from optimizer.simulate.policies import Decision, Policy, PoolView, initial_fleet
from optimizer.simulate.profiling import profile_engine
from optimizer.simulate.world import PoolSetup, World
from optimizer.tick import Decision as TickDecision
from optimizer.tick import PoolSpec, Setup, initial_state, tick
from runtimes.profile.sweep import Target

__all__ = ["Thrifty", "ThriftyProfiled"]


class Thrifty(Policy, name="thrifty"):
    wants_records = True
    plans_on_truth = False

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
                prior=self.prior(pool),
            )
            for name, pool in world.pools.items()
        }
        self.setup = Setup(policy=policy, models={world.model.name: world.model}, pools=pools)
        self.collector = self.setup.collector()
        self.state = initial_state(self.setup)
        self.decisions: list[TickDecision] = []

    def prior(self, pool: PoolSetup) -> LatencyPrior:
        """What the optimizer believes of the pool before any traffic: the catalog's roofline."""
        return roofline_prior(
            self.world.shape, pool.accelerator, pool.config.variant, max_num_seqs=pool.spec.max_num_seqs
        )

    def start(self) -> Decision:
        """The scenario's initial fleet, traffic over it by configured weight until the first tick."""
        counts = initial_fleet(self.world)
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


class ThriftyProfiled(Thrifty, name="thrifty-profiled"):
    def prior(self, pool: PoolSetup) -> LatencyPrior:
        """The pool's profile, measured on one simulated instance at the workload's mean request size."""
        arrivals = self.world.arrivals
        target = Target(base_url=f"sim://{pool.name}", model=self.world.model.name, pool=pool.name,
                        accelerator=pool.config.accelerator, variant=pool.config.variant,
                        price_per_hour=pool.price_per_hour)  # fmt: skip
        profile = profile_engine(
            pool.spec,
            self.world.model.slo,
            target,
            prompt_tokens=max(1, round(float(arrivals.prompt.mean()))),
            output_tokens=max(1, round(float(arrivals.output.mean()))),
        )
        return profile_prior(profile, max_concurrency=float(pool.spec.max_num_seqs), fallback=super().prior(pool))


def _cold_start(policy: PoolPolicy | None, default: float) -> float:
    """The pool's configured time to ready, as the optimizer is told it."""
    return policy.cold_start_s if policy is not None and policy.cold_start_s is not None else default
