"""Linear and mixed-integer programs, solved by HiGHS through its own bindings (`highspy`), quietly.

`scipy.optimize.milp` bundles HiGHS 1.12, whose MIP solver prints
`HighsMipSolverData::transformNewIntegerFeasibleSolution tmpSolver.run();` to the process's stdout
whatever its output options (ERGO-Code/HiGHS#2783): thousands of lines in a simulation, stray ones
in the gateway's log. HiGHS 1.13 dropped that line; this module runs it with its output off.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import highspy
import numpy as np

__all__ = ["Rows", "Solution", "minimize"]


@dataclass(frozen=True)
class Rows:
    """Constraints `lower <= matrix @ x <= upper` (bounds broadcast over the rows; +-inf for none)."""

    matrix: np.ndarray
    lower: np.ndarray | float
    upper: np.ndarray | float


@dataclass(frozen=True)
class Solution:
    x: np.ndarray | None
    """The optimum (within HiGHS's default MIP gap of 1e-4), or None when there is none."""
    message: str


def minimize(
    cost: np.ndarray,
    lower: np.ndarray,
    upper: np.ndarray,
    rows: Sequence[Rows] = (),
    *,
    integral: np.ndarray | None = None,
) -> Solution:
    """min cost @ x over lower <= x <= upper and the rows; the variables where `integral` is true are integers."""
    size = len(cost)
    blocks = [np.atleast_2d(np.asarray(r.matrix, dtype=np.float64)) for r in rows]
    matrix = np.vstack(blocks) if blocks else np.zeros((0, size))
    count = matrix.shape[0]
    row_lower = [np.broadcast_to(r.lower, len(block)) for r, block in zip(rows, blocks, strict=True)]
    row_upper = [np.broadcast_to(r.upper, len(block)) for r, block in zip(rows, blocks, strict=True)]

    lp = highspy.HighsLp()
    lp.num_col_, lp.num_row_ = size, count
    lp.col_cost_ = np.asarray(cost, dtype=np.float64)
    lp.col_lower_ = np.asarray(lower, dtype=np.float64)
    lp.col_upper_ = np.asarray(upper, dtype=np.float64)
    lp.row_lower_ = np.concatenate(row_lower) if row_lower else np.zeros(0)
    lp.row_upper_ = np.concatenate(row_upper) if row_upper else np.zeros(0)
    at_row, at_col = np.nonzero(matrix)  # row-major order: the row-wise sparse layout as it comes
    lp.a_matrix_.format_ = highspy.MatrixFormat.kRowwise
    lp.a_matrix_.num_col_, lp.a_matrix_.num_row_ = size, count
    lp.a_matrix_.start_ = np.searchsorted(at_row, np.arange(count + 1)).astype(np.int32)
    lp.a_matrix_.index_ = at_col.astype(np.int32)
    lp.a_matrix_.value_ = matrix[at_row, at_col]
    if integral is not None and np.any(integral):
        lp.integrality_ = [
            highspy.HighsVarType.kInteger if flag else highspy.HighsVarType.kContinuous for flag in integral
        ]

    solver = highspy.Highs()  # type: ignore[no-untyped-call]  # highspy leaves its __init__ unannotated
    solver.setOptionValue("output_flag", False)
    solver.passModel(lp)
    solver.run()
    status = solver.getModelStatus()
    if status != highspy.HighsModelStatus.kOptimal:
        return Solution(x=None, message=solver.modelStatusToString(status))
    return Solution(x=np.array(solver.getSolution().col_value), message="optimal")
