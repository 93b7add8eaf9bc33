"""The cost ledger: instance-time x price = attributed + idle + pending, exactly, on an injected clock."""

from __future__ import annotations

import random

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from observability.cost import CostLedger


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


def test_idle_instance_costs_price_times_time(clock: Clock) -> None:
    ledger = CostLedger(clock=clock)
    ledger.open("a-0", "a", usd_per_hour=3.6)
    clock.now += 100
    pool = ledger.settle()["a"]
    assert pool.cost_usd == pytest.approx(0.1)
    assert pool.idle_usd == pytest.approx(0.1)
    assert pool.instance_seconds == pytest.approx(100)
    assert pool.usd_per_hour == pytest.approx(3.6)


def test_concurrent_requests_share_the_instance(clock: Clock) -> None:
    ledger = CostLedger(clock=clock)
    ledger.open("a-0", "a", usd_per_hour=3600.0)  # $1 per second
    first = ledger.begin("a-0")
    clock.now += 2  # alone: pays 2
    second = ledger.begin("a-0")
    clock.now += 4  # shared: each pays 2
    assert ledger.end(first, "a-0") == pytest.approx(4.0)
    clock.now += 1  # alone again: pays 1
    assert ledger.end(second, "a-0") == pytest.approx(3.0)
    clock.now += 5  # idle
    pool = ledger.settle()["a"]
    assert (pool.cost_usd, pool.attributed_usd, pool.idle_usd) == pytest.approx((12.0, 7.0, 5.0))


def test_stopped_instance_costs_nothing_more_and_in_flight_requests_keep_their_share(clock: Clock) -> None:
    ledger = CostLedger(clock=clock)
    ledger.open("a-0", "a", usd_per_hour=3600.0)
    lease = ledger.begin("a-0")
    clock.now += 3
    ledger.close("a-0")
    clock.now += 10
    assert ledger.end(lease, "a-0") == pytest.approx(3.0)
    pool = ledger.settle()["a"]
    assert (pool.cost_usd, pool.pending_usd, pool.usd_per_hour) == pytest.approx((3.0, 0.0, 0.0))


def test_unknown_instance_costs_nothing(clock: Clock) -> None:
    ledger = CostLedger(clock=clock)
    lease = ledger.begin("nobody")
    clock.now += 5
    assert ledger.end(lease, "nobody") == 0.0


def test_random_run_reconciles_exactly(clock: Clock) -> None:
    """Instances come and go, requests overlap at random: every cent is attributed or idle."""
    rng = random.Random(7)
    ledger = CostLedger(clock=clock)
    prices = {"a": 2.5, "b": 0.4}
    open_instances: dict[str, str] = {}
    leases: list[tuple[object, str]] = []
    attributed = 0.0
    lifetimes: dict[str, list[float]] = {}
    for step in range(5000):
        clock.now += rng.expovariate(10)
        action = rng.random()
        if action < 0.05 or not open_instances:
            pool = rng.choice(list(prices))
            name = f"{pool}-{step}"
            ledger.open(name, pool, prices[pool])
            open_instances[name] = pool
            lifetimes[name] = [clock.now]
        elif action < 0.08 and len(open_instances) > 1:
            name = rng.choice(list(open_instances))
            ledger.close(name)
            del open_instances[name]
            lifetimes[name].append(clock.now)
        elif action < 0.55:
            name = rng.choice(list(open_instances))
            leases.append((ledger.begin(name), name))
        elif leases:
            lease, name = leases.pop(rng.randrange(len(leases)))
            attributed += ledger.end(lease, name)  # type: ignore[arg-type]
    for lease, name in leases:
        attributed += ledger.end(lease, name)  # type: ignore[arg-type]
    pools = ledger.settle()
    expected = sum(
        ((times[1] if len(times) > 1 else clock.now) - times[0]) * prices[name.split("-")[0]] / 3600
        for name, times in lifetimes.items()
    )
    total = sum(p.cost_usd for p in pools.values())
    assert total == pytest.approx(expected, rel=1e-9)
    assert sum(p.attributed_usd for p in pools.values()) == pytest.approx(attributed, rel=1e-9)
    assert attributed + sum(p.idle_usd for p in pools.values()) == pytest.approx(expected, rel=1e-9)


def test_rolling_window_ratios(clock: Clock) -> None:
    ledger = CostLedger(window_s=60, clock=clock)
    ledger.open("a-0", "a", usd_per_hour=3.6)  # $0.001 per second
    clock.now += 100
    ledger.output_tokens("a", 1000)
    assert ledger.window()["a"] == (1000, pytest.approx(0.1))
    clock.now += 60
    ledger.output_tokens("a", 300)
    tokens, cost = ledger.window()["a"]
    assert (tokens, cost) == (300, pytest.approx(0.06))  # only the last 60 s count


def test_exposition(clock: Clock) -> None:
    ledger = CostLedger(clock=clock)
    ledger.open("a-0", "a", usd_per_hour=36.0)
    clock.now += 10
    ledger.output_tokens("a", 500)
    registry = CollectorRegistry()
    registry.register(ledger)
    text = generate_latest(registry).decode()
    assert 'thrifty_pool_cost_usd_total{pool="a"} 0.1' in text
    assert 'thrifty_pool_idle_cost_usd_total{pool="a"} 0.1' in text
    assert 'thrifty_pool_cost_usd_per_hour{pool="a"} 36.0' in text
    assert 'thrifty_pool_output_tokens_per_usd{pool="a"} 5000.0' in text
    assert 'thrifty_pool_usd_per_million_output_tokens{pool="a"} 200.0' in text
    assert "thrifty_fleet_output_tokens_per_usd 5000.0" in text
