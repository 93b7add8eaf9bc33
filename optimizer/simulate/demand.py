"""Demand by size class, as the solver takes it: the run's peak and each interval's, from the arrivals.

The baselines are sized for the peak: the workload curve's highest rate with the run's own class
mix (what an operator planning for the busiest hour would take). The oracle sees the true demand
of every interval: the requests that really arrive in it.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from optimizer.simulate.workloads import Arrivals
from optimizer.solver import DemandClass

__all__ = ["ClassIndex", "interval_demand", "peak_demand", "total_demand"]


class ClassIndex:
    """The size class of every request as a code into `names`, for counting with numpy."""

    def __init__(self, labels: list[str]) -> None:
        self.names = sorted(set(labels))
        position = {name: code for code, name in enumerate(self.names)}
        self.codes = np.array([position[label] for label in labels], dtype=np.int64)

    def samples(self, arrivals: Arrivals) -> dict[str, tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]]:
        """Class -> (prompt lengths, output lengths) of its requests in the run."""
        return {
            name: (arrivals.prompt[self.codes == code], arrivals.output[self.codes == code])
            for code, name in enumerate(self.names)
        }


def _demand(model: str, index: ClassIndex, arrivals: Arrivals, start: int, stop: int, rate: float) -> list[DemandClass]:
    """Classes of requests start..stop, the total scaled to `rate` requests per second."""
    codes = index.codes[start:stop]
    count = len(codes)
    if count == 0:
        return []
    size = len(index.names)
    per_class = np.bincount(codes, minlength=size)
    prompts = np.bincount(codes, weights=arrivals.prompt[start:stop].astype(np.float64), minlength=size)
    outputs = np.bincount(codes, weights=arrivals.output[start:stop].astype(np.float64), minlength=size)
    return [
        DemandClass(
            model=model,
            size_class=name,
            rate=rate * float(per_class[code]) / count,
            input_tokens=float(prompts[code] / per_class[code]),
            output_tokens=float(outputs[code] / per_class[code]),
        )
        for code, name in enumerate(index.names)
        if per_class[code] > 0
    ]


def peak_demand(model: str, index: ClassIndex, arrivals: Arrivals) -> list[DemandClass]:
    """The workload's peak rate, split by the run's class mix."""
    return _demand(model, index, arrivals, 0, len(arrivals), arrivals.curve.peak)


def total_demand(model: str, index: ClassIndex, arrivals: Arrivals) -> list[DemandClass]:
    """The run's mean demand."""
    return _demand(model, index, arrivals, 0, len(arrivals), len(arrivals) / arrivals.duration_s)


def interval_demand(model: str, index: ClassIndex, arrivals: Arrivals, start: float, end: float) -> list[DemandClass]:
    """The requests that really arrive in [start, end), as rates."""
    first, last = np.searchsorted(arrivals.time, [start, end], side="left")
    return _demand(model, index, arrivals, int(first), int(last), float(last - first) / (end - start))
