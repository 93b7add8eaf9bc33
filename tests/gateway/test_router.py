"""Router choices on plain data with a seeded random source."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from gateway.router import PoolRoute, Router
from runtimes.instance import Instance, InstanceState


def ready(id_: str, pool: str, in_flight: int = 0) -> Instance:
    return Instance(id=id_, pool=pool, url=f"http://{id_}", state=InstanceState.READY, in_flight=in_flight)


def router(pools: dict[str, tuple[float, list[Instance]]], seed: int = 7) -> Router:
    routes = [PoolRoute(name, "m", weight, lambda xs=xs: xs) for name, (weight, xs) in pools.items()]  # type: ignore[misc]
    return Router(routes, eject_s=5.0, rng=random.Random(seed))


def test_pools_are_chosen_in_proportion_to_weight() -> None:
    r = router({"a": (3.0, [ready("a0", "a")]), "b": (1.0, [ready("b0", "b")])})
    counts = Counter(r.choose("m", now=0).pool for _ in range(4000))  # type: ignore[union-attr]
    assert counts["a"] / 4000 == pytest.approx(0.75, abs=0.03)


def test_zero_weight_pool_gets_nothing_and_weights_change_live() -> None:
    r = router({"a": (1.0, [ready("a0", "a")]), "b": (0.0, [ready("b0", "b")])})
    assert {r.choose("m", now=0).pool for _ in range(200)} == {"a"}  # type: ignore[union-attr]
    r.set_weights({"a": 0.0, "b": 2.0})
    assert {r.choose("m", now=0).pool for _ in range(200)} == {"b"}  # type: ignore[union-attr]


def test_power_of_two_prefers_the_less_loaded_instance() -> None:
    busy, idle = ready("a0", "a", in_flight=9), ready("a1", "a", in_flight=0)
    r = router({"a": (1.0, [busy, idle])})
    assert {r.choose("m", now=0) for _ in range(100)} == {idle}


def test_unready_excluded_and_ejected_instances_are_skipped() -> None:
    starting = Instance(id="a0", pool="a", state=InstanceState.STARTING)
    draining = Instance(id="a1", pool="a", state=InstanceState.DRAINING)
    ejected, tried, good = ready("b0", "b"), ready("b1", "b"), ready("c0", "c")
    r = router({"a": (1.0, [starting, draining]), "b": (1.0, [ejected, tried]), "c": (1.0, [good])})
    r.failed(ejected, now=100.0)
    choices = {r.choose("m", now=101.0, exclude=frozenset({"b1"})) for _ in range(100)}
    assert choices == {good}
    # The ejection ends after eject_s, and a pool whose instances all fell away is skipped.
    assert r.choose("m", now=106.0, exclude=frozenset({"b1", "c0"})) is ejected


def test_ejection_backs_off_and_success_resets_it() -> None:
    r = router({"a": (1.0, [])})
    instance = ready("a0", "a")
    r.failed(instance, now=0.0)
    r.failed(instance, now=0.0)
    assert instance.ejected_until == pytest.approx(10.0)  # 5 s, doubled on the second failure in a row
    r.succeeded(instance)
    assert instance.routable(now=0.0)


def test_nothing_to_choose() -> None:
    r = router({"a": (1.0, [Instance(id="a0", pool="a")])})
    assert r.choose("m", now=0) is None
    assert r.choose("other", now=0) is None
    assert not r.has_ready("m", now=0)


def test_class_weights_route_each_size_class_on_its_own_split() -> None:
    r = router({"a": (1.0, [ready("a0", "a")]), "b": (1.0, [ready("b0", "b")])})
    r.set_weights({"a": 0.5, "b": 0.5}, {"in<=1024/out<=256": {"a": 1.0, "b": 0.0}, "in>1024": {"a": 0.0, "b": 1.0}})
    short = Counter(r.choose("m", now=0, classes=("in<=1024/out<=256", "in<=1024")).pool for _ in range(300))  # type: ignore[union-attr]
    long = Counter(r.choose("m", now=0, classes=("in>1024",)).pool for _ in range(300))  # type: ignore[union-attr]
    unknown = Counter(r.choose("m", now=0, classes=("in<=1024",)).pool for _ in range(2000))  # type: ignore[union-attr]
    assert short == {"a": 300}
    assert long == {"b": 300}
    assert unknown["a"] / 2000 == pytest.approx(0.5, abs=0.05)  # no class weights: the pool weights decide


def test_class_weights_fall_back_when_their_pools_cannot_serve() -> None:
    down = Instance(id="a0", pool="a", url="http://a0", state=InstanceState.STARTING)
    r = router({"a": (1.0, [down]), "b": (1.0, [ready("b0", "b")])})
    r.set_weights({"a": 0.5, "b": 0.5}, {"in<=1024": {"a": 1.0}})
    assert {r.choose("m", now=0, classes=("in<=1024",)).pool for _ in range(50)} == {"b"}  # type: ignore[union-attr]
