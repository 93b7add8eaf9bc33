"""The simulated fleet: pools of instances that start, serve, drain and stop, and what they cost.

An instance costs its pool's price from the moment it is asked for until it is gone: the cold
start is paid, and so is draining (it takes no new requests and is removed once its last one
finishes). Scaling down stops starting instances first (nothing to drain), then drains the
ready ones with the fewest requests in flight. A draining instance gets no more requests, so
its engine is played to the end at once: its removal time is then known exactly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from optimizer.simulate.engine import EngineSpec, InstanceEngine

__all__ = ["SimInstance", "SimPool", "Started"]


class SimInstance:
    """One instance: its engine, and when it was asked for, became ready and was removed."""

    __slots__ = ("draining", "engine", "id", "pool", "ready_at", "removed_at", "requested_at", "served")

    def __init__(self, instance_id: str, pool: str, spec: EngineSpec, requested_at: float, ready_at: float) -> None:
        self.id = instance_id
        self.pool = pool
        self.requested_at = requested_at
        self.ready_at = ready_at
        self.removed_at: float | None = None
        self.draining = False
        self.served = 0
        self.engine = InstanceEngine(spec, clock=ready_at)

    def paid_s(self, until: float) -> float:
        """Seconds paid for up to `until`."""
        end = until if self.removed_at is None else min(self.removed_at, until)
        return max(0.0, end - self.requested_at)


@dataclass(frozen=True)
class Started:
    """An instance asked for, and the time it will take its first request."""

    instance: SimInstance
    ready_at: float


@dataclass
class SimPool:
    """A pool's instances as the provider sees them, with the pool's price and cold start."""

    name: str
    spec: EngineSpec
    price_per_hour: float
    cold_start_s: float
    min_instances: int
    max_instances: int
    live: list[SimInstance] = field(default_factory=list)
    """Starting, ready and draining instances."""
    gone: list[SimInstance] = field(default_factory=list)
    routable: list[SimInstance] = field(default_factory=list)
    """Ready and not draining: what the router may pick."""
    target: int = 0
    _counter: int = 0

    def active(self) -> list[SimInstance]:
        """Instances not draining (starting or ready): what counts toward the target."""
        return [i for i in self.live if not i.draining]

    def starting(self, now: float) -> int:
        return sum(1 for i in self.live if not i.draining and i.ready_at > now)

    def scale_to(self, target: int, now: float, *, instant: bool = False) -> tuple[list[Started], list[SimInstance]]:
        """Move toward `target` instances: start new ones, or stop starting ones and drain ready ones.

        Returns the instances started (to be made routable when ready) and the drained ones, whose
        engines have played their remaining requests to the end (their completions wait in `finished`).
        """
        self.target = target
        active = self.active()
        started: list[Started] = []
        drained: list[SimInstance] = []
        if target > len(active):
            for _ in range(target - len(active)):
                ready_at = now if instant else now + self.cold_start_s
                self._counter += 1
                instance = SimInstance(f"{self.name}-{self._counter}", self.name, self.spec, now, ready_at)
                self.live.append(instance)
                started.append(Started(instance, ready_at))
            return started, drained
        surplus = len(active) - target
        waiting = sorted((i for i in active if i.ready_at > now), key=lambda i: -i.requested_at)
        for instance in waiting[:surplus]:
            self._remove(instance, now)
        surplus -= min(surplus, len(waiting))
        if surplus:
            ready = [i for i in active if i.ready_at <= now]
            for instance in ready:
                instance.engine.advance(now)
            for instance in sorted(ready, key=lambda i: i.engine.in_flight)[:surplus]:
                self._drain(instance, now)
                drained.append(instance)
        return started, drained

    def make_routable(self, instance: SimInstance) -> None:
        """The instance finished its cold start (unless it was stopped meanwhile)."""
        if instance.removed_at is None and not instance.draining:
            self.routable.append(instance)

    def cost_usd(self, until: float) -> float:
        return sum(i.paid_s(until) for i in (*self.live, *self.gone)) * self.price_per_hour / 3600

    def cost_rate(self) -> float:
        """USD per hour of what is paid for now (starting, ready and draining)."""
        return len(self.live) * self.price_per_hour

    def settle(self, now: float) -> None:
        """Drop drained instances whose last request has finished by `now` from the live list."""
        still = []
        for instance in self.live:
            if instance.removed_at is not None and instance.removed_at <= now:
                self.gone.append(instance)
            else:
                still.append(instance)
        self.live = still

    def _drain(self, instance: SimInstance, now: float) -> None:
        """No new requests; the engine plays its queue to the end now, which says when the instance goes."""
        instance.draining = True
        self.routable = [i for i in self.routable if i is not instance]
        instance.engine.advance(math.inf)
        instance.removed_at = max([now, *(c.end for c in instance.engine.finished)])

    def _remove(self, instance: SimInstance, now: float) -> None:
        instance.draining = True
        instance.removed_at = now
        self.routable = [i for i in self.routable if i is not instance]
