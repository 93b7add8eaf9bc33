"""Cost accounting: instance-time x price, attributed to requests by shared busy time.

The rule, which every cost number thrifty reports follows:

- An instance costs its pool's price per hour from the moment it is started until it is stopped:
  starting, idle and draining time cost money too.
- At every instant an instance's cost is split equally among the requests in flight on it
  (processor sharing: k requests batched together each pay 1/k of the instance). A request's
  attributed cost is the integral of its share over the time it held the instance, summed over
  its attempts, failed ones included (they occupied the instance too).
- When no request is in flight, the instance's cost is idle cost.

So at any moment, exactly: instance-time x price = attributed + idle + the shares accrued so far
by requests still in flight (`pending`). Per instance the ledger keeps a running "cost per
in-flight request" (like virtual time in fair queueing), so each request start and end is O(1).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from prometheus_client.core import Metric

from observability import metrics

__all__ = ["CostLedger", "Lease", "PoolCost"]

_SECONDS_PER_HOUR = 3600.0


@dataclass
class PoolCost:
    """A pool's cost so far (USD) and its instance-time; `pending` is owed by requests in flight."""

    instance_seconds: float = 0.0
    cost_usd: float = 0.0
    idle_usd: float = 0.0
    attributed_usd: float = 0.0
    output_tokens: int = 0
    usd_per_hour: float = 0.0
    """What the pool's open instances cost now."""

    @property
    def pending_usd(self) -> float:
        return self.cost_usd - self.idle_usd - self.attributed_usd


class _Meter:
    """One instance's cost clock."""

    __slots__ = ("busy", "open", "pool", "share", "since", "usd_per_s")

    def __init__(self, pool: PoolCost, usd_per_hour: float, now: float) -> None:
        self.pool = pool
        self.usd_per_s = usd_per_hour / _SECONDS_PER_HOUR
        self.since = now
        self.busy = 0
        self.share = 0.0
        """Cost accrued per request in flight since the meter started: a lease's cost is the difference."""
        self.open = True

    def advance(self, now: float) -> None:
        elapsed = now - self.since
        if elapsed <= 0 or not self.open:
            self.since = max(self.since, now)
            return
        cost = self.usd_per_s * elapsed
        self.pool.instance_seconds += elapsed
        self.pool.cost_usd += cost
        if self.busy:
            self.share += cost / self.busy
        else:
            self.pool.idle_usd += cost
        self.since = now


@dataclass(slots=True)
class Lease:
    """A request's hold on an instance, from `CostLedger.begin` to `CostLedger.end`."""

    meter: _Meter | None
    mark: float


class CostLedger:
    """Instance lifetimes and request leases in, per-pool cost out; the clock is injected for tests."""

    def __init__(self, window_s: float = 300.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.window_s = window_s
        self.pools: dict[str, PoolCost] = {}
        self._meters: dict[str, _Meter] = {}
        self._history: deque[tuple[float, dict[str, tuple[int, float]]]] = deque([(clock(), {})])

    # --- instance lifecycle (from the providers) ---

    def open(self, instance: str, pool: str, usd_per_hour: float) -> None:
        """An instance was started: it costs `usd_per_hour` from now until `close`."""
        now = self.clock()
        pool_cost = self.pools.setdefault(pool, PoolCost())
        meter = self._meters.get(instance)
        if meter is not None and meter.open:
            return
        if meter is not None:  # reopened while requests from its last life were still in flight
            meter.advance(now)
            meter.open = True
            meter.usd_per_s = usd_per_hour / _SECONDS_PER_HOUR
        else:
            self._meters[instance] = _Meter(pool_cost, usd_per_hour, now)
        pool_cost.usd_per_hour += usd_per_hour

    def close(self, instance: str) -> None:
        """The instance was stopped: it costs nothing more; requests still on it keep what they owe."""
        meter = self._meters.get(instance)
        if meter is None or not meter.open:
            return
        meter.advance(self.clock())
        meter.open = False
        meter.pool.usd_per_hour -= meter.usd_per_s * _SECONDS_PER_HOUR
        if not meter.busy:
            del self._meters[instance]

    # --- requests (from the proxy) ---

    def begin(self, instance: str) -> Lease:
        """A request (attempt) starts holding the instance."""
        meter = self._meters.get(instance)
        if meter is None:  # an instance no provider announced costs nothing we know of
            return Lease(None, 0.0)
        meter.advance(self.clock())
        meter.busy += 1
        return Lease(meter, meter.share)

    def end(self, lease: Lease, instance: str) -> float:
        """The attempt let go of the instance; returns the cost attributed to it (USD)."""
        meter = lease.meter
        if meter is None:
            return 0.0
        meter.advance(self.clock())
        meter.busy -= 1
        cost = meter.share - lease.mark
        meter.pool.attributed_usd += cost
        if not meter.open and not meter.busy and self._meters.get(instance) is meter:
            del self._meters[instance]
        return cost

    def output_tokens(self, pool: str, count: int) -> None:
        self.pools.setdefault(pool, PoolCost()).output_tokens += count

    # --- reading ---

    def settle(self) -> dict[str, PoolCost]:
        """Every pool's cost up to now."""
        now = self.clock()
        for meter in self._meters.values():
            meter.advance(now)
        return self.pools

    def window(self) -> dict[str, tuple[int, float]]:
        """Per pool, output tokens and cost over the rolling window (as far back as history goes)."""
        now = self.clock()
        current = {name: (pool.output_tokens, pool.cost_usd) for name, pool in self.settle().items()}
        self._history.append((now, current))
        while len(self._history) > 2 and self._history[1][0] <= now - self.window_s:
            self._history.popleft()  # keep the newest sample at or before the window's start as its base
        base = self._history[0][1]
        return {
            name: (tokens - base.get(name, (0, 0.0))[0], cost - base.get(name, (0, 0.0))[1])
            for name, (tokens, cost) in current.items()
        }

    def collect(self) -> Iterator[Metric]:
        """The prometheus_client custom-collector protocol."""
        windowed = self.window()
        pools = sorted(self.pools.items())
        yield metrics.POOL_COST_RATE.family(((name,), pool.usd_per_hour) for name, pool in pools)
        yield metrics.POOL_COST.family(((name,), pool.cost_usd) for name, pool in pools)
        yield metrics.POOL_IDLE_COST.family(((name,), pool.idle_usd) for name, pool in pools)
        yield metrics.POOL_INSTANCE_SECONDS.family(((name,), pool.instance_seconds) for name, pool in pools)
        ratios = {name: _ratios(*windowed[name]) for name, _ in pools}
        yield metrics.POOL_TOKENS_PER_USD.family(((n,), r[0]) for n, r in ratios.items() if r[0] is not None)
        yield metrics.POOL_USD_PER_MTOK.family(((n,), r[1]) for n, r in ratios.items() if r[1] is not None)
        fleet = _ratios(sum(t for t, _ in windowed.values()), sum(c for _, c in windowed.values()))
        yield metrics.FLEET_TOKENS_PER_USD.family([((), fleet[0])] if fleet[0] is not None else [])
        yield metrics.FLEET_USD_PER_MTOK.family([((), fleet[1])] if fleet[1] is not None else [])
        yield metrics.COST_WINDOW.family([((), self.window_s)])

    def describe(self) -> list[Metric]:
        return []  # registering must not settle the ledger


def _ratios(tokens: int, cost_usd: float) -> tuple[float | None, float | None]:
    """(output tokens per USD, USD per million output tokens); None where undefined."""
    per_usd = tokens / cost_usd if cost_usd > 0 else None
    per_mtok = cost_usd / tokens * 1e6 if tokens > 0 else None
    return per_usd, per_mtok
