"""The performance model: how much load one instance of a pool takes, per size class, within the SLO.

Continuous batching makes latency grow with the batch. Per pool, with B the requests in flight
per instance and `in_k` the prompt length in thousands of tokens, the model is linear:

    TPOT p95 = a + b * B
    TTFT p95 = c + d * B + e * in_k

with the five coefficients learned by Bayesian linear regression: a prior (from a profile, or
the accelerator's roofline, or a generic guess, each with its own uncertainty), plus every
window's observations, weighted by their request count and forgotten with a half-life so that a
pool whose speed changes is re-learned. The posterior's spread is the confidence: capacity is
planned on the mean plus one standard deviation of latency, so a pool known from few requests
is planned cautiously and one known well is planned close to its limit.

The capacity of a class is then the largest B whose predicted TTFT and TPOT stay within the SLO
(and within the engine's batch limit), turned into requests per second by Little's law with the
class's request duration at that B.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from optimizer.config import SLOConfig
from optimizer.policy import LearningConfig
from optimizer.signals import PoolStatus, PoolWindow
from runtimes.accelerators import Accelerator
from runtimes.profile.profile_file import Profile
from runtimes.profile.roofline import BYTES_PER_PARAM, COMPUTE_DTYPE, ModelShape, decode_point

__all__ = [
    "Capacity",
    "Estimate",
    "LatencyPrior",
    "Observation",
    "capacity",
    "generic_prior",
    "observations",
    "profile_prior",
    "roofline_prior",
    "variant_precision",
]

COEFFICIENTS = ("tpot_s", "tpot_s_per_seq", "ttft_s", "ttft_s_per_seq", "ttft_s_per_kilotoken")
_TPOT = np.array([1.0, 0.0, 0.0, 0.0, 0.0]), np.array([0.0, 1.0, 0.0, 0.0, 0.0])
_SD_FLOOR = np.array([0.002, 0.0002, 0.02, 0.002, 0.01])
"""Least prior standard deviation per coefficient (seconds): no prior is certain to the microsecond."""
_NOISE = 0.15
"""Relative noise of one window's p95 at `min_requests` requests."""
_NOISE_FLOOR_S = 0.001
_CONFIDENCE_Z = 1.0
"""Capacity is planned on latency's posterior mean plus this many standard deviations."""
_STEP_OVERHEAD_S = 0.004
"""Scheduling, sampling and detokenizing per engine step, beyond the roofline's memory and compute time."""
_EFFICIENCY = {"bandwidth": 0.7, "compute": 0.5}
"""Share of the catalog peaks a serving engine reaches, for the roofline prior (its uncertainty covers the rest)."""


@dataclass(frozen=True)
class LatencyPrior:
    mean: tuple[float, float, float, float, float]
    """The coefficients, in the order of `COEFFICIENTS`."""
    sd: tuple[float, float, float, float, float]
    max_concurrency: float
    """Requests in flight one instance can batch at most (engine limit, KV cache)."""
    duration_ratio: float = 0.8
    """Mean request duration over the duration computed from p95 latencies."""
    source: str = "generic"


@dataclass(frozen=True)
class Observation:
    features: tuple[float, float, float, float, float]
    value: float
    weight: float
    """Precision of the observation (1 / variance), before forgetting."""


@dataclass(frozen=True)
class Capacity:
    concurrency: float
    """Requests in flight per instance at the SLO limit (0: the pool cannot meet the SLO for this class)."""
    requests_per_s: float
    ttft_p95_s: float
    tpot_p95_s: float
    limit: str
    """What bounds it: `tpot`, `ttft`, `batch`."""


@dataclass(frozen=True)
class Estimate:
    """A pool's latency model: its prior and the decayed sums of its observations (never mutated)."""

    prior: LatencyPrior
    information: np.ndarray
    """Sum of weight * x x^T over the observations, decayed."""
    moment: np.ndarray
    """Sum of weight * x * y, decayed."""
    evidence: float = 0.0
    """Requests behind the observations, decayed."""
    duration_ratio: float | None = None
    updated_at: float | None = None

    @classmethod
    def from_prior(cls, prior: LatencyPrior) -> Estimate:
        return cls(prior=prior, information=np.zeros((5, 5)), moment=np.zeros(5))

    def posterior(self, strength: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
        """Mean and covariance of the coefficients."""
        prior_precision = strength * np.diag(1.0 / np.square(np.maximum(self.prior.sd, _SD_FLOOR)))
        precision = prior_precision + self.information
        covariance = np.linalg.inv(precision)
        mean = covariance @ (prior_precision @ np.array(self.prior.mean) + self.moment)
        return mean, covariance

    def decayed(self, now: float, learning: LearningConfig) -> Estimate:
        """The evidence aged to `now`: without new data an estimate drifts back to its prior."""
        if self.updated_at is None or now <= self.updated_at:
            return replace(self, updated_at=now if self.updated_at is None else self.updated_at)
        decay = 0.5 ** ((now - self.updated_at) / learning.half_life_s)
        return replace(
            self,
            information=self.information * decay,
            moment=self.moment * decay,
            evidence=self.evidence * decay,
            updated_at=now,
        )

    def observe(self, now: float, new: Sequence[Observation], requests: int, learning: LearningConfig) -> Estimate:
        aged = self.decayed(now, learning)
        information, moment = aged.information, aged.moment
        for observation in new:
            x = np.array(observation.features)
            information = information + observation.weight * np.outer(x, x)
            moment = moment + observation.weight * observation.value * x
        return replace(aged, information=information, moment=moment, evidence=aged.evidence + requests)

    def learn_duration_ratio(self, ratio: float, weight: float = 0.2) -> Estimate:
        current = self.duration_ratio if self.duration_ratio is not None else self.prior.duration_ratio
        clipped = min(1.5, max(0.2, ratio))
        return replace(self, duration_ratio=current + weight * (clipped - current))

    def predict(self, features: np.ndarray, strength: float = 1.0) -> tuple[float, float]:
        mean, covariance = self.posterior(strength)
        return float(features @ mean), math.sqrt(max(0.0, float(features @ covariance @ features)))

    def confidence(self, strength: float = 1.0) -> float:
        """How far the data has narrowed TPOT at a typical batch: 0 (prior only) to 1."""
        x = _tpot_features(max(1.0, self.prior.max_concurrency / 4))
        prior_only = Estimate.from_prior(self.prior)
        _, spread = self.predict(x, strength)
        _, prior_spread = prior_only.predict(x, strength)
        return max(0.0, 1.0 - spread / prior_spread) if prior_spread > 0 else 1.0


def capacity(
    estimate: Estimate, slo: SLOConfig, input_tokens: float, output_tokens: float, strength: float = 1.0
) -> Capacity:
    """The most requests per second of this size one instance serves within the SLO."""
    mean, covariance = estimate.posterior(strength)
    tpot_limit, ttft_limit = slo.tpot_p95_ms / 1000, slo.ttft_p95_ms / 1000
    in_k = input_tokens / 1000

    def cautious(x: np.ndarray) -> float:
        return float(x @ mean) + _CONFIDENCE_Z * math.sqrt(max(0.0, float(x @ covariance @ x)))

    def fits(batch: float) -> tuple[bool, str]:
        if cautious(_tpot_features(batch)) > tpot_limit:
            return False, "tpot"
        if cautious(_ttft_features(batch, in_k)) > ttft_limit:
            return False, "ttft"
        return True, "batch"

    top = estimate.prior.max_concurrency
    ok, limit = fits(top)
    if ok:
        batch = top
    else:
        low, high = 0.0, top
        if not fits(1e-3)[0]:
            return Capacity(0.0, 0.0, cautious(_ttft_features(0, in_k)), cautious(_tpot_features(0)), fits(1e-3)[1])
        for _ in range(40):  # latency only grows with the batch (b, d >= 0 in any sane fit): bisect
            middle = (low + high) / 2
            low, high = (middle, high) if fits(middle)[0] else (low, middle)
        batch = low
    ttft, tpot = cautious(_ttft_features(batch, in_k)), cautious(_tpot_features(batch))
    ratio = estimate.duration_ratio if estimate.duration_ratio is not None else estimate.prior.duration_ratio
    duration = ratio * (ttft + max(0.0, output_tokens - 1) * tpot)
    return Capacity(batch, batch / duration if duration > 0 else 0.0, ttft, tpot, limit)


def observations(
    window: PoolWindow, status: PoolStatus, window_s: float, learning: LearningConfig
) -> tuple[float, list[Observation]]:
    """The pool's mean concurrency per instance in the window, and what its latencies say at that load."""
    instances = max(1, status.ready)
    concurrency = window.busy_s / window_s / instances
    found: list[Observation] = []
    ok_requests = window.requests - window.failures
    if ok_requests < learning.min_requests:
        return concurrency, found
    if window.tpot_p95_s is not None:
        found.append(_observation(_tpot_features(concurrency), window.tpot_p95_s, ok_requests, learning))
    for group in window.classes.values():
        if group.ttft_p95_s is not None and group.requests >= learning.min_requests:
            x = _ttft_features(concurrency, group.input_tokens / 1000)
            found.append(_observation(x, group.ttft_p95_s, group.requests, learning))
    return concurrency, found


def _observation(x: np.ndarray, value: float, requests: int, learning: LearningConfig) -> Observation:
    noise = _NOISE * abs(value) + _NOISE_FLOOR_S
    # A p95 of n requests is about as good as sqrt(n) times one of min_requests, up to a point:
    # beyond ~100 the window's own drift dominates.
    weight = min(requests, 100) / learning.min_requests / noise**2
    features = (float(x[0]), float(x[1]), float(x[2]), float(x[3]), float(x[4]))
    return Observation(features, value, weight)


def _tpot_features(batch: float) -> np.ndarray:
    return np.array([1.0, batch, 0.0, 0.0, 0.0])


def _ttft_features(batch: float, in_k: float) -> np.ndarray:
    return np.array([0.0, 0.0, 1.0, batch, in_k])


def variant_precision(variant: str) -> str:
    """The roofline's precision key for a served variant: `int8-w8a8` -> `int8`, `fp8_per_block` -> `fp8`."""
    for key in ("int4", "int8", "fp8", "bf16", "fp16", "fp32"):
        if key in variant.lower():
            return key
    return "bf16"


def roofline_prior(
    shape: ModelShape,
    accelerator: Accelerator,
    variant: str,
    *,
    context_tokens: int = 1024,
    max_num_seqs: int = 256,
) -> LatencyPrior:
    """Latency from catalog bandwidth and compute at typical serving efficiencies, with wide uncertainty."""
    precision = variant_precision(variant)
    weights = shape.params * BYTES_PER_PARAM[precision]
    dtype = COMPUTE_DTYPE[precision]
    tflops = (
        accelerator.peak_tflops.get(dtype)
        or accelerator.peak_tflops.get("bf16")
        or min(accelerator.peak_tflops.values())
    )
    bandwidth = accelerator.bandwidth_gbs * _EFFICIENCY["bandwidth"]
    compute = tflops * _EFFICIENCY["compute"]
    kv_budget = accelerator.memory_gib * 2**30 * 0.9 - weights
    by_memory = kv_budget / (context_tokens * shape.kv_bytes_per_token())
    max_batch = max(1.0, min(float(max_num_seqs), by_memory))
    batches = sorted({1, max(1, int(max_batch / 4)), max(1, int(max_batch / 2)), max(1, int(max_batch))})
    steps = [decode_point(shape, weights, b, context_tokens, bandwidth, compute).step_ms / 1000 for b in batches]
    a, b = _line(batches, steps)
    a += _STEP_OVERHEAD_S
    prefill_s_per_kilotoken = 1000 * shape.flops_per_token(context_tokens // 2) / (compute * 1e12)
    # Under load a new prompt waits for a share of the running batch's steps (chunked prefill interleaves).
    mean = (a * 1.1, b * 1.1, a + prefill_s_per_kilotoken, a * 0.5, prefill_s_per_kilotoken)
    sd = tuple(max(abs(value), floor) for value, floor in zip(mean, _SD_FLOOR, strict=True))
    return LatencyPrior(
        mean=mean,
        sd=(sd[0], sd[1], sd[2], sd[3], sd[4]),
        max_concurrency=max_batch,
        source=f"roofline: {shape.name} {precision} on {accelerator.kind} {accelerator.bandwidth_gbs:g} GB/s",
    )


def profile_prior(profile: Profile, *, max_concurrency: float | None = None, fallback: LatencyPrior) -> LatencyPrior:
    """Latency lines fitted to a profile's measured levels; tighter than a roofline because it was measured."""
    points = [
        (float(level.concurrency or level.metrics.request_throughput * level.metrics.mean_e2el_ms / 1000),
         level.metrics.p95_tpot_ms / 1000, level.metrics.p95_ttft_ms / 1000)
        for level in profile.levels
        if level.metrics.completed > 0
    ]  # fmt: skip
    if len(points) < 2:
        return fallback
    loads = [p[0] for p in points]
    a, b = _line(loads, [p[1] for p in points])
    c, d = _line(loads, [p[2] for p in points])
    prompt_k = profile.workload.prompt_tokens / 1000
    e = fallback.mean[4]
    c = max(0.0, c - e * prompt_k)  # the profile ran one prompt length: the roofline says how TTFT scales with it
    mean = (max(a, 1e-4), max(b, 0.0), c, max(d, 0.0), e)
    sd = (0.3 * mean[0], 0.5 * mean[1], 0.3 * mean[2], 0.5 * mean[3], fallback.sd[4])
    top = max_concurrency if max_concurrency is not None else max(fallback.max_concurrency, max(loads))
    source = f"profile: {profile.created_at} {profile.base_url}"
    return LatencyPrior(mean=mean, sd=sd, max_concurrency=top, source=source)


def generic_prior(slo: SLOConfig, max_concurrency: float = 64.0) -> LatencyPrior:
    """Nothing known: latency that reaches the SLO around a quarter of the batch limit, with 100% uncertainty."""
    tpot, ttft = slo.tpot_p95_ms / 1000, slo.ttft_p95_ms / 1000
    knee = max_concurrency / 4
    mean = (tpot / 4, 0.75 * tpot / knee, ttft / 4, 0.5 * ttft / knee, ttft / 4)
    sd = (mean[0], mean[1], mean[2], mean[3], mean[4])
    return LatencyPrior(mean=mean, sd=sd, max_concurrency=max_concurrency, source="generic")


def _line(xs: Sequence[float], ys: Sequence[float]) -> tuple[float, float]:
    """Least-squares intercept and slope (slope 0 for a single distinct x); the slope never negative."""
    n = len(xs)
    mean_x, mean_y = sum(xs) / n, sum(ys) / n
    spread = sum((x - mean_x) ** 2 for x in xs)
    if spread == 0:
        return mean_y, 0.0
    slope = max(0.0, sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys, strict=True)) / spread)
    return mean_y - slope * mean_x, slope
