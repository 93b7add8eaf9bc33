"""The fleet problem as a mixed-integer program, solved by HiGHS (`optimizer.highs`).

Variables: instances n_p per pool (integer, min..max), and for each demand class k (a model and
a request-size class, D_k requests per second) the share x_kp of it sent to pool p, with s_k the
share served at all. One instance of p sustains cap_kp requests per second of class k within the
SLO, and is planned at `utilization` of that:

    sum_p x_kp = s_k                                  every class is split over its model's pools
    sum_k D_k x_kp / cap_kp <= utilization * n_p      no pool is planned past its capacity
    sum_p price_p n_p <= budget                       when there is a budget

Two stages, lexicographic: first the most output tokens served (all of them unless the budget or
the max instance counts cannot cover the demand), then the least cost per hour at that service,
which is the most tokens per dollar. With those instance counts, a linear program then sends each
class to the pools that serve it for the least instance-time x price, so spare capacity sits where
it is cheapest (a tie-break in the second stage picks among fleets of equal cost).

`solve_routing` is the same program with the instance counts fixed (those ready now): how to split
traffic over the fleet as it is, while it moves toward the plan.

`most_headroom` spends a cost margin on robustness: among the fleets within it, the one that
serves the largest uniform rise of the demand (max lambda with lambda x D_k routed within the same
capacity constraints), for the bursts and the estimate errors that no plan sees coming.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from optimizer.highs import Rows, minimize

__all__ = [
    "Allocation",
    "DemandClass",
    "PoolOffer",
    "highest_rates",
    "most_headroom",
    "on_pools",
    "prefer_pools",
    "solve_fleet",
    "solve_routing",
]

STICKINESS = 0.2
"""Discount on the serving cost of a class's incumbent pools in `solve_routing` (hysteresis)."""
_TIE_BREAK = 1e-3
"""Weight of the serving-cost tie-break against the cost of instances."""
_SERVED_SLACK = 1e-6
"""Relative slack on the first stage's optimum when the second stage keeps it."""
_ROUNDING = 1e-4
"""A served share this close to 1 is all of it."""
_MAX_HEADROOM = 100.0
"""Bound on lambda in the headroom program (a demand rise beyond it is not worth telling apart)."""
_HEADROOM_GAIN = 0.1
"""Least relative gain in headroom for `most_headroom` to change the proposal (hysteresis)."""


@dataclass(frozen=True)
class DemandClass:
    model: str
    size_class: str
    rate: float
    """Requests per second."""
    input_tokens: float
    """Mean prompt tokens per request."""
    output_tokens: float
    """Mean output tokens per request."""

    @property
    def key(self) -> tuple[str, str]:
        return self.model, self.size_class


def highest_rates(groups: Iterable[Iterable[DemandClass]]) -> list[DemandClass]:
    """Each class at its highest rate over the groups (a demand at several times), in order of first sight."""
    peak: dict[tuple[str, str], DemandClass] = {}
    for group in groups:
        for d in group:
            if d.key not in peak or d.rate > peak[d.key].rate:
                peak[d.key] = d
    return list(peak.values())


@dataclass(frozen=True)
class PoolOffer:
    name: str
    model: str
    price_per_hour: float
    min_instances: int
    max_instances: int
    capacity: Mapping[str, float]
    """Size class -> requests per second one instance sustains within the SLO; missing or 0: cannot serve it."""
    eligible: bool = True
    """False: the pool gets no traffic (unhealthy, or over its quality budget); its instances stay within min..max."""


@dataclass(frozen=True)
class Allocation:
    instances: dict[str, int]
    shares: dict[tuple[str, str], dict[str, float]]
    """(model, size class) -> pool -> share of that demand; they sum to the served share."""
    served: dict[tuple[str, str], float]
    """(model, size class) -> share of the demand served (1 unless budget or max instances fall short)."""
    cost_per_hour: float
    output_tokens_per_s: float
    """Output tokens per second served by the plan."""
    status: str
    """`optimal`, or what limited the plan (`budget`, `capacity`), or why it failed."""
    notes: list[str] = field(default_factory=list)

    @property
    def tokens_per_dollar(self) -> float | None:
        if self.cost_per_hour <= 0:
            return None
        return self.output_tokens_per_s * 3600 / self.cost_per_hour


def solve_fleet(
    demand: Sequence[DemandClass],
    pools: Sequence[PoolOffer],
    *,
    budget_per_hour: float | None = None,
    utilization: float = 1.0,
) -> Allocation:
    """Instance counts and traffic shares that serve the demand within SLO at least cost."""
    bounds = {p.name: (p.min_instances, p.max_instances) for p in pools}
    return _solve(demand, pools, bounds, budget_per_hour, utilization)


def prefer_pools(
    best: Allocation,
    demand: Sequence[DemandClass],
    pools: Sequence[PoolOffer],
    keep: Collection[str],
    *,
    margin: float,
    against_per_hour: float | None = None,
    budget_per_hour: float | None = None,
    utilization: float = 1.0,
) -> Allocation:
    """The cheapest fleet on the pools in `keep` (others at their minimum) when it serves all of the
    demand within `margin` of `against_per_hour` (default: `best`'s cost); else `best`. Hysteresis on
    which pools run: two compositions of near-equal cost would otherwise take turns as the numbers wobble."""
    if best.status != "optimal" or not keep:
        return best
    kept = on_pools(demand, pools, keep, budget_per_hour=budget_per_hour, utilization=utilization)
    against = best.cost_per_hour if against_per_hour is None else against_per_hour
    if kept.status == "optimal" and kept.cost_per_hour <= against * (1 + margin) + 1e-9:
        return kept
    return best


def on_pools(
    demand: Sequence[DemandClass],
    pools: Sequence[PoolOffer],
    keep: Collection[str],
    *,
    budget_per_hour: float | None = None,
    utilization: float = 1.0,
) -> Allocation:
    """The cheapest fleet that runs only the pools in `keep` (the others at their minimum)."""
    kept_pools = [p if p.name in keep else replace(p, max_instances=p.min_instances) for p in pools]
    return solve_fleet(demand, kept_pools, budget_per_hour=budget_per_hour, utilization=utilization)


def most_headroom(
    proposal: Allocation,
    demand: Sequence[DemandClass],
    pools: Sequence[PoolOffer],
    *,
    ceiling_per_hour: float,
    budget_per_hour: float | None = None,
    utilization: float = 1.0,
) -> Allocation:
    """The fleet costing at most `ceiling_per_hour` that serves the largest uniform rise of the demand,
    when it serves `_HEADROOM_GAIN` more than `proposal` does; else `proposal`. Its shares are the
    headroom program's, scaled back to the demand."""
    if proposal.status != "optimal":
        return proposal
    ceiling = ceiling_per_hour if budget_per_hour is None else min(ceiling_per_hour, budget_per_hour)
    bounds = {p.name: (p.min_instances, p.max_instances) for p in pools}
    found = _headroom(demand, pools, bounds, ceiling, utilization)
    if found is None:
        return proposal
    rise, allocation = found
    if allocation.instances == proposal.instances:  # the usual tick: nothing to compare
        return proposal
    fixed = {p.name: (proposal.instances.get(p.name, 0),) * 2 for p in pools}
    now = _headroom(demand, pools, fixed, math.inf, utilization)
    if now is not None and rise < now[0] * (1 + _HEADROOM_GAIN):
        return proposal
    return allocation


def _headroom(
    demand: Sequence[DemandClass],
    pools: Sequence[PoolOffer],
    instance_bounds: Mapping[str, tuple[int, int]],
    ceiling_per_hour: float,
    utilization: float,
) -> tuple[float, Allocation] | None:
    """Max lambda such that lambda x the demand fits the fleet within the ceiling (lambda >= 1), and that fleet.

    The fleet program with the served shares s_k as lambda: bounded by `_MAX_HEADROOM` instead of 1,
    at least 1, and equal across the classes."""
    demand = [d for d in demand if d.rate > 0]
    if not demand:
        return None
    layout = _Layout(pools, demand, _routes(demand, pools, instance_bounds))
    lower, upper = np.zeros(layout.size), np.full(layout.size, _MAX_HEADROOM)
    for p, pool in enumerate(pools):
        lower[p], upper[p] = instance_bounds[pool.name]
    for k in range(len(demand)):
        lower[layout.s(k)] = 1.0
    constraints = _constraints(layout, ceiling_per_hour if math.isfinite(ceiling_per_hour) else None, utilization)
    if len(demand) > 1:
        equal = np.zeros((len(demand) - 1, layout.size))
        for k in range(1, len(demand)):
            equal[k - 1, layout.s(k)], equal[k - 1, layout.s(0)] = 1.0, -1.0
        constraints.append(Rows(equal, lower=0.0, upper=0.0))
    prices = np.zeros(layout.size)
    prices[: len(pools)] = [pool.price_per_hour for pool in pools]
    objective = _TIE_BREAK * prices / max(1.0, float(prices.max()))  # of equal headroom, the cheaper
    objective[layout.s(0)] = -1.0
    found = minimize(objective, lower, upper, constraints, integral=layout.integral)
    if found.x is None:
        return None
    x = np.array(found.x)
    rise = float(x[layout.s(0)])
    for route in range(len(layout.routes)):
        x[layout.x(route)] /= rise
    for k in range(len(demand)):
        x[layout.s(k)] = 1.0  # every class served, at lambda to spare
    tokens = np.zeros(layout.size)
    for k, d in enumerate(demand):
        tokens[layout.s(k)] = d.rate * d.output_tokens
    return rise, _allocation(layout, x, tokens, [], limit=None)


def _routes(
    demand: Sequence[DemandClass], pools: Sequence[PoolOffer], instance_bounds: Mapping[str, tuple[int, int]]
) -> list[tuple[int, int]]:
    """(demand index, pool index) of each pool that may serve each class: same model, eligible, able to."""
    return [
        (k, p)
        for k, d in enumerate(demand)
        for p, pool in enumerate(pools)
        if pool.model == d.model and pool.eligible and pool.capacity.get(d.size_class, 0.0) > 0
        and instance_bounds[pool.name][1] > 0
    ]  # fmt: skip


def solve_routing(
    demand: Sequence[DemandClass],
    pools: Sequence[PoolOffer],
    instances: Mapping[str, int],
    *,
    utilization: float = 1.0,
    incumbents: Mapping[tuple[str, str], Collection[str]] | None = None,
) -> Allocation:
    """Traffic shares over the instances there are now (no budget: those are paid for already).

    `incumbents`: per (model, size class), the pools carrying it now. Traffic leaves them only for a
    pool at least `STICKINESS` cheaper per request, so near-equal pools do not trade it back and forth.
    """
    bounds = {p.name: (instances.get(p.name, 0), instances.get(p.name, 0)) for p in pools}
    return _solve(demand, pools, bounds, None, utilization, incumbents or {})


@dataclass(frozen=True)
class _Layout:
    """Where each variable sits in the vector: n_p, then the x_kp worth having, then s_k."""

    pools: Sequence[PoolOffer]
    demand: Sequence[DemandClass]
    routes: list[tuple[int, int]]
    """(demand index, pool index) of each x variable."""

    @property
    def size(self) -> int:
        return len(self.pools) + len(self.routes) + len(self.demand)

    @property
    def integral(self) -> np.ndarray:
        """True where a variable is an integer: the instance counts."""
        return np.arange(self.size) < len(self.pools)

    def x(self, route: int) -> int:
        return len(self.pools) + route

    def s(self, k: int) -> int:
        return len(self.pools) + len(self.routes) + k


def _solve(
    demand: Sequence[DemandClass],
    pools: Sequence[PoolOffer],
    instance_bounds: Mapping[str, tuple[int, int]],
    budget_per_hour: float | None,
    utilization: float,
    incumbents: Mapping[tuple[str, str], Collection[str]] | None = None,
) -> Allocation:
    demand = [d for d in demand if d.rate > 0]
    routes = _routes(demand, pools, instance_bounds)
    layout = _Layout(pools, demand, routes)
    notes: list[str] = []
    minimum_cost = sum(p.price_per_hour * instance_bounds[p.name][0] for p in pools)
    if budget_per_hour is not None and minimum_cost > budget_per_hour:
        notes.append(
            f"budget ${budget_per_hour:.2f}/h is below the minimum instances' ${minimum_cost:.2f}/h: kept the minimum"
        )
        budget_per_hour = minimum_cost

    lower = np.zeros(layout.size)
    upper = np.ones(layout.size)
    for p, pool in enumerate(pools):
        lower[p], upper[p] = instance_bounds[pool.name]
    constraints = _constraints(layout, budget_per_hour, utilization)
    tokens = np.zeros(layout.size)
    for k, d in enumerate(demand):
        tokens[layout.s(k)] = d.rate * d.output_tokens

    first = minimize(-tokens, lower, upper, constraints, integral=layout.integral)
    if first.x is None:
        return _failed(pools, instance_bounds, f"solver: {first.message}")
    best = float(tokens @ first.x)

    serving = np.zeros(layout.size)
    for route, (k, p) in enumerate(routes):
        d, pool = demand[k], pools[p]
        sticky = 1 - STICKINESS if incumbents and pool.name in incumbents.get(d.key, ()) else 1.0
        serving[layout.x(route)] = d.rate / pool.capacity[d.size_class] * pool.price_per_hour * sticky
    keep_served = Rows(tokens, lower=best * (1 - _SERVED_SLACK) - 1e-9, upper=np.inf)
    served_by = [*constraints, keep_served]
    solution = first.x
    if any(low != high for low, high in instance_bounds.values()):  # counts to choose (routing's are fixed)
        cost = _TIE_BREAK * serving
        cost[: len(pools)] = [pool.price_per_hour for pool in pools]
        second = minimize(cost, lower, upper, served_by, integral=layout.integral)
        if second.x is not None:
            solution = second.x
    # HiGHS ends a MIP within a relative gap of 1e-4 of the objective, where the tie-break weighs 1e-3 of it:
    # the split it returns is any one within the gap (a pool 6% cheaper per request lost the traffic to
    # the dearer one). With the instance counts chosen, the split is a linear program, solved exactly.
    fixed_lower, fixed_upper = lower.copy(), upper.copy()
    fixed_lower[: len(pools)] = fixed_upper[: len(pools)] = np.round(solution[: len(pools)])
    split = minimize(serving, fixed_lower, fixed_upper, served_by)
    if split.x is not None:
        solution = split.x
    limit = None
    if best < tokens.sum() * (1 - _ROUNDING):
        limit = "capacity"
        if budget_per_hour is not None:  # the budget limits when the pools' max instances would serve more
            unbudgeted = _constraints(layout, None, utilization)
            free = minimize(-tokens, lower, upper, unbudgeted, integral=layout.integral)
            if free.x is not None and float(tokens @ free.x) > best * (1 + _SERVED_SLACK) + 1e-9:
                limit = "budget"
    return _allocation(layout, solution, tokens, notes, limit=limit)


def _constraints(layout: _Layout, budget_per_hour: float | None, utilization: float) -> list[Rows]:
    pools, demand, routes = layout.pools, layout.demand, layout.routes
    split = np.zeros((len(demand), layout.size))
    load = np.zeros((len(pools), layout.size))
    for route, (k, p) in enumerate(routes):
        split[k, layout.x(route)] = 1.0
        load[p, layout.x(route)] = demand[k].rate / pools[p].capacity[demand[k].size_class]
    for k in range(len(demand)):
        split[k, layout.s(k)] = -1.0
    for p in range(len(pools)):
        load[p, p] = -utilization
    constraints = []
    if len(demand):
        constraints.append(Rows(split, lower=0.0, upper=0.0))
    constraints.append(Rows(load, lower=-np.inf, upper=0.0))
    if budget_per_hour is not None:
        prices = np.zeros(layout.size)
        prices[: len(pools)] = [pool.price_per_hour for pool in pools]
        constraints.append(Rows(prices, lower=-np.inf, upper=budget_per_hour))
    return constraints


def _allocation(
    layout: _Layout, x: np.ndarray, tokens: np.ndarray, notes: list[str], *, limit: str | None
) -> Allocation:
    pools, demand = layout.pools, layout.demand
    instances = {pool.name: round(float(x[p])) for p, pool in enumerate(pools)}
    shares: dict[tuple[str, str], dict[str, float]] = {d.key: {} for d in demand}
    for route, (k, p) in enumerate(layout.routes):
        share = float(x[layout.x(route)])
        if share > 1e-9 and instances[pools[p].name] > 0:  # a pool without instances gets only the solver's tolerance
            shares[demand[k].key][pools[p].name] = share
    served: dict[tuple[str, str], float] = {}
    for d in demand:
        total = sum(shares[d.key].values())
        if total > 1 - _ROUNDING:  # the second stage's slack and the solver's tolerances leave it a hair off 1
            shares[d.key] = {pool: value / total for pool, value in shares[d.key].items()}
            total = 1.0
        served[d.key] = total
    cost = sum(pool.price_per_hour * instances[pool.name] for pool in pools)
    status = limit or "optimal"
    if limit:
        short = [(key, share) for key, share in served.items() if share < 1 - _ROUNDING]
        unserved = [f"{model}/{size}: {1 - share:.0%}" for (model, size), share in short]
        notes.append(f"demand not fully served ({status}): " + ", ".join(unserved))
    return Allocation(
        instances=instances,
        shares=shares,
        served=served,
        cost_per_hour=cost,
        output_tokens_per_s=sum(float(tokens[layout.s(k)]) * served[d.key] for k, d in enumerate(demand)),
        status=status,
        notes=notes,
    )


def _failed(pools: Sequence[PoolOffer], bounds: Mapping[str, tuple[int, int]], message: str) -> Allocation:
    return Allocation(
        instances={p.name: bounds[p.name][0] for p in pools},
        shares={},
        served={},
        cost_per_hour=sum(p.price_per_hour * bounds[p.name][0] for p in pools),
        output_tokens_per_s=0.0,
        status="failed",
        notes=[message],
    )
