"""The discrete-event loop of one policy on one world: arrivals, instance starts, decisions, failures.

Global events are few: arrivals (in order, from the world), instances becoming ready, the
policy's interval, and requests giving up at the gateway. Everything inside an instance is lazy
(`InstanceEngine.advance`): it is played forward only when the router looks at its load, at each
interval, and when it drains. Completions are gathered at each interval (or at a drain, ahead of
time) and handed to a learning policy in order of their end, once that end is in the past.

Cost is every instance's paid time up to the end of the run (arrivals stop there; requests in
flight still finish and their tokens count) times its pool's price.
"""

from __future__ import annotations

import heapq
import math
import random
import time
from collections import deque
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from observability.records import RequestRecord
from optimizer.simulate.engine import Completion
from optimizer.simulate.fleet import SimInstance, SimPool, Started
from optimizer.simulate.policies import Decision, Policy, PoolView
from optimizer.simulate.routing import Router
from optimizer.simulate.world import World

__all__ = ["RunOutput", "ScaleAction", "Series", "simulate"]

SERVED, NO_CAPACITY, TOO_LONG = 200, 503, 400


@dataclass(frozen=True)
class ScaleAction:
    at: float
    pool: str
    before: int
    after: int


@dataclass
class Series:
    """One sample per interval (and one at time 0)."""

    pools: list[str]
    times: list[float] = field(default_factory=list)
    demand: list[float] = field(default_factory=list)
    """Requests per second that arrived in the interval just ended."""
    weights: dict[str, list[float]] = field(default_factory=dict)
    """The policy's per-pool weights in force after the sample, normalized."""
    routed: dict[str, list[float]] = field(default_factory=dict)
    """Share of the interval's routed requests each pool got."""
    instances: dict[str, list[int]] = field(default_factory=dict)
    """Instances starting or ready (not draining), after the decision."""
    ready: dict[str, list[int]] = field(default_factory=dict)
    cost_per_hour: list[float] = field(default_factory=list)
    """USD per hour of every live instance (starting, ready, draining), after the decision."""


@dataclass
class RunOutput:
    policy: str
    status: npt.NDArray[np.int64]
    ttft_s: npt.NDArray[np.float64]
    """NaN where the request failed."""
    tpot_s: npt.NDArray[np.float64]
    """NaN where the request failed or had a single output token."""
    pool: npt.NDArray[np.int64]
    """Index into `pools`, -1 where it never reached one."""
    pools: list[str]
    cost_usd: dict[str, float]
    second_half_cost_usd: float
    """What every pool cost over the run's second half."""
    instance_hours: dict[str, float]
    actions: list[ScaleAction]
    series: Series
    notes: list[str]
    wall_s: float


def simulate(world: World, policy: Policy) -> RunOutput:
    """Play the whole run of `policy` on `world`."""
    return _Run(world, policy).play()


class _Run:
    def __init__(self, world: World, policy: Policy) -> None:
        self.world = world
        self.policy = policy
        self.pools = {
            name: SimPool(name, setup.spec, setup.price_per_hour, setup.config.cold_start_s,
                          setup.config.min_instances, setup.config.max_instances)
            for name, setup in world.pools.items()
        }  # fmt: skip
        self.pool_names = list(self.pools)
        self.pool_code = {name: code for code, name in enumerate(self.pool_names)}
        self.router = Router(self.pools, random.Random(world.seed))
        count = len(world.arrivals)
        self.status = np.zeros(count, dtype=np.int64)
        self.ttft = np.full(count, math.nan)
        self.tpot = np.full(count, math.nan)
        self.pool = np.full(count, -1, dtype=np.int64)
        self.routed_at = np.full(count, math.nan)
        self.starts: list[tuple[float, int, SimInstance]] = []
        self.pending: deque[int] = deque()
        self.records: list[tuple[float, int, RequestRecord]] = []
        self.routed_since: dict[str, int] = dict.fromkeys(self.pools, 0)
        self.actions: list[ScaleAction] = []
        self.series = Series(self.pool_names)
        self.weights: dict[str, float] = {}
        self.notes: list[str] = []
        self._sequence = 0
        # plain lists: indexing numpy scalars one at a time is slow
        self.times: list[float] = world.arrivals.time.tolist()
        self.prompts: list[int] = world.arrivals.prompt.tolist()
        self.outputs: list[int] = world.arrivals.output.tolist()

    def play(self) -> RunOutput:
        started = time.perf_counter()
        world = self.world
        self._apply(self.policy.start(), 0.0, instant=True, initial=True)
        interval, duration, wait = world.interval_s, world.duration_s, world.scenario.gateway_wait_s
        times, count = self.times, len(self.times)
        ticks = [k * interval for k in range(int(duration // interval) + 1)]
        next_tick, arrival = 0, 0
        while True:
            t_arrival = times[arrival] if arrival < count else math.inf
            t_start = self.starts[0][0] if self.starts else math.inf
            t_tick = ticks[next_tick] if next_tick < len(ticks) else math.inf
            t_expire = times[self.pending[0]] + wait if self.pending else math.inf
            now = min(t_arrival, t_start, t_tick, t_expire)
            if now == math.inf:
                break
            if t_start == now:
                _, _, instance = heapq.heappop(self.starts)
                self.pools[instance.pool].make_routable(instance)
                self._route_pending(now)
            elif t_expire == now:
                self._fail(self.pending.popleft(), now, NO_CAPACITY)
            elif t_tick == now:
                self._interval(now)
                next_tick += 1
            else:
                if not self._route(arrival, now):
                    self.pending.append(arrival)
                arrival += 1
        for pool in self.pools.values():
            for instance in pool.live:
                instance.engine.advance(math.inf)
                self._complete(instance)
        cost = {name: pool.cost_usd(duration) for name, pool in self.pools.items()}
        return RunOutput(
            policy=self.policy.name,
            status=self.status,
            ttft_s=self.ttft,
            tpot_s=self.tpot,
            pool=self.pool,
            pools=self.pool_names,
            cost_usd=cost,
            second_half_cost_usd=sum(cost.values()) - sum(pool.cost_usd(duration / 2) for pool in self.pools.values()),
            instance_hours={
                name: sum(i.paid_s(duration) for i in (*pool.live, *pool.gone)) / 3600
                for name, pool in self.pools.items()
            },
            actions=self.actions,
            series=self.series,
            notes=[*self.notes, *self.policy.failures],
            wall_s=time.perf_counter() - started,
        )

    # -- requests -----------------------------------------------------------------------------------

    def _route(self, rid: int, now: float) -> bool:
        instance = self.router.choose(self.world.buckets[rid], now)
        if instance is None:
            return False
        prompt, output = self.prompts[rid], self.outputs[rid]
        engine = instance.engine
        if not engine.spec.fits(prompt, output):
            self._fail(rid, now, TOO_LONG, pool=instance.pool)
            return True
        engine.advance(now)
        engine.submit(rid, now, prompt, output)
        self.pool[rid] = self.pool_code[instance.pool]
        self.routed_at[rid] = now
        self.routed_since[instance.pool] += 1
        return True

    def _route_pending(self, now: float) -> None:
        waiting, self.pending = self.pending, deque()
        for rid in waiting:
            if not self._route(rid, now):
                self.pending.append(rid)

    def _fail(self, rid: int, now: float, status: int, pool: str = "") -> None:
        self.status[rid] = status
        if self.policy.wants_records:
            start = self.times[rid]
            record = RequestRecord(
                trace_id=f"{rid:032x}", span_id=f"{rid:016x}", start=start, end=now, operation="chat",
                model=self.world.model.name, pool=pool, instance="", accelerator="", quantization="", stream=True,
                status=status, input_tokens=0, output_tokens=0, duration_s=now - start, queue_wait_s=None,
                ttft_s=None, tpot_s=None, attempts=0, cost_usd=0.0,
            )  # fmt: skip
            self._push(record)

    def _complete(self, instance: SimInstance) -> None:
        """Take the instance's finished requests into the results (and the learning policy's queue)."""
        finished, instance.engine.finished = instance.engine.finished, []
        for done in finished:
            self._finished(instance, done)

    def _finished(self, instance: SimInstance, done: Completion) -> None:
        rid = done.rid
        start, output = self.times[rid], self.outputs[rid]
        ttft = done.first_token - start
        tpot = (done.end - done.first_token) / (output - 1) if output > 1 else None
        self.status[rid] = SERVED
        self.ttft[rid] = ttft
        if tpot is not None:
            self.tpot[rid] = tpot
        instance.served += 1
        if not self.policy.wants_records:
            return
        pool = self.world.pools[instance.pool]
        record = RequestRecord(
            trace_id=f"{rid:032x}", span_id=f"{rid:016x}", start=start, end=done.end, operation="chat",
            model=self.world.model.name, pool=instance.pool, instance=instance.id,
            accelerator=pool.config.accelerator, quantization=pool.config.variant, stream=True, status=SERVED,
            input_tokens=self.prompts[rid], output_tokens=output, duration_s=done.end - start,
            queue_wait_s=float(self.routed_at[rid]) - start,
            ttft_s=ttft, tpot_s=tpot, attempts=1, cost_usd=done.shared_s * pool.price_per_hour / 3600,
        )  # fmt: skip
        self._push(record)

    def _push(self, record: RequestRecord) -> None:
        self._sequence += 1
        heapq.heappush(self.records, (record.end, self._sequence, record))

    # -- intervals and decisions ----------------------------------------------------------------------

    def _interval(self, now: float) -> None:
        for pool in self.pools.values():
            for instance in pool.live:
                if instance.ready_at <= now and not instance.draining:
                    instance.engine.advance(now)
                    self._complete(instance)
            pool.settle(now)
        while self.records and self.records[0][0] <= now:
            self.policy.observe(heapq.heappop(self.records)[2])
        decision = self.policy.decide(now, self._view(now))
        if decision is not None:
            self._apply(decision, now, instant=self.policy.instant)
        self._sample(now)

    def _view(self, now: float) -> dict[str, PoolView]:
        views = {}
        for name, pool in self.pools.items():
            active = pool.active()
            views[name] = PoolView(
                ready=len(pool.routable),
                starting=sum(1 for i in active if i.ready_at > now),
                draining=len(pool.live) - len(active),
                target=pool.target,
                in_flight=sum(i.engine.in_flight for i in pool.routable),
            )
        return views

    def _apply(self, decision: Decision, now: float, *, instant: bool, initial: bool = False) -> None:
        for name, target in decision.targets.items():
            pool = self.pools.get(name)
            if pool is None:
                continue
            target = min(max(target, 0), pool.max_instances)
            if target == pool.target and len(pool.active()) == target:
                continue
            if not initial and target != pool.target:
                self.actions.append(ScaleAction(now, name, pool.target, target))
            started, drained = pool.scale_to(target, now, instant=instant)
            for start in started:
                self._schedule(start, now)
            for instance in drained:
                self._complete(instance)
        total = sum(max(0.0, w) for w in decision.weights.values())
        self.weights = {name: max(0.0, w) / total for name, w in decision.weights.items()} if total > 0 else {}
        self.router.set_weights(decision.weights, decision.class_weights)
        self._route_pending(now)

    def _schedule(self, start: Started, now: float) -> None:
        if start.ready_at <= now:
            self.pools[start.instance.pool].make_routable(start.instance)
            return
        self._sequence += 1
        heapq.heappush(self.starts, (start.ready_at, self._sequence, start.instance))

    def _sample(self, now: float) -> None:
        series, world = self.series, self.world
        previous = series.times[-1] if series.times else 0.0
        span = now - previous
        first, last = np.searchsorted(world.arrivals.time, [previous, now], side="left")
        series.times.append(now)
        series.demand.append(float(last - first) / span if span > 0 else 0.0)
        routed = sum(self.routed_since.values())
        series.cost_per_hour.append(sum(pool.cost_rate() for pool in self.pools.values()))
        for name, pool in self.pools.items():
            series.weights.setdefault(name, []).append(self.weights.get(name, 0.0))
            series.routed.setdefault(name, []).append(self.routed_since[name] / routed if routed else 0.0)
            series.instances.setdefault(name, []).append(len(pool.active()))
            series.ready.setdefault(name, []).append(len(pool.routable))
            self.routed_since[name] = 0
