"""Workloads: seeded arrival times and request lengths that every policy of a run serves alike.

Arrivals are a Poisson process whose rate follows the workload's curve: constant (`poisson`), an
on/off Markov-modulated process (`bursty`: calm and burst periods of exponential length), or a
compressed day (`diurnal`: a cosine from the night trough to the midday peak and back). They are
drawn by thinning: candidates at the peak rate, each kept with probability rate(t) / peak.

Lengths are lognormal around a median, rounded and clipped, per component of the size mix (chat
turns, long documents). Arrival times and lengths come from separate seeded streams, so changing
the mix does not move the arrivals.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from optimizer.simulate.scenario import LengthSpec, MixComponent, WorkloadSpec

__all__ = ["MIXES", "Arrivals", "RateCurve", "draw_lengths", "generate", "mix_components", "rate_curve"]

_CHAT = MixComponent(
    name="chat",
    prompt=LengthSpec(median=350, sigma=0.8, min=16, max=4096),
    output=LengthSpec(median=180, sigma=0.6, min=8, max=1024),
)
_DOCS = MixComponent(
    name="document",
    prompt=LengthSpec(median=5000, sigma=0.45, min=1500, max=16000),
    output=LengthSpec(median=300, sigma=0.5, min=32, max=1024),
)

MIXES: dict[str, list[MixComponent]] = {
    "chat": [_CHAT],
    "long-docs": [_DOCS],
    "mixed": [
        MixComponent(name="chat", weight=0.8, prompt=_CHAT.prompt, output=_CHAT.output),
        MixComponent(name="document", weight=0.2, prompt=_DOCS.prompt, output=_DOCS.output),
    ],
}
"""Named size mixes: chat turns (a few hundred prompt tokens, ~100-300 out), long documents (several
thousand in, a few hundred out), and a mixed service (4 chat turns to 1 document)."""

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


@dataclass(frozen=True)
class RateCurve:
    """The workload's request rate over the run: piecewise-constant steps or a smooth function."""

    kind: str
    base: float
    peak: float
    period_s: float = 0.0
    switches: tuple[float, ...] = ()
    """`bursty`: times at which calm and burst alternate, starting calm at 0."""

    def at(self, t: FloatArray) -> FloatArray:
        """Requests per second at each time in `t`."""
        if self.kind == "diurnal":
            phase = (1.0 - np.cos(2.0 * math.pi * t / self.period_s)) / 2.0
            return np.asarray(self.base + (self.peak - self.base) * phase, dtype=np.float64)
        if self.kind == "bursty":
            in_burst = np.searchsorted(np.asarray(self.switches), t, side="right") % 2 == 1
            return np.where(in_burst, self.peak, self.base).astype(np.float64)
        return np.full_like(t, self.base, dtype=np.float64)

    def mean(self, start: float, end: float, points: int = 64) -> float:
        """The average rate over [start, end) (midpoint rule; exact for the steps)."""
        if end <= start:
            return float(self.at(np.array([start]))[0])
        if self.kind == "bursty":
            edges = [start, *[s for s in self.switches if start < s < end], end]
            widths = np.diff(edges)
            mids = (np.array(edges[:-1]) + np.array(edges[1:])) / 2
            return float(np.sum(self.at(mids) * widths) / (end - start))
        grid = start + (np.arange(points) + 0.5) * (end - start) / points
        return float(np.mean(self.at(grid)))


@dataclass(frozen=True)
class Arrivals:
    """The requests of a run, in arrival order."""

    time: FloatArray
    prompt: IntArray
    output: IntArray
    component: IntArray
    """Index into `components`."""
    components: tuple[str, ...]
    duration_s: float
    curve: RateCurve

    def __len__(self) -> int:
        return len(self.time)


def mix_components(spec: WorkloadSpec) -> list[MixComponent]:
    return MIXES[spec.mix] if isinstance(spec.mix, str) else list(spec.mix)


def rate_curve(spec: WorkloadSpec, seed: int) -> RateCurve:
    """The rate over the run; the burst schedule is drawn from its own seeded stream."""
    peak = spec.peak_rate if spec.peak_rate is not None else spec.rate
    if spec.kind == "diurnal":
        return RateCurve("diurnal", spec.rate, max(peak, spec.rate), period_s=spec.period_s or spec.duration_s)
    if spec.kind == "bursty":
        rng = np.random.default_rng([seed, 1])
        switches: list[float] = []
        t, calm = 0.0, True
        while t < spec.duration_s:
            t += float(rng.exponential(spec.calm_s if calm else spec.burst_s))
            switches.append(t)
            calm = not calm
        return RateCurve("bursty", spec.rate, max(peak, spec.rate), switches=tuple(switches))
    return RateCurve("poisson", spec.rate, spec.rate)


def generate(spec: WorkloadSpec, seed: int, duration_s: float | None = None) -> Arrivals:
    """All arrivals of a run: the same `seed` gives the same requests, whatever the policy."""
    duration = duration_s if duration_s is not None else spec.duration_s
    curve = rate_curve(spec, seed)
    rng = np.random.default_rng([seed, 0])
    candidates = int(rng.poisson(curve.peak * duration))
    times = np.sort(rng.uniform(0.0, duration, candidates))
    keep = rng.uniform(0.0, 1.0, candidates) * curve.peak <= curve.at(times)
    times = times[keep]
    components = mix_components(spec)
    lengths = np.random.default_rng([seed, 2])
    weights = np.array([c.weight for c in components], dtype=np.float64)
    which = lengths.choice(len(components), size=len(times), p=weights / weights.sum()).astype(np.int64)
    prompt = np.zeros(len(times), dtype=np.int64)
    output = np.zeros(len(times), dtype=np.int64)
    for index, component in enumerate(components):
        mask = which == index
        count = int(mask.sum())
        prompt[mask] = draw_lengths(component.prompt, count, lengths)
        output[mask] = draw_lengths(component.output, count, lengths)
    return Arrivals(times, prompt, output, which, tuple(c.name for c in components), duration, curve)


def draw_lengths(spec: LengthSpec, count: int, rng: np.random.Generator) -> IntArray:
    """`count` lognormal token counts around the median, rounded and clipped to [min, max]."""
    raw = rng.lognormal(mean=math.log(spec.median), sigma=spec.sigma, size=count)
    return np.clip(np.rint(raw), spec.min, spec.max).astype(np.int64)
