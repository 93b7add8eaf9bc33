"""The signal collector: the trailing window of records, summed into demand per class and windows per pool."""

from __future__ import annotations

import itertools
import random

import numpy as np
import pytest

from observability.records import RequestRecord
from optimizer.config import ModelConfig
from optimizer.policy import SizeClassConfig
from optimizer.signals import PoolStatus, SignalCollector, percentile
from optimizer.sizes import SizeClasses

SIZES = SizeClasses(SizeClassConfig(input_edges=[1024], output_edges=[256]))
SMALL, LONG_OUT, LONG_IN = "in<=1024/out<=256", "in<=1024/out>256", "in>1024/out<=256"
_ids = itertools.count()


def record(
    start: float,
    end: float | None = None,
    *,
    pool: str = "a",
    model: str = "m",
    status: int = 200,
    input_tokens: int = 100,
    output_tokens: int = 64,
    ttft: float | None = 0.1,
    tpot: float | None = 0.02,
    span_id: str | None = None,
    instance: str | None = None,
) -> RequestRecord:
    end = start + 1.0 if end is None else end
    n = next(_ids)
    return RequestRecord(
        trace_id=f"t{n}", span_id=f"s{n}" if span_id is None else span_id, start=start, end=end,
        operation="chat", model=model, pool=pool, instance=f"{pool}-0" if instance is None else instance, accelerator="cpu-2c", quantization="bf16",
        stream=True, status=status, input_tokens=input_tokens, output_tokens=output_tokens, duration_s=end - start,
        queue_wait_s=None, ttft_s=ttft, tpot_s=tpot, attempts=1, cost_usd=0.0,
    )  # fmt: skip


def collector(window_s: float = 60.0) -> SignalCollector:
    return SignalCollector(window_s, SIZES, [ModelConfig(name="m"), ModelConfig(name="other")])


def test_percentile_is_numpys_linear_percentile() -> None:
    rng = random.Random(7)
    for n in (1, 2, 3, 10, 101):
        values = [rng.expovariate(3.0) for _ in range(n)]
        for q in (0, 5, 50, 90, 95, 99, 100):
            assert percentile(values, q) == pytest.approx(float(np.percentile(values, q)), rel=1e-12)
    assert percentile([], 95) is None


def test_pool_p95s_match_numpy() -> None:
    rng = random.Random(3)
    signals = collector()
    ttfts = [rng.uniform(0.05, 2.0) for _ in range(50)]
    tpots = [rng.uniform(0.01, 0.2) for _ in range(50)]
    for i, (ttft, tpot) in enumerate(zip(ttfts, tpots, strict=True)):
        signals.add(record(i, i + 1.0, ttft=ttft, tpot=tpot))
    window = signals.snapshot(55.0, {}).pools["a"]
    assert window.ttft_p95_s == pytest.approx(float(np.percentile(ttfts, 95)))
    assert window.tpot_p95_s == pytest.approx(float(np.percentile(tpots, 95)))
    assert window.tpot_mean_s == pytest.approx(float(np.mean(tpots)))
    group = window.classes[SMALL]
    assert group.requests == 50
    assert group.ttft_p95_s == window.ttft_p95_s


def test_requests_that_ended_before_the_window_are_dropped() -> None:
    signals = collector(window_s=60.0)
    for t in range(100):
        signals.add(record(t, t + 1.0))  # ends at 1..100
    snap = signals.snapshot(100.0, {})
    assert [r.end for r in signals.records] == [float(t) for t in range(40, 101)]
    assert snap.window_s == 60.0
    assert snap.pools["a"].requests == 61
    # Demand is what arrived in the window: the request that started at 39 s is load, not demand.
    assert snap.demand["m", SMALL].rate == pytest.approx(60 / 60)


def test_records_not_yet_ended_at_now_wait_for_a_later_snapshot() -> None:
    signals = collector()
    signals.add(record(0.0, 10.0))
    signals.add(record(0.0, 30.0))
    assert signals.snapshot(20.0, {}).pools["a"].requests == 1
    assert signals.snapshot(30.0, {}).pools["a"].requests == 2


def test_a_steady_rate_is_measured_over_the_window() -> None:
    signals = collector(window_s=60.0)
    for i in range(400):  # 2 req/s for 200 s
        signals.add(record(1000.0 + i / 2, 1000.0 + i / 2 + 0.5))
    (demand,) = signals.snapshot(1200.0, {}).demand.values()
    assert demand.rate == pytest.approx(2.0, rel=0.02)
    assert (demand.input_tokens, demand.output_tokens) == (100, 64)


def test_right_after_start_the_rate_is_over_the_time_seen() -> None:
    signals = collector(window_s=60.0)
    for i in range(20):  # 2 req/s for the first 10 s
        signals.add(record(1000.0 + i / 2, 1000.0 + i / 2 + 0.5))
    snap = signals.snapshot(1010.0, {})
    assert snap.window_s == pytest.approx(10.0)
    assert snap.demand["m", SMALL].rate == pytest.approx(2.0)
    # Never less than a second: one request just after start is not a rate of thousands.
    signals = collector()
    signals.add(record(1000.0, 1000.05))
    snap = signals.snapshot(1000.1, {})
    assert snap.window_s == 1.0
    assert snap.demand["m", SMALL].rate == pytest.approx(1.0)


def test_the_span_after_start_counts_from_the_earliest_request_however_they_arrive() -> None:
    # A short request ends (and arrives) first; a long one that started 10 s earlier ends later.
    signals = collector(window_s=60.0)
    signals.add(record(1010.0, 1011.0))
    signals.add(record(1000.0, 1020.0))
    snap = signals.snapshot(1020.0, {})
    assert snap.window_s == pytest.approx(20.0)
    assert snap.demand["m", SMALL].rate == pytest.approx(2 / 20)


def test_late_records_are_kept_in_order_and_pruned() -> None:
    signals = collector(window_s=60.0)
    signals.add(record(80.0, 90.0))
    signals.add(record(30.0, 35.0))  # from a slower feed: ended before the one already there
    signals.add(record(90.0, 95.0))
    signals.add(record(60.0, 92.0))
    assert [r.end for r in signals.records] == [35.0, 90.0, 92.0, 95.0]
    snap = signals.snapshot(100.0, {})
    assert [r.end for r in signals.records] == [90.0, 92.0, 95.0]
    assert snap.pools["a"].requests == 3


def test_a_span_seen_twice_counts_once() -> None:
    signals = collector()
    first = record(0.0, 1.0, span_id="same")
    signals.add(first)
    signals.add(first)
    assert signals.seen == 1
    assert signals.snapshot(2.0, {}).pools["a"].requests == 1


def test_busy_time_is_the_whole_time_of_the_requests_that_ended_in_the_window() -> None:
    signals = collector(window_s=60.0)
    signals.add(record(10.0, 20.0))  # ended before the window: pruned
    signals.add(record(30.0, 50.0))  # ended in [40, 100]: all its 20 s count
    signals.add(record(60.0, 90.0))  # 30 s
    signals.add(record(70.0, 100.0, status=500, output_tokens=0))  # 30 s: a failure still held an instance
    signals.add(record(80.0, 95.0, status=499))  # the client left: not counted as load
    signals.add(record(90.0, 130.0))  # still in flight at 100: not in the window yet
    signals.add(record(0.0, 20.0, pool="b"))  # first request: the span counts from t=0
    window = signals.snapshot(100.0, {"a": PoolStatus(ready=2)}).pools["a"]
    assert window.busy_s == pytest.approx(80.0)


def test_busy_time_is_littles_law_for_requests_longer_than_the_window() -> None:
    """A request a second, each 90 s long: 90 in flight. Only requests that have ended are in the window,
    so counting their seconds inside it alone (and none of those still running) found a third of that."""
    signals = collector(window_s=60.0)
    for i in range(400):
        signals.add(record(float(i), i + 90.0))
    now = 300.0
    window = signals.snapshot(now, {"a": PoolStatus(ready=1)}).pools["a"]
    assert window.busy_s / 60.0 == pytest.approx(90.0, rel=0.02)
    recent = signals.snapshot(now, {"a": PoolStatus(ready=1)}).recent_pools["a"]
    assert recent.busy_s / 15.0 == pytest.approx(90.0, rel=0.07)


def test_busy_time_right_after_start_is_within_the_time_seen() -> None:
    signals = collector(window_s=60.0)
    signals.add(record(100.0, 110.0))
    signals.add(record(105.0, 120.0))
    snap = signals.snapshot(120.0, {})
    assert snap.window_s == pytest.approx(20.0)
    assert snap.pools["a"].busy_s == pytest.approx(25.0)


def steady_on(instances: list[str], start: float, end: float, signals: SignalCollector) -> None:
    """Two requests a second, 1 s each, on `instances` in turn."""
    for i in range(int((end - start) * 2)):
        begin = start + i / 2
        signals.add(record(begin, begin + 1.0, instance=instances[i % len(instances)]))


def test_an_instance_that_came_up_in_the_window_counts_from_its_first_request() -> None:
    signals = collector(window_s=60.0)
    steady_on(["a-0"], 0.0, 70.0, signals)
    steady_on(["a-0", "a-1"], 70.0, 99.0, signals)  # a-1 ready at 70: 30 s of the window's 60 on it
    window = signals.snapshot(100.0, {"a": PoolStatus(ready=2)}).pools["a"]
    assert window.instance_s == pytest.approx(60.0 + 30.0, abs=1.0)
    # Two requests in flight all along, carried by one instance and then by two: 1.33 per instance.
    assert window.busy_s / window.instance_seconds(60.0, 2) == pytest.approx(2 * 60 / 90, rel=0.02)


def test_an_instance_that_left_in_the_window_counts_until_its_last_request() -> None:
    signals = collector(window_s=60.0)
    steady_on(["a-0", "a-1"], 0.0, 70.0, signals)
    steady_on(["a-0"], 70.0, 99.0, signals)  # a-1 removed at 70
    window = signals.snapshot(100.0, {"a": PoolStatus(ready=1)}).pools["a"]
    assert window.instance_s == pytest.approx(60.0 + 30.0, abs=1.0)


def test_records_that_name_no_instance_leave_the_instance_count_to_the_fleet() -> None:
    signals = collector(window_s=60.0)
    steady_on([""], 0.0, 99.0, signals)
    window = signals.snapshot(100.0, {"a": PoolStatus(ready=3)}).pools["a"]
    assert window.instance_s is None
    assert window.instance_seconds(60.0, 3) == 180.0


def test_failures_are_server_errors_and_only_successes_give_latency() -> None:
    signals = collector()
    for i in range(6):
        signals.add(record(i, i + 1.0, ttft=0.1, output_tokens=50))
    signals.add(record(7.0, 8.0, status=503, ttft=None, tpot=None, input_tokens=0, output_tokens=0))
    signals.add(record(7.0, 8.0, status=502, ttft=9.0, tpot=9.0, output_tokens=10))
    signals.add(record(7.0, 8.0, status=429, ttft=None, tpot=None, input_tokens=0, output_tokens=0))
    window = signals.snapshot(10.0, {}).pools["a"]
    assert (window.requests, window.failures) == (9, 2)
    assert window.error_rate == pytest.approx(2 / 9)
    assert window.output_tokens == 300
    assert window.ttft_p95_s == pytest.approx(0.1)  # the failed request's 9 s is not a latency
    assert window.classes[SMALL].requests == 6


def test_requests_without_a_pool_are_demand_but_no_pools_window() -> None:
    signals = collector()
    signals.add(record(0.0, 1.0, pool="", status=503, input_tokens=0, output_tokens=0, ttft=None, tpot=None))
    signals.add(record(0.0, 1.0))
    snap = signals.snapshot(2.0, {})
    assert set(snap.pools) == {"a"}
    assert snap.demand["m", SMALL].rate == pytest.approx(2 / 2)


def test_unknown_models_are_ignored() -> None:
    signals = collector()
    signals.add(record(0.0, 1.0, model="nobody"))
    assert signals.seen == 0 and not signals.records
    signals.add(record(0.0, 1.0))
    snap = signals.snapshot(2.0, {})
    assert set(snap.demand) == {("m", SMALL)}


def test_demand_is_split_by_size_class() -> None:
    signals = collector()
    for i in range(10):
        signals.add(record(i, i + 1.0, input_tokens=200, output_tokens=100))
    for i in range(5):
        signals.add(record(i, i + 1.0, input_tokens=300, output_tokens=1000))
    signals.add(record(0.0, 1.0, input_tokens=4000, output_tokens=10, model="other"))
    demand = signals.snapshot(10.0, {}).demand
    assert demand["m", SMALL].rate == pytest.approx(1.0)
    assert demand["m", LONG_OUT].rate == pytest.approx(0.5)
    assert (demand["m", LONG_OUT].input_tokens, demand["m", LONG_OUT].output_tokens) == (300, 1000)
    assert demand["other", LONG_IN].rate == pytest.approx(0.1)


def test_unsized_failures_are_spread_over_their_models_classes() -> None:
    signals = collector()
    for i in range(3):
        signals.add(record(i, i + 1.0, output_tokens=100))
    signals.add(record(0.0, 1.0, output_tokens=1000))
    for _ in range(4):  # failed before usage: no size
        signals.add(record(5.0, 6.0, status=503, input_tokens=0, output_tokens=0, ttft=None, tpot=None))
    signals.add(record(5.0, 6.0, model="other", status=503, input_tokens=0, output_tokens=0, ttft=None, tpot=None))
    demand = signals.snapshot(10.0, {}).demand
    # 3 of m's 4 sized requests are small: 3 of its 4 unsized ones count there, 1 with the long answers.
    assert demand["m", SMALL].rate == pytest.approx((3 + 3) / 10)
    assert demand["m", LONG_OUT].rate == pytest.approx((1 + 1) / 10)
    assert demand["m", SMALL].output_tokens == 100  # sizes are the sized requests' means
    # A model with nothing sized: all in the smallest class.
    assert demand["other", SMALL].rate == pytest.approx(1 / 10)
    assert sum(d.rate for d in demand.values()) == pytest.approx(9 / 10)


def test_a_snapshot_passes_the_fleets_status_through() -> None:
    status = {"a": PoolStatus(ready=1, target=2, starting=1)}
    snap = collector().snapshot(5.0, status)
    assert snap.status == status and snap.status is not status
    assert snap.demand == {} and snap.pools == {}
    assert snap.now == 5.0
