"""Signals: the trailing window of request records, summed per pool and size class, plus the fleet's state.

Records come from the gateway's in-process feed, from OTLP exports of other gateways, or from a
recorded trace file; all three go through `SignalCollector.add`. A snapshot is plain frozen data,
the input of the pure tick.
"""

from __future__ import annotations

import collections
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from observability.records import RequestRecord
from optimizer.config import ModelConfig
from optimizer.sizes import SizeClasses

__all__ = ["ClassWindow", "Demand", "PoolStatus", "PoolWindow", "SignalCollector", "Signals", "percentile"]

CLIENT_CLOSED = 499


@dataclass(frozen=True)
class PoolStatus:
    """A pool as the fleet sees it now (not from traces)."""

    ready: int
    """Instances that can take requests now."""
    starting: int = 0
    target: int = 0
    healthy: bool = True
    """False when the pool has instances but none is routable (failing probes, ejected)."""
    in_flight: int = 0
    engine_running: float | None = None
    """Requests the engines report running, summed over the pool's instances (None: not scraped)."""
    engine_waiting: float | None = None


@dataclass(frozen=True)
class ClassWindow:
    """The successful requests of one pool and size class in the window. Failures count on the pool
    (`PoolWindow.failures`) alone: a request that failed has no answer, so no size class."""

    requests: int
    input_tokens: float
    """Mean per successful request."""
    output_tokens: float
    ttft_p95_s: float | None
    tpot_p95_s: float | None
    tpot_mean_s: float | None
    duration_mean_s: float


@dataclass(frozen=True)
class PoolWindow:
    requests: int
    failures: int
    """Requests that ended in a server error on this pool."""
    busy_s: float
    """The whole durations of the requests that ended in the window: its mean concurrency times the
    window (Little's law: completions per second times their mean time in the pool)."""
    output_tokens: int
    ttft_p95_s: float | None
    tpot_p95_s: float | None
    tpot_mean_s: float | None
    classes: dict[str, ClassWindow] = field(default_factory=dict)
    context_token_s: float = 0.0
    """Like `busy_s`, each request's seconds weighted by the context it holds (prompt + half its answer)."""
    instance_s: float | None = None
    """Seconds the pool's instances were up within the window, told from the instances its requests
    name (None when they name none): the per-instance load of a window an instance joined or left."""

    def instance_seconds(self, window_s: float, ready: int) -> float:
        """`instance_s`, or the window times the instances ready now where the records cannot tell."""
        if self.instance_s is not None and self.instance_s > 0:
            return self.instance_s
        return window_s * max(1, ready)

    @property
    def prompt_tokens(self) -> float:
        """Prompt tokens of the window's successful requests."""
        return sum(group.input_tokens * group.requests for group in self.classes.values())

    @property
    def error_rate(self) -> float:
        return self.failures / self.requests if self.requests else 0.0


@dataclass(frozen=True)
class Demand:
    """What clients asked of one model in one size class, served or not."""

    model: str
    size_class: str
    rate: float
    """Requests per second that arrived in the window (and have finished; the tick adds those in flight)."""
    input_tokens: float
    output_tokens: float
    recent_rate: float = 0.0
    """The same over the window's last quarter: how demand is moving now."""


@dataclass(frozen=True)
class Signals:
    now: float
    window_s: float
    """The span the rates are over (shorter than configured right after start)."""
    demand: dict[tuple[str, str], Demand]
    pools: dict[str, PoolWindow]
    status: dict[str, PoolStatus]
    recent_pools: dict[str, PoolWindow] = field(default_factory=dict)
    """The same over the window's last quarter: latency as it is now, not as it was a window ago."""


class SignalCollector:
    """Keeps the records that ended within the window; a snapshot sums them."""

    def __init__(self, window_s: float, size_classes: SizeClasses, models: Sequence[ModelConfig]) -> None:
        self.window_s = window_s
        self.size_classes = size_classes
        self.models = {model.name for model in models}
        self.records: collections.deque[RequestRecord] = collections.deque()
        self.first_seen: float | None = None
        self.seen = 0
        self._span_ids: set[str] = set()
        """Spans in the window: a span that arrives twice (in process and over OTLP) counts once."""

    def add(self, record: RequestRecord) -> None:
        if record.model not in self.models:
            return  # unknown models were answered 404; they are nobody's demand
        if record.span_id:  # "" when the gateway recorded no span: nothing to tell duplicates by
            if record.span_id in self._span_ids:
                return
            self._span_ids.add(record.span_id)
        if self.first_seen is None or record.start < self.first_seen:  # feeds deliver by end, not by start
            self.first_seen = record.start
        self.seen += 1
        if self.records and record.end < self.records[-1].end:  # several feeds interleave a little: keep order
            self._insert_late(record)
        else:
            self.records.append(record)

    def extend(self, records: Iterable[RequestRecord]) -> None:
        for record in records:
            self.add(record)

    def snapshot(self, now: float, status: Mapping[str, PoolStatus]) -> Signals:
        since = now - self.window_s
        while self.records and self.records[0].end < since:
            self._span_ids.discard(self.records.popleft().span_id)
        window = [r for r in self.records if r.end <= now]
        started = self.first_seen if self.first_seen is not None else now
        span = max(1.0, min(self.window_s, now - started))
        first_start: dict[str, float] = {}
        for record in window:
            if record.instance and record.start < first_start.get(record.instance, math.inf):
                first_start[record.instance] = record.start
        ready = {name: pool.ready for name, pool in status.items()}
        recent = [r for r in window if r.end >= now - span / 4]
        return Signals(
            now=now,
            window_s=span,
            demand=self._demand(window, now, span),
            pools=self._pools(window, max(since, started), now, first_start, ready),
            recent_pools=self._pools(recent, max(now - span / 4, started), now, first_start, ready),
            status=dict(status),
        )

    def _insert_late(self, record: RequestRecord) -> None:
        position = len(self.records)
        while position > 0 and self.records[position - 1].end > record.end:
            position -= 1
        self.records.insert(position, record)

    def _size_class(self, record: RequestRecord) -> str:
        return self.size_classes.classify(record.input_tokens, record.output_tokens)

    def _demand(self, window: list[RequestRecord], now: float, span: float) -> dict[tuple[str, str], Demand]:
        """Arrival rates by class: requests that started in the window (a queue that slows answers
        must not look like less demand). Requests that failed before usage have no size: they count in
        proportion to the sized ones of their model (all in the smallest class when none has a size)."""
        window = [r for r in window if r.start >= now - span]
        recent_since = now - span / 4
        sized: dict[tuple[str, str], list[RequestRecord]] = collections.defaultdict(list)
        unsized: collections.Counter[str] = collections.Counter()
        for record in window:
            if record.input_tokens or record.output_tokens:
                sized[record.model, self._size_class(record)].append(record)
            else:
                unsized[record.model] += 1
        smallest = self.size_classes.names[0]
        for model in unsized:
            if not any(key[0] == model for key in sized):
                sized[model, smallest] = []
        per_model = collections.Counter(model for (model, _), records in sized.items() for _ in records)
        recent_unsized = collections.Counter(r.model for r in window if r.start >= recent_since and
                                             not (r.input_tokens or r.output_tokens))  # fmt: skip
        demand = {}
        for (model, size_class), records in sized.items():
            known = len(records)
            share = known / per_model[model] if per_model[model] else 1.0
            recent = sum(1 for r in records if r.start >= recent_since) + recent_unsized[model] * share
            demand[model, size_class] = Demand(
                model=model,
                size_class=size_class,
                rate=(known + unsized[model] * share) / span,
                input_tokens=_mean([r.input_tokens for r in records]),
                output_tokens=_mean([r.output_tokens for r in records]),
                recent_rate=recent / (span / 4),
            )
        return demand

    def _pools(
        self,
        window: list[RequestRecord],
        since: float,
        now: float,
        first_start: Mapping[str, float],
        ready: Mapping[str, int],
    ) -> dict[str, PoolWindow]:
        by_pool: dict[str, list[RequestRecord]] = collections.defaultdict(list)
        for record in window:
            if record.pool:
                by_pool[record.pool].append(record)
        return {
            pool: self._pool_window(records, _instance_seconds(records, since, now, first_start, ready.get(pool)))
            for pool, records in by_pool.items()
        }

    def _pool_window(self, records: list[RequestRecord], instance_s: float | None) -> PoolWindow:
        by_class: dict[str, list[RequestRecord]] = collections.defaultdict(list)
        for record in records:
            if record.status < 400:
                by_class[self._size_class(record)].append(record)
        ok = [r for r in records if r.status < 400]
        # Each request's whole time in the pool, not the part inside the window: the window holds only
        # requests that have ended, so clipping at its start while those still in flight are missing
        # counted 1 - D/2W of the load for requests of D seconds (a quarter of it for a minute-long
        # answer in a 30-s window), and latency seen at full load was learnt as latency at a light one.
        # A client that left frees its slot.
        spent = [(r.end - r.start, r) for r in records if r.status != CLIENT_CLOSED]
        return PoolWindow(
            requests=len(records),
            failures=sum(1 for r in records if r.status >= 500),
            busy_s=sum(seconds for seconds, _ in spent),
            output_tokens=sum(r.output_tokens for r in ok),
            ttft_p95_s=percentile([r.ttft_s for r in ok if r.ttft_s is not None], 95),
            tpot_p95_s=percentile([r.tpot_s for r in ok if r.tpot_s is not None], 95),
            tpot_mean_s=_mean_or_none([r.tpot_s for r in ok if r.tpot_s is not None]),
            classes={name: _class_window(group) for name, group in by_class.items()},
            context_token_s=sum(seconds * (r.input_tokens + r.output_tokens / 2) for seconds, r in spent),
            instance_s=instance_s,
        )


def _instance_seconds(
    records: list[RequestRecord], since: float, now: float, first_start: Mapping[str, float], ready: int | None
) -> float | None:
    """Seconds the instances named in `records` were up within [since, now].

    An instance counts from its first request still held (the window's start if earlier) to now; an
    instance that came up within the window did not carry the load before it. When more instances
    served the window than are ready now, those whose last request ended first are taken to have
    left and count until then. Dividing by the instances ready now instead made the load carried by
    one instance look like half of it once a second one came up, and the first window's latency at
    full load taught the model that the pool breaks its SLO at half load.
    """
    last_end: dict[str, float] = {}
    for record in records:
        if record.instance:
            last_end[record.instance] = max(record.end, last_end.get(record.instance, -math.inf))
    if not last_end:
        return None
    gone = max(0, len(last_end) - ready) if ready is not None else 0
    by_last_end = sorted(last_end, key=last_end.__getitem__)
    total = 0.0
    for position, instance in enumerate(by_last_end):
        end = last_end[instance] if position < gone else now
        total += max(0.0, end - max(since, first_start.get(instance, since)))
    return total


def _class_window(records: list[RequestRecord]) -> ClassWindow:
    ttfts = [r.ttft_s for r in records if r.ttft_s is not None]
    tpots = [r.tpot_s for r in records if r.tpot_s is not None]
    return ClassWindow(
        requests=len(records),
        input_tokens=_mean([r.input_tokens for r in records]),
        output_tokens=_mean([r.output_tokens for r in records]),
        ttft_p95_s=percentile(ttfts, 95),
        tpot_p95_s=percentile(tpots, 95),
        tpot_mean_s=_mean_or_none(tpots),
        duration_mean_s=_mean([r.duration_s for r in records]),
    )


def percentile(values: Sequence[float], q: float) -> float | None:
    """The q-th percentile by linear interpolation between closest ranks (numpy's default); None when empty."""
    if not values:
        return None
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else 0.0


def _mean_or_none(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None
