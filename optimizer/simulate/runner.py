"""One scenario, every chosen policy, the same arrivals: the run behind `thrifty simulate`."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

# The policies register themselves on import.
from optimizer.simulate import baselines, clairvoyant, oracle, thrifty  # noqa: F401
from optimizer.simulate.metrics import PolicyResult, summarize, with_oracle_share
from optimizer.simulate.policies import POLICIES
from optimizer.simulate.scenario import Scenario
from optimizer.simulate.simulation import RunOutput, simulate
from optimizer.simulate.world import World, build_world

__all__ = ["DEFAULT_POLICIES", "ScenarioRun", "run_scenario"]

DEFAULT_POLICIES = (
    "thrifty", "best-single", "round-robin", "capacity-proportional", "melange", "clairvoyant", "oracle",
)  # fmt: skip


@dataclass(frozen=True)
class ScenarioRun:
    world: World
    outputs: dict[str, RunOutput]
    results: list[PolicyResult]
    capacity_s: float
    """Wall time spent measuring true capacities."""
    wall_s: float


def run_scenario(
    scenario: Scenario,
    *,
    policies: Sequence[str] = DEFAULT_POLICIES,
    duration_s: float | None = None,
    seed: int | None = None,
    world: World | None = None,
    progress: Callable[[str], None] | None = None,
) -> ScenarioRun:
    """Run each policy on the same world; results in the order asked, with shares of the oracle's."""
    unknown = [name for name in policies if name not in POLICIES]
    if unknown:
        raise ValueError(f"unknown policies {', '.join(unknown)}; known: {', '.join(POLICIES)}")
    started = time.perf_counter()
    world = world or build_world(scenario, duration_s=duration_s, seed=seed)
    capacity_s = 0.0
    if any(POLICIES[name].plans_on_truth for name in policies):
        measuring = time.perf_counter()
        _ = world.capacities
        capacity_s = time.perf_counter() - measuring
        if progress:
            progress(f"true capacities measured in {capacity_s:.1f}s")
    outputs: dict[str, RunOutput] = {}
    results: list[PolicyResult] = []
    for name in policies:
        output = simulate(world, POLICIES[name](world))
        outputs[name] = output
        results.append(summarize(world, output))
        if progress:
            progress(f"{name}: {len(world.arrivals)} requests in {output.wall_s:.1f}s")
    return ScenarioRun(world, outputs, with_oracle_share(results), capacity_s, time.perf_counter() - started)
