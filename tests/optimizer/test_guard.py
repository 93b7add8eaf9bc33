"""The guard between the solver and the fleet: step limits and deadband on shares; cooldowns, holds and steps on targets."""

from __future__ import annotations

import itertools

import pytest

from optimizer.guard import PoolMemory, ScaleStep, break_even_s, guard_shares, guard_target
from optimizer.policy import GuardConfig

GUARD = GuardConfig()  # step 0.3, deadband 0.03, up cooldown 30 s, down cooldown 120 s, delay 180 s, +4 / -1
HOLD = 180.0


def approx(shares: dict[str, float]) -> dict[str, object]:
    return {pool: pytest.approx(value, abs=1e-9) for pool, value in shares.items()}


# Shares


def test_growth_is_limited_to_the_step_per_tick() -> None:
    shares = {"a": 1.0, "b": 0.0}
    path = []
    for _ in range(5):
        shares = guard_shares(shares, {"a": 0.0, "b": 1.0}, set(), GUARD)
        path.append(round(shares["b"], 9))
        assert sum(shares.values()) == pytest.approx(1.0)
    assert path == [0.3, 0.6, 0.9, 1.0, 1.0]


def test_each_growing_pool_is_limited_and_the_shrinking_ones_pay_for_it() -> None:
    shares = guard_shares({"a": 1.0, "b": 0.0, "c": 0.0}, {"b": 0.5, "c": 0.5}, set(), GUARD)
    assert shares == approx({"a": 0.4, "b": 0.3, "c": 0.3})
    # Two shrinking pools give up share in proportion to what they have to lose.
    shares = guard_shares({"a": 0.5, "b": 0.5, "c": 0.0}, {"a": 0.4, "b": 0.1, "c": 0.5}, set(), GUARD)
    assert shares == approx({"a": 0.5 - 0.3 * 0.1 / 0.5, "b": 0.5 - 0.3 * 0.4 / 0.5, "c": 0.3})


def test_a_small_move_within_the_step_lands_on_the_proposal() -> None:
    assert guard_shares({"a": 0.5, "b": 0.5}, {"a": 0.2, "b": 0.8}, set(), GUARD) == approx({"a": 0.2, "b": 0.8})


def test_changes_within_the_deadband_are_not_applied() -> None:
    old = {"a": 0.5, "b": 0.5}
    assert guard_shares(old, {"a": 0.52, "b": 0.48}, set(), GUARD) == old
    assert guard_shares(old, {"a": 0.55, "b": 0.45}, set(), GUARD) == approx({"a": 0.55, "b": 0.45})


def test_opening_or_closing_a_pool_is_never_within_the_deadband() -> None:
    """A pool's exploration share is smaller than the deadband: it must still reach a pool that has none."""
    assert guard_shares({"a": 1.0, "b": 0.0}, {"a": 0.98, "b": 0.02}, set(), GUARD) == approx({"a": 0.98, "b": 0.02})
    assert guard_shares({"a": 0.98, "b": 0.02}, {"a": 1.0}, set(), GUARD) == approx({"a": 1.0, "b": 0.0})
    # What rounding leaves of a share moved to 0 is no share: it neither holds the pool shut nor stays in the split.
    moved = guard_shares({"a": 0.7, "b": 0.3}, {"a": 1.0, "b": 0.0}, set(), GUARD)
    assert moved["b"] == 0.0
    opened = guard_shares({"a": 1.0, "b": 1e-16}, {"a": 0.98, "b": 0.02}, set(), GUARD)
    assert opened == approx({"a": 0.98, "b": 0.02})


def test_shares_are_normalized_on_both_sides() -> None:
    # Configured weights 3:1 and a proposal in other units are splits all the same.
    assert guard_shares({"a": 3.0, "b": 1.0}, {"a": 2.0, "b": 2.0}, set(), GUARD) == approx({"a": 0.5, "b": 0.5})


def test_a_blocked_pool_drops_to_zero_at_once() -> None:
    shares = guard_shares({"a": 0.1, "b": 0.9}, {"a": 1.0, "b": 0.0}, {"b"}, GUARD)
    assert shares == approx({"a": 1.0, "b": 0.0})
    # Even when the proposal still names it.
    shares = guard_shares({"a": 0.1, "b": 0.9}, {"a": 0.5, "b": 0.5}, {"b"}, GUARD)
    assert shares == approx({"a": 1.0, "b": 0.0})


def test_a_blocked_pools_share_goes_where_the_proposal_puts_it() -> None:
    # b fails; the proposal sends its traffic to c (a is full): c gets it at once, a keeps what it had.
    shares = guard_shares({"a": 0.5, "b": 0.5, "c": 0.0}, {"a": 0.5, "c": 0.5}, {"b"}, GUARD)
    assert shares == approx({"a": 0.5, "b": 0.0, "c": 0.5})


def test_with_no_open_pool_in_the_proposal_the_open_shares_stay() -> None:
    assert guard_shares({"a": 0.5, "b": 0.5}, {"b": 1.0}, {"b"}, GUARD) == {"a": 0.5, "b": 0.0}


def test_from_no_previous_split_the_proposal_applies_at_once() -> None:
    assert guard_shares({}, {"a": 0.2, "b": 0.8}, set(), GUARD) == approx({"a": 0.2, "b": 0.8})


# Targets


def step(now: float, current: int, proposed: int, memory: PoolMemory, **kwargs: object) -> ScaleStep:
    options: dict[str, object] = {"needed": False, "economical": False, "hold_s": HOLD, **kwargs}
    return guard_target(now, current, proposed, memory, GUARD, **options)  # type: ignore[arg-type]


def test_scale_up_for_capacity_is_immediate_and_bounded_per_tick() -> None:
    up = step(100.0, 1, 3, PoolMemory(), needed=True)
    assert up.target == 3
    assert "demand exceeds capacity" in up.reason
    assert up.memory.last_up == 100.0 and up.memory.last_change == 100.0 and up.memory.last_direction == 1
    assert step(100.0, 1, 10, PoolMemory(), needed=True).target == 1 + GUARD.max_scale_up


def test_scale_up_for_economy_only_when_it_repays_its_cold_start() -> None:
    held = step(100.0, 1, 3, PoolMemory())
    assert held.target == 1
    assert "would not repay" in held.reason
    assert held.memory == PoolMemory()
    cheaper = step(100.0, 1, 3, PoolMemory(), economical=True)
    assert cheaper.target == 3
    assert "cheaper fleet" in cheaper.reason


def test_scale_up_waits_for_its_cooldown() -> None:
    first = step(0.0, 1, 3, PoolMemory(), needed=True)
    held = step(GUARD.scale_up_cooldown_s - 1, 3, 6, first.memory, needed=True)
    assert held.target == 3
    assert "scale-up cooldown" in held.reason
    again = step(GUARD.scale_up_cooldown_s, 3, 6, held.memory, needed=True)
    assert again.target == 6


def test_scale_down_waits_for_the_surplus_to_last_then_steps_once() -> None:
    memory = PoolMemory()
    for now in (0.0, 60.0, HOLD - 1):
        held = step(now, 3, 1, memory)
        assert held.target == 3
        assert "surplus" in held.reason
        memory = held.memory
    assert memory.surplus_since == 0.0
    down = step(HOLD, 3, 1, memory)
    assert down.target == 2  # one instance per tick at most, however large the surplus
    assert down.memory.last_direction == -1 and down.memory.last_change == HOLD


def test_scale_down_goes_one_step_at_a_time_with_the_cooldown_between() -> None:
    current, memory = 5, PoolMemory()
    changes = []
    for tick in range(200):
        now = 15.0 * tick
        result = step(now, current, 1, memory)
        if result.target != current:
            assert result.target == current - 1
            changes.append(now)
        current, memory = result.target, result.memory
    assert current == 1
    assert changes[0] == HOLD
    assert all(later - earlier >= GUARD.scale_down_cooldown_s for earlier, later in itertools.pairwise(changes))


def test_scale_down_waits_for_the_cooldown_after_any_change() -> None:
    grown = step(0.0, 1, 3, PoolMemory(), needed=True)
    # A short hold: the cooldown after the scale-up is what binds.
    held = step(60.0, 3, 2, PoolMemory(**{**vars(grown.memory), "surplus_since": 0.0}), hold_s=30.0)
    assert held.target == 3
    assert "scale-down cooldown" in held.reason
    assert step(GUARD.scale_down_cooldown_s, 3, 2, held.memory, hold_s=30.0).target == 2


def test_a_surplus_that_goes_away_starts_over() -> None:
    memory = step(0.0, 3, 2, PoolMemory()).memory
    memory = step(100.0, 3, 3, memory).memory
    assert memory.surplus_since is None
    assert step(HOLD, 3, 2, memory).target == 3  # the surplus is new again
    # A proposal to grow clears it too.
    memory = step(0.0, 3, 2, PoolMemory()).memory
    memory = step(100.0, 3, 4, memory).memory
    assert memory.surplus_since is None


def test_a_surplus_outlasts_ticks_that_keep_the_pool_for_less_time_than_it_lasted() -> None:
    """Estimates near a boundary wobble: a proposal that keeps the pool for one tick pauses the wait, not restarts it."""
    memory = PoolMemory()
    for now in (0.0, 15.0, 30.0, 45.0):
        memory = step(now, 3, 2, memory).memory
    memory = step(60.0, 3, 3, memory).memory  # one tick of keeping
    assert memory.surplus_since == 0.0
    # 15 s of the surplus did not count: removal comes 15 s later than it would have.
    assert step(HOLD + 14.0, 3, 2, memory).target == 3
    assert step(HOLD + 15.0, 3, 2, memory).target == 2
    # Kept as long as it lasted: over.
    memory = step(0.0, 3, 2, PoolMemory()).memory
    memory = step(30.0, 3, 2, memory).memory
    memory = step(45.0, 3, 3, memory).memory
    assert memory.surplus_since == 0.0
    assert step(60.0, 3, 3, memory).memory.surplus_since is None


def test_break_even_is_cold_start_plus_risk_at_the_hourly_price() -> None:
    # $3.60/h is $0.001/s: $0.50 of risk is worth 500 s of an idle instance.
    assert break_even_s(90.0, 3.6, 0.5) == pytest.approx(590.0)
    assert break_even_s(90.0, 3.6, 0.0) == pytest.approx(90.0)
    assert break_even_s(90.0, 0.0, 0.5) == 90.0  # free instances: only the time to ready


def test_direction_changes_are_counted() -> None:
    memory = step(0.0, 1, 2, PoolMemory(), needed=True).memory
    memory = step(60.0, 2, 3, memory, needed=True).memory
    assert (memory.last_direction, memory.direction_changes) == (1, 0)
    memory = step(100.0, 3, 2, memory).memory
    memory = step(100.0 + HOLD, 3, 2, memory).memory
    assert (memory.last_direction, memory.direction_changes) == (-1, 1)
    memory = step(400.0, 2, 3, memory, needed=True).memory
    assert (memory.last_direction, memory.direction_changes) == (1, 2)
    # Holding changes nothing.
    assert step(401.0, 3, 3, memory).memory == memory


def test_economy_waits_while_instances_of_the_fleet_are_starting() -> None:
    wait = "instances of the last change are still starting"
    held = step(100.0, 1, 3, PoolMemory(), economical=True, economy_wait=wait)
    assert held.target == 1
    assert held.reason == f"hold at 1: {wait}"
    # Capacity never waits: the demand is not served as it is.
    assert step(100.0, 1, 3, PoolMemory(), needed=True, economy_wait=wait).target == 3
