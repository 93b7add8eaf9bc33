"""The world of one scenario run: what every policy shares (pools, arrivals, classes, true capacities).

Built once; each policy then runs on it with its own fleet and router. True capacities are
measured lazily (the optimizer under test does not need them), once per scenario run.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import msgspec

from optimizer.config import ModelConfig
from optimizer.policy import OptimizerConfig, PoolPolicy
from optimizer.simulate.capacity import CapacitySearch, capacity_table
from optimizer.simulate.demand import ClassIndex, interval_demand, peak_demand
from optimizer.simulate.engine import EngineSpec
from optimizer.simulate.scenario import PoolScenario, Scenario
from optimizer.simulate.truth import engine_spec
from optimizer.simulate.workloads import Arrivals, generate
from optimizer.sizes import SizeClasses
from optimizer.solver import DemandClass, PoolOffer
from runtimes.accelerators import CATALOG, Accelerator
from runtimes.profile.roofline import PRESETS, ModelShape

__all__ = ["PoolSetup", "World", "build_world"]


@dataclass(frozen=True)
class PoolSetup:
    name: str
    config: PoolScenario
    accelerator: Accelerator
    price_per_hour: float
    spec: EngineSpec


class World:
    def __init__(
        self,
        scenario: Scenario,
        arrivals: Arrivals,
        *,
        seed: int,
        capacity_search: CapacitySearch | None = None,
    ) -> None:
        self.scenario = scenario
        self.seed = seed
        self.shape: ModelShape = PRESETS[scenario.model]
        self.model = ModelConfig(name=scenario.model, slo=scenario.slo)
        self.interval_s = scenario.cadence_s
        self.optimizer = _optimizer_config(scenario)
        self.size_classes = SizeClasses(self.optimizer.size_classes)
        self.arrivals = arrivals
        self.duration_s = arrivals.duration_s
        prompts, outputs = arrivals.prompt.tolist(), arrivals.output.tolist()
        self.classes = ClassIndex([self.size_classes.classify(p, o) for p, o in zip(prompts, outputs, strict=True)])
        self.buckets: list[str] = [self.size_classes.input_class(p) for p in prompts]
        self.pools: dict[str, PoolSetup] = {}
        for pool in scenario.pools:
            accelerator = CATALOG[pool.accelerator]
            price = pool.price_per_hour if pool.price_per_hour is not None else accelerator.price_per_hour
            self.pools[pool.name] = PoolSetup(
                pool.name, pool, accelerator, price, engine_spec(self.shape, accelerator, pool)
            )
        self._search = capacity_search or CapacitySearch(seed=seed)

    @functools.cached_property
    def capacities(self) -> dict[str, dict[str, float]]:
        """Pool -> size class -> true requests per second per instance within the SLO (measured)."""
        specs = {name: pool.spec for name, pool in self.pools.items()}
        return capacity_table(specs, self.classes.samples(self.arrivals), self.scenario.slo, self._search)

    @functools.cached_property
    def peak(self) -> list[DemandClass]:
        return peak_demand(self.model.name, self.classes, self.arrivals)

    def demand_between(self, start: float, end: float) -> list[DemandClass]:
        return interval_demand(self.model.name, self.classes, self.arrivals, start, end)

    def offers(self) -> list[PoolOffer]:
        """The pools with their true capacities, as the solver takes them."""
        return [
            PoolOffer(
                name=name,
                model=self.model.name,
                price_per_hour=pool.price_per_hour,
                min_instances=pool.config.min_instances,
                max_instances=pool.config.max_instances,
                capacity=self.capacities[name],
            )
            for name, pool in self.pools.items()
        ]


def build_world(
    scenario: Scenario,
    *,
    duration_s: float | None = None,
    seed: int | None = None,
    capacity_search: CapacitySearch | None = None,
) -> World:
    """Draw the run's arrivals and set up its pools (`duration_s` and `seed` override the scenario's)."""
    run_seed = scenario.seed if seed is None else seed
    arrivals = generate(scenario.workload, run_seed, duration_s)
    return World(scenario, arrivals, seed=run_seed, capacity_search=capacity_search)


def _optimizer_config(scenario: Scenario) -> OptimizerConfig:
    """The scenario's optimizer policy at the run's cadence, knowing each pool's configured cold start."""
    pools = dict(scenario.optimizer.pools)
    for pool in scenario.pools:
        known = pools.get(pool.name, PoolPolicy())
        if known.cold_start_s is None and pool.cold_start_s > 0:
            pools[pool.name] = msgspec.structs.replace(known, cold_start_s=pool.cold_start_s)
    return msgspec.structs.replace(scenario.optimizer, interval_s=scenario.cadence_s, pools=pools)
