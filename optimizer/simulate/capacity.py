"""True capacity: the highest request rate one instance sustains within the SLO, measured on the engine model.

The fixed baselines, Melange and the oracle are planned on these numbers; the optimizer never
sees them. They are measured, not computed: each trial feeds one simulated instance a Poisson
stream of the class's requests (lengths resampled from the run's own requests of that class) and
checks TTFT p95 and TPOT p95 after a warm-up. A trial must outlast several request lifetimes
(the longest a request may take within the SLO), or a short burst would fit in one batch and pass
at any rate. Trials share their random numbers (common random numbers: only the time scale
changes with the rate), so feasibility is close to monotone in the rate, and a doubling search
brackets the limit before bisection narrows it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import numpy.typing as npt

from optimizer.config import SLOConfig
from optimizer.simulate.engine import EngineSpec, serve_alone

__all__ = ["CapacitySearch", "capacity_table", "meets_slo", "true_capacity"]

IntArray = npt.NDArray[np.int64]


class CapacitySearch:
    """Search settings: trial length, the share discarded as warm-up, and the relative precision."""

    def __init__(
        self,
        requests: int = 480,
        max_requests: int = 12_000,
        lifetimes: float = 4.0,
        warmup: float = 0.3,
        precision: float = 0.03,
        seed: int = 0,
    ) -> None:
        self.requests = requests
        """Requests per trial at least."""
        self.max_requests = max_requests
        """Requests per trial at most (bounds the time of trials at very high rates)."""
        self.lifetimes = lifetimes
        """Request lifetimes within the SLO that the measured part of a trial spans at least."""
        self.warmup = warmup
        self.precision = precision
        self.seed = seed


def true_capacity(
    spec: EngineSpec,
    prompts: IntArray,
    outputs: IntArray,
    slo: SLOConfig,
    search: CapacitySearch | None = None,
) -> float:
    """Requests per second one instance serves within the SLO for requests like these; 0 when none.

    `prompts` and `outputs` are a sample of the class (resampled with replacement).
    """
    search = search or CapacitySearch()
    if len(prompts) == 0:
        return 0.0
    rng = np.random.default_rng([search.seed, len(prompts), int(prompts.sum() % 1_000_003)])
    pick = rng.integers(0, len(prompts), max(search.requests, search.max_requests))
    fitting = [i for i in pick if spec.fits(int(prompts[i]), int(outputs[i]))]
    if not fitting:
        return 0.0
    sizes = [(int(prompts[i]), int(outputs[i])) for i in fitting]
    unit_times = np.cumsum(rng.exponential(1.0, len(sizes)))
    lifetime = slo.ttft_p95_ms / 1000 + float(np.mean(outputs)) * slo.tpot_p95_ms / 1000
    span = search.lifetimes * lifetime / (1 - search.warmup)

    def feasible(rate: float) -> bool:
        count = min(len(sizes), max(search.requests, math.ceil(rate * span)))
        return meets_slo(spec, unit_times[:count] / rate, sizes[:count], slo, search.warmup)

    low = 1e-3
    if not feasible(low):
        return 0.0
    high = 1.0
    while feasible(high):
        low, high = high, high * 2
        if high > 1e5:
            return low
    while high / low > 1 + search.precision:
        middle = (low * high) ** 0.5
        if feasible(middle):
            low = middle
        else:
            high = middle
    return low


def meets_slo(
    spec: EngineSpec,
    arrivals: npt.NDArray[np.float64],
    sizes: Sequence[tuple[int, int]],
    slo: SLOConfig,
    warmup: float,
) -> bool:
    """Whether one instance fed these arrivals keeps TTFT p95 and TPOT p95 within the SLO after the warm-up."""
    finished = serve_alone(spec, arrivals.tolist(), sizes)
    skip = int(len(sizes) * warmup)
    ttft: list[float] = []
    tpot: list[float] = []
    for done in finished:
        if done.rid < skip:
            continue
        ttft.append(done.first_token - float(arrivals[done.rid]))
        output = sizes[done.rid][1]
        if output > 1:
            tpot.append((done.end - done.first_token) / (output - 1))
    ttft_ok = float(np.percentile(ttft, 95)) * 1000 <= slo.ttft_p95_ms
    tpot_ok = not tpot or float(np.percentile(tpot, 95)) * 1000 <= slo.tpot_p95_ms
    return ttft_ok and tpot_ok


def capacity_table(
    specs: Mapping[str, EngineSpec],
    samples: Mapping[str, tuple[IntArray, IntArray]],
    slo: SLOConfig,
    search: CapacitySearch | None = None,
) -> dict[str, dict[str, float]]:
    """Pool -> size class -> true capacity, for every class with a sample."""
    return {
        pool: {name: true_capacity(spec, prompts, outputs, slo, search) for name, (prompts, outputs) in samples.items()}
        for pool, spec in specs.items()
    }
