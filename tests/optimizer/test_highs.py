"""The HiGHS wrapper: integer and linear optima, infeasibility, and nothing written to stdout."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from scipy.optimize import linprog

from optimizer.highs import Rows, minimize


def test_integer_variables_take_the_integer_optimum_not_the_relaxations() -> None:
    # max 5a + 4b  s.t.  6a + 4b <= 24,  a + 2b <= 6: the LP optimum is (3, 1.5), the integer one (4, 0).
    cost = np.array([-5.0, -4.0])
    rows = [Rows(np.array([[6.0, 4.0], [1.0, 2.0]]), lower=-np.inf, upper=np.array([24.0, 6.0]))]
    lower, upper = np.zeros(2), np.full(2, np.inf)

    relaxed = minimize(cost, lower, upper, rows)
    integral = minimize(cost, lower, upper, rows, integral=np.array([True, True]))

    assert relaxed.x is not None and integral.x is not None
    assert relaxed.x == pytest.approx([3.0, 1.5])
    best = max(
        (5 * a + 4 * b, (a, b))
        for a, b in itertools.product(range(5), range(4))
        if 6 * a + 4 * b <= 24 and a + 2 * b <= 6
    )
    assert -cost @ integral.x == pytest.approx(best[0])
    assert integral.x == pytest.approx(best[1])


def test_a_linear_program_matches_scipys_linprog_on_random_instances() -> None:
    generator = np.random.default_rng(7)
    for _ in range(20):
        size, count = 6, 4
        matrix = generator.uniform(0.0, 2.0, (count, size))
        cost = -generator.uniform(0.1, 1.0, size)
        limits = generator.uniform(1.0, 5.0, count)
        ours = minimize(cost, np.zeros(size), np.full(size, 3.0), [Rows(matrix, lower=-np.inf, upper=limits)])
        theirs = linprog(cost, A_ub=matrix, b_ub=limits, bounds=(0, 3.0), method="highs")
        assert ours.x is not None
        assert cost @ ours.x == pytest.approx(theirs.fun, rel=1e-7)


def test_equality_rows_and_scalar_bounds_broadcast_over_their_rows() -> None:
    # x0 + x1 = 1 (a 1-D row), x0 - x2 = 0 and x1 - x2 >= 0 (one block, scalar bounds); min x1 + 2 x2 wants x1 = 1.
    rows = [
        Rows(np.array([1.0, 1.0, 0.0]), lower=1.0, upper=1.0),
        Rows(np.array([[1.0, 0.0, -1.0], [0.0, 1.0, -1.0]]), lower=np.array([0.0, 0.0]), upper=np.array([0.0, np.inf])),
    ]
    found = minimize(np.array([0.0, 1.0, 2.0]), np.zeros(3), np.ones(3), rows)
    assert found.x is not None
    assert found.x == pytest.approx([0.0, 1.0, 0.0])


def test_an_infeasible_program_has_no_solution_and_says_so() -> None:
    rows = [Rows(np.array([1.0, 1.0]), lower=3.0, upper=np.inf)]
    found = minimize(np.ones(2), np.zeros(2), np.ones(2), rows, integral=np.array([True, False]))
    assert found.x is None
    assert "nfeasible" in found.message


def test_solving_writes_nothing_to_stdout_or_stderr(capfd: pytest.CaptureFixture[str]) -> None:
    """HiGHS writes from C++ to the process's file descriptors: the gateway's and the simulator's output stay clean."""
    generator = np.random.default_rng(11)
    for _ in range(30):
        size = 12
        matrix = generator.uniform(0.0, 3.0, (8, size))
        minimize(-generator.uniform(0.1, 1.0, size), np.zeros(size), np.full(size, 5.0),
                 [Rows(matrix, lower=-np.inf, upper=generator.uniform(5.0, 20.0, 8))],
                 integral=np.arange(size) % 2 == 0)  # fmt: skip
    out, err = capfd.readouterr()
    assert out == ""
    assert err == ""
