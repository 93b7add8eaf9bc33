"""The tick: one pure step of the optimizer, from (time, signals, state) to a plan, a new state and a decision.

1. learn: each pool's window updates its latency model;
2. judge: a pool is eligible for traffic unless gated for quality, unhealthy, or failing;
3. plan: the MILP sizes the fleet for the demand, or a surge still remembered (`_remember`), at least
   cost (`solver.solve_fleet`);
4. guard: instance targets move toward the plan within cooldowns, steps and the cold-start rule;
5. route: the traffic split over the instances ready now (`solver.solve_routing`), plus a small
   exploration share per running pool, moved toward by the guard's step limits.

Nothing here reads a clock, sleeps or touches the network: the loop, the simulator and a replay
all call the same function.
"""

from __future__ import annotations

import collections
import functools
import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from optimizer.config import ModelConfig
from optimizer.guard import PoolMemory, break_even_s, guard_shares, guard_target
from optimizer.performance import (
    Estimate,
    LatencyPrior,
    Load,
    capacity,
    load_tpot_features,
    observations,
    ttft_features,
)
from optimizer.policy import LearningConfig, OptimizerConfig
from optimizer.signals import PoolStatus, PoolWindow, SignalCollector, Signals
from optimizer.sizes import SizeClasses
from optimizer.solver import (
    Allocation,
    DemandClass,
    PoolOffer,
    highest_rates,
    most_headroom,
    on_pools,
    prefer_pools,
    solve_fleet,
    solve_routing,
)

__all__ = [
    "Change",
    "Decision",
    "Plan",
    "PoolReport",
    "PoolSpec",
    "Setup",
    "State",
    "TickResult",
    "initial_state",
    "tick",
]

_SHRINK_BAND = 0.85
"""A fleet shrinks only to what would carry the demand at this share of the planned utilization."""
_CUT = 0.7
_RECOVER = 1.02
_FLOOR = 0.05
"""Bounds of the SLO-driven capacity correction (per tick)."""
_JOINED = 0.9
"""A window whose instance-seconds fall this far short of the instances ready now saw one come up."""
_VERIFIED_REQUESTS = 50.0
"""Requests (decayed) behind a pool's estimate before the instances that stay may count on it."""
_UNVERIFIED_SAVING = 0.2
"""Share of the cost an economy move must save when it grows a pool not yet verified."""
_REPORTED_CHANGE = 0.005
"""Weight changes smaller than this are applied but not listed as changes."""


@dataclass(frozen=True)
class PoolSpec:
    """What the optimizer knows of a pool from the config (and its profile or roofline)."""

    name: str
    model: str
    price_per_hour: float
    min_instances: int
    max_instances: int
    cold_start_s: float
    prior: LatencyPrior
    weight: float = 1.0
    """Configured weight: the split before the first plan."""
    excluded: str | None = None
    """Why the pool may never get traffic (the quality gate), or None."""


@dataclass(frozen=True)
class Setup:
    policy: OptimizerConfig
    models: Mapping[str, ModelConfig]
    pools: Mapping[str, PoolSpec]

    @functools.cached_property
    def size_classes(self) -> SizeClasses:
        """Built once per setup: the gateway classifies every request with it."""
        return SizeClasses(self.policy.size_classes)

    @functools.cached_property
    def prior_estimates(self) -> dict[str, Estimate]:
        """Each pool's estimate before any evidence."""
        return {name: Estimate.from_prior(spec.prior) for name, spec in self.pools.items()}

    def collector(self) -> SignalCollector:
        """An empty window of this setup's span, size classes and models."""
        return SignalCollector(self.policy.window_s, self.size_classes, list(self.models.values()))


@dataclass(frozen=True)
class Plan:
    """What the fleet should do now: frozen data, applied by the loop (or the simulator) as a whole."""

    at: float
    weights: dict[str, float]
    """Pool -> share of its model's traffic (for requests whose size class has no weights of its own)."""
    class_weights: dict[str, dict[str, float]]
    """Size class (`in<=1024/out<=256`, or the input bucket alone `in<=1024`) -> pool -> share within its model."""
    targets: dict[str, int]
    cost_per_hour: float
    """Of the targets."""
    output_tokens_per_s: float
    """Planned service (the demand, or what the budget allows)."""

    @property
    def tokens_per_dollar(self) -> float | None:
        return self.output_tokens_per_s * 3600 / self.cost_per_hour if self.cost_per_hour > 0 else None


@dataclass(frozen=True)
class Change:
    pool: str
    what: str
    """`weight` or `target`."""
    before: float
    after: float
    reason: str


@dataclass(frozen=True)
class PoolReport:
    """The numbers behind a pool's part of a decision."""

    pool: str
    eligible: bool
    why_not: str | None
    ready: int
    target: int
    proposed: int
    weight: float
    prior: str
    confidence: float
    evidence: float
    """Requests behind the pool's estimate, decayed."""
    concurrency: float | None
    """Mean requests in flight per instance in the window."""
    ttft_p95_s: float | None
    tpot_p95_s: float | None
    error_rate: float
    capacity: dict[str, float]
    """Size class -> requests per second per instance within the SLO, as planned."""
    scaling: str = ""
    """What the guard did with the solver's proposal for this pool, and why (empty: nothing to do)."""
    in_flight: int = 0
    engine_running: float | None = None
    """Requests the pool's engines report running and waiting now (their own /metrics), for comparison
    with the window's mean concurrency; None where not scraped."""
    engine_waiting: float | None = None


@dataclass(frozen=True)
class Decision:
    at: float
    outcome: str
    """`changed`, `unchanged`, or `failed` (the last good plan stays)."""
    summary: str
    changes: list[Change] = field(default_factory=list)
    pools: list[PoolReport] = field(default_factory=list)
    demand: list[DemandClass] = field(default_factory=list)
    solver_status: str = ""
    solver_notes: list[str] = field(default_factory=list)
    proposed_cost_per_hour: float = 0.0
    current_cost_per_hour: float = 0.0


@dataclass(frozen=True)
class SeenDemand:
    at: float
    classes: tuple[DemandClass, ...]
    """The window's arrival rates (no backlog)."""
    surge: bool
    """It rose past what the headroom absorbs within one cold start: a fleet cannot follow it."""


@dataclass(frozen=True)
class State:
    estimates: dict[str, Estimate]
    memory: dict[str, PoolMemory]
    plan: Plan | None = None
    corrections: dict[tuple[str, str], float] = field(default_factory=dict)
    """(pool, size class) -> factor on the model's capacity, learned from the SLO itself (see `_correct`)."""
    proposed: dict[str, int] = field(default_factory=dict)
    """The solver's last proposal (instances per pool), before the guard."""
    cut_at: dict[tuple[str, str], float] = field(default_factory=dict)
    """(pool, size class) -> when its correction was last cut."""
    demand_seen: tuple[SeenDemand, ...] = ()
    """The window's arrival rates at the ticks within `guard.peak_memory_s` (and a cold start), oldest first."""
    short_since: float | None = None
    """When the fleet began to fall short of its demand on the estimates alone, the shortfall not yet
    confirmed (a hot reload forgets it)."""
    recent_estimates: tuple[tuple[float, dict[str, Estimate]], ...] = ()
    """The estimates of the ticks within the last three quarter-windows, oldest first: a shortfall is
    confirmed against those of a quarter-window before it began."""


@dataclass(frozen=True)
class TickResult:
    plan: Plan
    state: State
    decision: Decision


def initial_state(setup: Setup) -> State:
    return State(
        estimates=dict(setup.prior_estimates),
        memory={name: PoolMemory() for name in setup.pools},
    )


def tick(now: float, signals: Signals, state: State, setup: Setup) -> TickResult:
    policy = setup.policy
    status = {name: signals.status.get(name, PoolStatus(ready=0)) for name in setup.pools}
    estimates, concurrency = _learn(now, signals, state, setup, status)
    blocked = {
        name: why for name, spec in setup.pools.items() if (why := _blocked(spec, signals, status[name], policy))
    }
    demand = _planned_demand(signals, setup, status)
    demand_seen = _remember(now, signals, state, setup)
    remembered = [seen.classes for seen in demand_seen if seen.surge and seen.at > now - policy.guard.peak_memory_s]
    # A remembered surge sets a class's rate, not its request sizes: capacities (routing's too) stay at today's sizes.
    today = {d.key: d for d in demand}
    sizing = [replace(today.get(d.key, d), rate=d.rate) for d in highest_rates([demand, *remembered])]
    modelled = _capacities(setup, estimates, sizing)
    corrections, cut_at = _correct(now, state, setup, signals, status, modelled)
    capacities = _corrected(modelled, corrections)
    offers = [
        PoolOffer(
            name=spec.name,
            model=spec.model,
            price_per_hour=spec.price_per_hour,
            min_instances=spec.min_instances,
            max_instances=spec.max_instances,
            capacity=capacities[spec.name],
            eligible=spec.name not in blocked,
        )
        for spec in setup.pools.values()
    ]
    cheapest = solve_fleet(sizing, offers, budget_per_hour=policy.budget_per_hour, utilization=policy.utilization)
    if cheapest.status == "failed":
        raise RuntimeError("; ".join(cheapest.notes))

    current = {name: status[name].target for name in setup.pools}
    # Two compositions of near-equal cost (two TPUs or one A100) would otherwise take turns in the proposal as
    # the estimates wobble, and every turn restarts the other's surplus timer. A move to other pools lowers
    # the bill, as a shrink does, and like a shrink it must save on a fleet with the band's room: a cheaper
    # composition the demand only just fits (an L4 and a TPU at 79% against an A100) would take turns with
    # the one proposed before at every wobble of the estimates, and each turn start an instance.
    proposed_pools = _running(state.proposed or current)
    roomy = on_pools(sizing, offers, _running(cheapest.instances), budget_per_hour=policy.budget_per_hour,
                     utilization=policy.utilization * _SHRINK_BAND)  # fmt: skip
    against = max(cheapest.cost_per_hour, roomy.cost_per_hour) if roomy.status == "optimal" else math.inf
    kept = prefer_pools(cheapest, sizing, offers, proposed_pools, margin=policy.guard.min_saving,
                        against_per_hour=against, budget_per_hour=policy.budget_per_hour,
                        utilization=policy.utilization)  # fmt: skip
    # A saving under `min_saving` is not worth a move, nor the headroom it would cost: bursts and estimate
    # errors come unannounced, and spare capacity already up is the only kind that meets them.
    ceiling = cheapest.cost_per_hour * (1 + policy.guard.min_saving)
    proposal = most_headroom(kept, sizing, offers, ceiling_per_hour=ceiling,
                             budget_per_hour=policy.budget_per_hour, utilization=policy.utilization)  # fmt: skip
    not_cheapest = None
    if proposal.cost_per_hour > cheapest.cost_per_hour + 1e-6:
        if proposal is not kept:
            why = "within min_saving of it, this one has more headroom"
        elif proposal.cost_per_hour <= ceiling + 1e-6:
            why = "within min_saving of it, this one keeps the pools proposed before"
        elif math.isfinite(against):
            why = f"its pools cost ${against:.2f}/h with the band's room, within min_saving of this one"
        else:
            why = "its pools cannot carry the demand with the band's room"
        not_cheapest = f"the cheapest is ${cheapest.cost_per_hour:.2f}/h; {why}"
    ready = {name: status[name].ready if name not in blocked else 0 for name in setup.pools}
    unverified = {name for name, estimate in estimates.items() if estimate.evidence < _VERIFIED_REQUESTS}
    short = solve_routing(demand, offers, current, utilization=policy.utilization).status == "capacity"
    # A shortfall of the demand grows the fleet at once; one that only the estimates see (those of a
    # quarter-window ago would carry today's demand) waits until the window's last quarter has turned
    # over, so that new requests confirm it: one window can move an estimate by a third (its load averaged
    # over a change of traffic, or a minute of long requests bunched together), successive quarter-windows
    # share half their requests, and instances started on it cost a cold start and a removal.
    quarter_s = signals.window_s / 4
    recent = tuple((at, seen) for at, seen in state.recent_estimates if at >= now - 3 * quarter_s)
    # The estimates of a quarter-window before the shortfall began (else the oldest kept): a dip can build
    # over two ticks, and the last tick's estimates may hold its first half.
    began = state.short_since if state.short_since is not None else now
    older = [seen for at, seen in recent if at <= began - quarter_s]
    trusted = older[-1] if older else recent[0][1] if recent else state.estimates
    short_since = None
    if short and _estimates_alone(setup, trusted, sizing, demand, offers, current, corrections):
        short_since = state.short_since if state.short_since is not None else now
    needed = short and (short_since is None or now - short_since >= quarter_s)
    economy_wait = _economy_wait(signals, status, policy)
    if short and not needed:
        economy_wait = "a shortfall only the estimates see waits for new requests to confirm it"
    targets, memory, target_reasons, awaiting = _guard_targets(
        now, state, setup, demand, sizing, offers, proposal, current, ready,
        needed=needed, economy_wait=economy_wait, unverified=unverified,
    )  # fmt: skip
    routing = solve_routing(demand, offers, ready, utilization=policy.utilization,
                            incumbents=_incumbents(setup, state.plan, demand))  # fmt: skip
    proposed_split = _split(setup, demand, offers, routing, ready, policy.exploration)
    if awaiting:  # a pool the proposal leaves is held until the pools replacing it are verified
        proposed_split = _verifying(proposed_split, demand, proposal, ready, unverified, signals.window_s)
    previous = state.plan
    # A pool without a routable instance (blocked, or its instances removed, starting or restarting) leaves
    # the split at once, as a blocked one does: the router could send it nothing, and a plan that kept its
    # share while the weight step moved it out said so for ticks after its last instance was gone.
    closed = {name: blocked.get(name, "no instance ready to serve it") for name, count in ready.items() if count == 0}
    split = _guard_split(setup, proposed_split, previous, set(closed))
    class_weights, weights = _weights(setup, demand, split, previous, set(blocked))

    cost = sum(setup.pools[name].price_per_hour * count for name, count in targets.items())
    plan = Plan(now, weights, class_weights, targets, cost, proposal.output_tokens_per_s)
    changes = _changes(previous, plan, setup, current, target_reasons, closed)
    reports = [
        replace(
            _report(spec, estimates[spec.name], signals, status[spec.name], blocked.get(spec.name), proposal,
                    targets[spec.name], weights.get(spec.name, 0.0), concurrency.get(spec.name),
                    capacities[spec.name], policy.learning.prior_strength),
            scaling=target_reasons[spec.name],
            in_flight=status[spec.name].in_flight,
            engine_running=status[spec.name].engine_running,
            engine_waiting=status[spec.name].engine_waiting,
        )
        for spec in setup.pools.values()
    ]  # fmt: skip
    current_cost = sum(setup.pools[name].price_per_hour * count for name, count in current.items())
    decision = Decision(
        at=now,
        outcome="changed" if changes else "unchanged",
        summary=_summary(changes, proposal, demand, sizing, not_cheapest),
        changes=changes,
        pools=reports,
        demand=demand,
        solver_status=proposal.status,
        solver_notes=list(proposal.notes),
        proposed_cost_per_hour=proposal.cost_per_hour,
        current_cost_per_hour=current_cost,
    )
    new_state = State(estimates, memory, plan, corrections, dict(proposal.instances), cut_at, demand_seen,
                      short_since=None if needed else short_since,
                      recent_estimates=(*recent, (now, estimates)))  # fmt: skip
    return TickResult(plan, new_state, decision)


def _remember(now: float, signals: Signals, state: State, setup: Setup) -> tuple[SeenDemand, ...]:
    """The arrivals seen within the peak memory (and one cold start, to tell a surge), with this tick's.

    Only a surge is remembered for sizing: a rise in one cold start past what the `utilization`
    headroom absorbs, which no fleet can follow by scaling. A slow rise (a diurnal morning) is
    followed as it comes, and sizing for its past peak on the way down would pay for capacity that
    the next cold start could bring back in time."""
    policy = setup.policy
    if policy.guard.peak_memory_s <= 0:
        return ()
    lead = max((spec.cold_start_s for spec in setup.pools.values()), default=policy.cold_start_s)
    keep = max(policy.guard.peak_memory_s, lead)
    seen = [entry for entry in state.demand_seen if entry.at > now - keep]
    arrivals = tuple(
        DemandClass(d.model, d.size_class, d.rate, d.input_tokens, d.output_tokens)
        for d in signals.demand.values()
        if d.model in setup.models
    )
    if signals.window_s < policy.window_s:  # a window still filling counts a few seconds: noise, not demand
        return tuple(seen)
    surge = False
    for model in {d.model for d in arrivals}:
        before = [_total(entry.classes, model) for entry in seen if entry.at >= now - lead]
        if before and _total(arrivals, model) * policy.utilization > min(before):
            surge = True
    return (*seen, SeenDemand(now, arrivals, surge))


def _total(classes: tuple[DemandClass, ...], model: str) -> float:
    return sum(d.rate for d in classes if d.model == model)


def _planned_demand(signals: Signals, setup: Setup, status: Mapping[str, PoolStatus]) -> list[DemandClass]:
    """What to plan for: the window's arrivals plus the requests still in flight, or the last quarter's
    pace if that is higher (demand that grows is served before the window catches up). Extrapolating
    the trend over a cold start was tried: on steady load it amplified noise into idle instances."""
    in_flight: dict[str, float] = collections.defaultdict(float)
    for name, spec in setup.pools.items():
        in_flight[spec.model] += status[name].in_flight
    totals: dict[str, float] = collections.defaultdict(float)
    for d in signals.demand.values():
        totals[d.model] += d.rate
    span = signals.window_s
    planned = []
    for d in signals.demand.values():
        if d.model not in setup.models:
            continue
        share = d.rate / totals[d.model] if totals[d.model] > 0 else 1.0
        extra = in_flight[d.model] * share
        rate = d.rate + extra / span
        if span >= setup.policy.window_s:  # before the window fills, its last quarter is a few noisy seconds
            rate = max(rate, d.recent_rate + extra / (span / 4))
        planned.append(DemandClass(d.model, d.size_class, rate, d.input_tokens, d.output_tokens))
    return planned


def _learn(
    now: float, signals: Signals, state: State, setup: Setup, status: Mapping[str, PoolStatus]
) -> tuple[dict[str, Estimate], dict[str, float]]:
    learning = setup.policy.learning
    estimates = dict(state.estimates)
    concurrency: dict[str, float] = {}
    for name, spec in setup.pools.items():
        previous = estimates.get(name) or setup.prior_estimates[name]
        estimate = previous.decayed(now, learning)
        # Latency is read from the window's last quarter when it has enough requests (a whole
        # window's p95 still holds a load that has passed), else from the whole window.
        span = signals.window_s / 4
        window = signals.recent_pools.get(name)
        if window is None or window.requests - window.failures < learning.min_requests:
            span, window = signals.window_s, signals.pools.get(name)
        if window is None:
            estimates[name] = estimate
            continue
        # Successive windows overlap: only the share that is new since the last update is new
        # evidence, or the same requests would count several times.
        fresh = 1.0 if previous.updated_at is None else min(1.0, (now - previous.updated_at) / span)
        slo = setup.models[spec.model].slo
        load, found = observations(window, status[name], span, learning, slo, estimate.prior)
        concurrency[name] = load.sequences
        if found:
            found = [replace(observation, weight=observation.weight * fresh) for observation in found]
            estimate = estimate.observe(now, found, window.requests - window.failures, learning)
            estimate = _learn_duration(estimate, window, load, learning)
        estimates[name] = estimate
    return estimates, concurrency


def _learn_duration(estimate: Estimate, window: PoolWindow, load: Load, learning: LearningConfig) -> Estimate:
    """Mean request duration against the duration the p95 model predicts at the observed load."""
    for group in window.classes.values():
        if group.requests < learning.min_requests or group.duration_mean_s <= 0:
            continue
        ttft, _ = estimate.predict(ttft_features(load.context_ktok, group.input_tokens / 1000), learning.prior_strength)
        x = load_tpot_features(load, estimate.prior)
        tpot, _ = estimate.predict(x, learning.prior_strength)
        predicted = ttft + max(0.0, group.output_tokens - 1) * tpot
        if predicted > 0:
            estimate = estimate.learn_duration_ratio(group.duration_mean_s / predicted)
    return estimate


def _blocked(spec: PoolSpec, signals: Signals, status: PoolStatus, policy: OptimizerConfig) -> str | None:
    """Why a pool gets no traffic this tick, or None."""
    if spec.excluded:
        return spec.excluded
    if not status.healthy:
        return "unhealthy: no instance passes its health probe"
    window = signals.pools.get(spec.name)
    failing = window is not None and window.requests >= policy.learning.min_requests
    if window is not None and failing and window.error_rate >= policy.unhealthy_error_rate:
        return f"failing: {window.error_rate:.0%} of its requests in the window failed"
    return None


def _correct(
    now: float,
    state: State,
    setup: Setup,
    signals: Signals,
    status: Mapping[str, PoolStatus],
    modelled: Mapping[str, Mapping[str, float]],
) -> tuple[dict[tuple[str, str], float], dict[tuple[str, str], float]]:
    """A safety loop on top of the model: a pool whose latest quarter-window breaks the SLO in a class
    gets that class's capacity cut by `_CUT`; every tick within it gives a little back (`_RECOVER`).
    Multiplicative decrease, slow increase: the model's error for a class (a KV cache too small for
    long prompts queues in ways a line cannot fit) is corrected by the outcome it is meant to keep.
    A class is cut again only once the quarter-window has turned over since its last cut: until
    then the breach it still shows is the one already answered, and cutting on every tick of it
    compounded a 40% overload into a 90% cut that sent traffic to pools no better known.
    A breach past the pool's corrected capacity while instances of its own start, or came up within
    the quarter-window, is the shortfall it is answering already: it is not cut. Cutting on every
    quarter-window of it (a pool overloaded until the instances it asked for were up) compounded to a
    quarter of its capacity and sent its traffic to a dearer pool for ten minutes, until the cut was
    given back 2% a tick. An overload that no growth of its own answers is still cut: that moves
    traffic off the pool (in the simulator, exempting every overload cost bursts their SLO)."""
    corrections, cut_at = state.corrections, dict(state.cut_at)
    settle_s = setup.policy.window_s / 4
    span_s = signals.window_s / 4  # what the recent windows cover (less than `settle_s` while the window fills)
    result = {key: min(1.0, factor * _RECOVER) for key, factor in corrections.items()}
    min_requests = setup.policy.learning.min_requests
    for name, spec in setup.pools.items():
        window = signals.recent_pools.get(name)
        if window is None or not status[name].ready:
            continue
        slo = setup.models[spec.model].slo
        slow_decode = window.tpot_p95_s is not None and window.tpot_p95_s > slo.tpot_p95_ms / 1000
        instance_s = window.instance_seconds(span_s, status[name].ready)
        factors = {size: corrections.get((name, size), 1.0) for size in window.classes}
        # Instances of its own starting, or up within the window: the shortfall is being answered.
        growing = status[name].starting > 0 or instance_s < _JOINED * span_s * status[name].ready
        answered = growing and _utilization(window, instance_s, modelled[name], factors) > 1.0
        for size_class, group in window.classes.items():
            if group.requests < min_requests:
                continue
            breached = slow_decode or (group.ttft_p95_s is not None and group.ttft_p95_s > slo.ttft_p95_ms / 1000)
            key = (name, size_class)
            if breached and not answered and now - cut_at.get(key, -math.inf) >= settle_s:
                result[key] = max(_FLOOR, corrections.get(key, 1.0) * _CUT)
                cut_at[key] = now
            elif breached:
                result[key] = corrections.get(key, 1.0)  # answered already: neither cut again nor given back
    kept = {key: factor for key, factor in result.items() if factor < 1.0}
    return kept, {key: at for key, at in cut_at.items() if key in kept}


def _utilization(
    window: PoolWindow, instance_s: float, modelled: Mapping[str, float], corrections: Mapping[str, float]
) -> float:
    """The share of one instance's corrected capacity that the requests it completed in the window used
    (classes without a capacity this tick, absent from today's demand, are left out)."""
    used = 0.0
    for size_class, group in window.classes.items():
        rate = group.requests / instance_s
        if size_class not in modelled or rate == 0:
            continue
        limit = modelled[size_class] * corrections[size_class]
        used += rate / limit if limit > 0 else math.inf
    return used


def _capacities(
    setup: Setup, estimates: Mapping[str, Estimate], demand: list[DemandClass]
) -> dict[str, dict[str, float]]:
    strength = setup.policy.learning.prior_strength
    result: dict[str, dict[str, float]] = {}
    for name, spec in setup.pools.items():
        slo = setup.models[spec.model].slo
        result[name] = {
            d.size_class: capacity(estimates[name], slo, d.input_tokens, d.output_tokens, strength).requests_per_s
            for d in demand
            if d.model == spec.model
        }
    return result


def _guard_targets(
    now: float,
    state: State,
    setup: Setup,
    demand: list[DemandClass],
    sizing: list[DemandClass],
    offers: list[PoolOffer],
    proposal: Allocation,
    current: Mapping[str, int],
    ready: Mapping[str, int],
    *,
    needed: bool,
    economy_wait: str | None,
    unverified: set[str],
) -> tuple[dict[str, int], dict[str, PoolMemory], dict[str, str], bool]:
    """Each pool's target, guard memory and reason, and whether a pool the proposal leaves is held only
    until the instances that stay are verified."""
    guard = setup.policy.guard
    current_cost = sum(setup.pools[name].price_per_hour * count for name, count in current.items())
    # An economy move is judged against the best fleet the running pools alone could shrink to, not
    # against a surplus that is about to be removed anyway.
    running_only = [replace(o, max_instances=max(o.min_instances, min(o.max_instances, current[o.name])))
                    for o in offers]  # fmt: skip
    shrunk = solve_fleet(sizing, running_only, budget_per_hour=setup.policy.budget_per_hour,
                         utilization=setup.policy.utilization)  # fmt: skip
    if shrunk.status == "optimal":
        current_cost = min(current_cost, shrunk.cost_per_hour)
    cold_starts = sum(
        max(0, proposal.instances[name] - current[name])
        * (spec.cold_start_s / 3600 * spec.price_per_hour + guard.cold_start_risk_usd)
        for name, spec in setup.pools.items()
    )
    saving = current_cost - proposal.cost_per_hour
    # A saving that rests on a pool known only by its prior must be larger: a roofline is a guess
    # within tens of percent, and a move that turns out wrong pays for a second move.
    bets = any(proposal.instances[name] > current[name] for name in unverified)
    required = max(guard.min_saving, _UNVERIFIED_SAVING) if bets else guard.min_saving
    economical = saving >= required * current_cost and saving * guard.payback_s / 3600 >= cold_starts
    # Hysteresis band: grow when the load passes `utilization`, shrink only to a fleet that would carry
    # it at `_SHRINK_BAND` of that, so a demand near a boundary does not add and remove an instance in turn.
    tight = solve_fleet(sizing, offers, budget_per_hour=setup.policy.budget_per_hour,
                        utilization=setup.policy.utilization * _SHRINK_BAND)  # fmt: skip
    floor = tight.instances if tight.status == "optimal" else dict(current)
    targets: dict[str, int] = {}
    memory: dict[str, PoolMemory] = {}
    reasons: dict[str, str] = {}
    for name, spec in setup.pools.items():
        cold_start = break_even_s(spec.cold_start_s, spec.price_per_hour, guard.cold_start_risk_usd)
        hold = max(guard.scale_down_delay_s, cold_start)
        proposed = proposal.instances[name]
        if proposed < current[name]:
            proposed = min(current[name], max(proposed, floor.get(name, proposed)))
        step = guard_target(
            now, current[name], proposed, state.memory.get(name, PoolMemory()), guard,
            needed=needed, economical=economical, hold_s=hold, economy_wait=economy_wait,
        )  # fmt: skip
        targets[name], memory[name], reasons[name] = step.target, step.memory, step.reason
    shrinking = [name for name in setup.pools if targets[name] < current[name]]
    # The instances that stay must carry the traffic on evidence: a pool just started is known only by
    # its prior, and removing the fleet it would replace before that prior is checked bets the SLO on it.
    staying = {name: min(ready[name], targets[name]) if name not in unverified else 0 for name in setup.pools}
    awaiting = False
    if shrinking and _served(demand, offers, staying) < _served(demand, offers, ready) * (1 - 1e-6):
        for name in shrinking:  # removing now would leave traffic with nowhere to go until new instances are up
            targets[name], memory[name] = current[name], state.memory.get(name, PoolMemory())
            reasons[name] = f"hold at {current[name]}: the instances that stay are not ready to carry the traffic"
        awaiting = any(proposal.instances[name] == 0 for name in shrinking)
    return targets, memory, reasons, awaiting


def _running(instances: Mapping[str, int]) -> set[str]:
    return {name for name, count in instances.items() if count > 0}


def _estimates_alone(
    setup: Setup,
    trusted: Mapping[str, Estimate],
    sizing: list[DemandClass],
    demand: list[DemandClass],
    offers: list[PoolOffer],
    current: Mapping[str, int],
    corrections: Mapping[tuple[str, str], float],
) -> bool:
    """Whether the fleet as it is carries today's demand on the `trusted` estimates (with this tick's
    corrections): then a shortfall is the newer estimates' alone, not the traffic."""
    last = {name: trusted.get(name) or setup.prior_estimates[name] for name in setup.pools}
    before = _corrected(_capacities(setup, last, sizing), corrections)
    offers_before = [replace(o, capacity=before[o.name]) for o in offers]
    return solve_routing(demand, offers_before, current, utilization=setup.policy.utilization).status != "capacity"


def _corrected(
    capacities: Mapping[str, Mapping[str, float]], corrections: Mapping[tuple[str, str], float]
) -> dict[str, dict[str, float]]:
    """The capacities with the SLO-driven corrections applied (a new mapping; `capacities` is kept)."""
    return {
        name: {size: rate * corrections.get((name, size), 1.0) for size, rate in rates.items()}
        for name, rates in capacities.items()
    }


def _economy_wait(signals: Signals, status: Mapping[str, PoolStatus], policy: OptimizerConfig) -> str | None:
    """Why growth for economy must wait this tick, or None."""
    if signals.window_s < policy.window_s:
        return "the window is not full yet"
    if any(pool.target > pool.ready for pool in status.values()):
        return "instances of the last change are still starting"
    return None


def _served(demand: list[DemandClass], offers: list[PoolOffer], instances: Mapping[str, int]) -> float:
    """Output tokens per second these ready instances serve within the SLO (at full capacity)."""
    return solve_routing(demand, offers, instances, utilization=1.0).output_tokens_per_s


def _incumbents(setup: Setup, plan: Plan | None, demand: list[DemandClass]) -> dict[tuple[str, str], set[str]]:
    """The pools carrying a real share (more than exploration) of each class under the plan in force."""
    if plan is None:
        return {}
    floor = 2 * setup.policy.exploration
    found: dict[tuple[str, str], set[str]] = {}
    for d in demand:
        shares = plan.class_weights.get(d.size_class) or plan.weights
        found[d.key] = {name for name, share in shares.items() if share > floor and setup.pools[name].model == d.model}
    return found


def _split(
    setup: Setup,
    demand: list[DemandClass],
    offers: list[PoolOffer],
    routing: Allocation,
    ready: Mapping[str, int],
    exploration: float,
) -> dict[tuple[str, str], dict[str, float]]:
    """Each demand class's split over the ready pools: the routing plan, the overflow spread by
    capacity, and the exploration floor for every eligible running pool that can serve it, by its
    estimate or by its prior: an estimate learned in an overload can say a pool serves nothing,
    and without traffic it would never learn otherwise."""
    split: dict[tuple[str, str], dict[str, float]] = {}
    for d in demand:
        candidates = [o for o in offers if o.model == d.model and o.eligible and ready[o.name] > 0]
        if not candidates:
            continue
        shares = dict(routing.shares.get(d.key, {}))
        unserved = 1.0 - sum(shares.values())
        if unserved > 1e-6:  # past every pool's capacity: the overflow goes where there is most room
            room = {o.name: ready[o.name] * o.capacity.get(d.size_class, 0.0) for o in candidates}
            if sum(room.values()) <= 0:
                room = {o.name: float(ready[o.name]) for o in candidates}
            total = sum(room.values())
            for name, value in room.items():
                shares[name] = shares.get(name, 0.0) + unserved * value / total
        explored = [o.name for o in candidates if o.capacity.get(d.size_class, 0.0) > 0 or _prior_serves(setup, o, d)]
        if exploration > 0 and len(explored) > 1:  # each of them, as `OptimizerConfig.exploration` says
            shares = {name: max(shares.get(name, 0.0), exploration) for name in set(shares) | set(explored)}
            total = sum(shares.values())
            shares = {name: value / total for name, value in shares.items()}
        split[d.key] = shares
    return split


def _verifying(
    split: Mapping[tuple[str, str], dict[str, float]],
    demand: list[DemandClass],
    proposal: Allocation,
    ready: Mapping[str, int],
    unverified: set[str],
    window_s: float,
) -> dict[tuple[str, str], dict[str, float]]:
    """The split with a canary for each unverified pool of the proposal: enough of its proposed traffic
    to verify it within a window (`_VERIFIED_REQUESTS`), never more than that traffic, the other pools
    scaled down to make room.

    While a pool is held until the ones replacing it are verified, routing by cost per request may keep
    the traffic on it (one big instance can serve a request as cheaply as two small ones: the saving is
    in the instance count), and at their exploration share the new pools may never be verified: the
    evidence decays, and 3% of a low demand never adds up to it."""
    rates = {d.key: d.rate for d in demand}
    up = {
        name: min(1.0, ready.get(name, 0) / count)
        for name, count in proposal.instances.items()
        if name in unverified and count > 0 and ready.get(name, 0) > 0
    }
    proposed: dict[str, float] = collections.defaultdict(float)
    for key, shares in proposal.shares.items():
        for name, share in shares.items():
            if name in up:
                proposed[name] += share * rates.get(key, 0.0) * up[name]
    canary = {name: min(1.0, _VERIFIED_REQUESTS / window_s / rate) for name, rate in proposed.items() if rate > 0}
    result: dict[tuple[str, str], dict[str, float]] = {}
    for key, shares in split.items():
        floors = {name: share * canary[name] * up[name]
                  for name, share in proposal.shares.get(key, {}).items() if name in canary}  # fmt: skip
        raised = {name: max(shares.get(name, 0.0), floor) for name, floor in floors.items()}
        rest = {name: share for name, share in shares.items() if name not in raised}
        left, held = max(0.0, 1.0 - sum(raised.values())), sum(rest.values())
        scaled = raised | {name: share * left / held for name, share in rest.items()} if held > 0 else raised
        total = sum(scaled.values())
        result[key] = {name: share / total for name, share in scaled.items()} if total > 0 else dict(shares)
    return result


def _prior_serves(setup: Setup, offer: PoolOffer, demand: DemandClass) -> bool:
    """Whether the pool's prior alone says it serves requests of this size within the SLO."""
    slo = setup.models[offer.model].slo
    prior = setup.prior_estimates[offer.name]
    strength = setup.policy.learning.prior_strength
    return capacity(prior, slo, demand.input_tokens, demand.output_tokens, strength).requests_per_s > 0


def _guard_split(
    setup: Setup,
    proposed: Mapping[tuple[str, str], dict[str, float]],
    previous: Plan | None,
    blocked: set[str],
) -> dict[tuple[str, str], dict[str, float]]:
    guard = setup.policy.guard
    result: dict[tuple[str, str], dict[str, float]] = {}
    for (model, size_class), shares in proposed.items():
        pools = [name for name, spec in setup.pools.items() if spec.model == model]
        old = _previous_shares(setup, previous, model, size_class, pools)
        result[model, size_class] = guard_shares(old, shares, blocked, guard)
    return result


def _previous_shares(
    setup: Setup, previous: Plan | None, model: str, size_class: str, pools: list[str]
) -> dict[str, float]:
    if previous is None:
        raw = {name: setup.pools[name].weight for name in pools}
    else:  # class weights hold every model's pools: fall back to the pool weights when none of this model's is there
        shares = previous.class_weights.get(size_class, {})
        raw = {name: shares.get(name, 0.0) for name in pools}
        if sum(raw.values()) <= 0:
            raw = {name: previous.weights.get(name, 0.0) for name in pools}
    total = sum(raw.values())
    return {name: value / total for name, value in raw.items()} if total > 0 else {}


def _weights(
    setup: Setup,
    demand: list[DemandClass],
    split: Mapping[tuple[str, str], dict[str, float]],
    previous: Plan | None,
    blocked: set[str],
) -> tuple[dict[str, dict[str, float]], dict[str, float]]:
    """Class weights (full classes and input buckets) and per-pool weights, each summing to 1 per model."""
    size_classes = setup.size_classes
    rates = {d.key: d.rate for d in demand}
    class_weights: dict[str, dict[str, float]] = collections.defaultdict(dict)
    by_input: dict[tuple[str, str], dict[str, float]] = collections.defaultdict(lambda: collections.defaultdict(float))
    by_model: dict[str, dict[str, float]] = collections.defaultdict(lambda: collections.defaultdict(float))
    for (model, size_class), shares in split.items():
        rate = rates.get((model, size_class), 0.0)
        class_weights[size_class].update(shares)
        for name, share in shares.items():
            by_input[model, size_classes.input_of(size_class)][name] += share * rate
            by_model[model][name] += share * rate
    for (_, input_class), amounts in by_input.items():
        total = sum(amounts.values())
        if total > 0:
            class_weights[input_class].update({name: value / total for name, value in amounts.items()})
    weights: dict[str, float] = {}
    for model in setup.models:
        pools = [name for name, spec in setup.pools.items() if spec.model == model]
        served = by_model.get(model, {})
        if sum(served.values()) > 0:
            total = sum(served.values())
            weights.update({name: served.get(name, 0.0) / total for name in pools})
        else:  # no demand seen: keep the split there was, away from blocked pools (readiness is the router's job)
            old = _previous_shares(setup, previous, model, "", pools)
            open_pools = [name for name in pools if name not in blocked]
            kept = {name: (old.get(name, 0.0) if name in open_pools else 0.0) for name in pools}
            if sum(kept.values()) <= 0:
                kept = {name: (1.0 if name in open_pools else 0.0) for name in pools}
            total = sum(kept.values()) or 1.0
            weights.update({name: value / total for name, value in kept.items()})
    return dict(class_weights), weights


def _changes(
    previous: Plan | None,
    plan: Plan,
    setup: Setup,
    current: Mapping[str, int],
    target_reasons: Mapping[str, str],
    closed: Mapping[str, str],
) -> list[Change]:
    changes: list[Change] = []
    for name in setup.pools:
        if plan.targets[name] != current[name]:
            changes.append(Change(name, "target", current[name], plan.targets[name], target_reasons[name]))
        before = previous.weights.get(name, 0.0) if previous else _configured_share(setup, name)
        after = plan.weights.get(name, 0.0)
        if abs(after - before) >= _REPORTED_CHANGE:
            why = closed.get(name) or (
                "more of the traffic: cheaper per token within SLO"
                if after > before
                else "less of the traffic: others serve it cheaper or it is at capacity"
            )
            changes.append(Change(name, "weight", round(before, 4), round(after, 4), why))  # fmt: skip
    return changes


def _configured_share(setup: Setup, name: str) -> float:
    model = setup.pools[name].model
    total = sum(spec.weight for spec in setup.pools.values() if spec.model == model)
    return setup.pools[name].weight / total if total > 0 else 0.0


def _report(
    spec: PoolSpec,
    estimate: Estimate,
    signals: Signals,
    status: PoolStatus,
    why_not: str | None,
    proposal: Allocation,
    target: int,
    weight: float,
    concurrency: float | None,
    capacities: dict[str, float],
    strength: float,
) -> PoolReport:
    window = signals.pools.get(spec.name)
    return PoolReport(
        pool=spec.name,
        eligible=why_not is None,
        why_not=why_not,
        ready=status.ready,
        target=target,
        proposed=proposal.instances[spec.name],
        weight=round(weight, 4),
        prior=spec.prior.source,
        confidence=round(estimate.confidence(strength), 3),
        evidence=round(estimate.evidence, 1),
        concurrency=None if concurrency is None else round(concurrency, 3),
        ttft_p95_s=window.ttft_p95_s if window else None,
        tpot_p95_s=window.tpot_p95_s if window else None,
        error_rate=window.error_rate if window else 0.0,
        capacity={name: round(value, 4) for name, value in capacities.items()},
    )


def _summary(
    changes: list[Change], proposal: Allocation, demand: list[DemandClass], sizing: list[DemandClass],
    not_cheapest: str | None,
) -> str:  # fmt: skip
    rate, peak = sum(d.rate for d in demand), sum(d.rate for d in sizing)
    head = f"{rate:.2f} req/s demand; plan ${proposal.cost_per_hour:.2f}/h ({proposal.status})"
    if peak > rate * 1.001:
        head += f" for a remembered surge of {peak:.2f} req/s"
    if not_cheapest:
        head += f" ({not_cheapest})"
    if not changes:
        return head + "; no change"
    return head + "; " + "; ".join(f"{c.pool} {c.what} {c.before:g} -> {c.after:g}" for c in changes)
