"""The performance model: how much load one instance of a pool takes, per size class, within the SLO.

Continuous batching makes latency grow with the batch, and chunked prefill makes every decode
step wait for the prompts being read. A decode step reads the weights once and the KV cache of
every sequence in the batch, so what slows it is the context in flight, not the count of
sequences: forty 5k-token documents cost a step what four hundred chats do. Per pool, with K the
context in flight per instance (thousands of tokens: each request's prompt plus half its answer,
weighted by its time in flight), P the prompt tokens it reads per second (thousands) and `in_k`
a request's prompt (thousands of tokens), the model is linear in its coefficients:

    TPOT p95 = (a + b * K) / (1 - rho) + g * P
    TTFT p95 = c + d * K + e * in_k

where rho = P / (the pool's prefill rate) is the share of every second its compute spends on
prompts, which the decode steps wait through: a term that grows with P only linearly cut the
TPU's decode steps by a third at 13 chats a second (rho 0.4) and planned it 30% over its truth.
g is what the stretch leaves unexplained, learned like the rest.

Counting sequences instead of context made a mixed workload's long documents look like a cost
of every sequence, and capped short chat at a third of what a pool really serves.

with the six coefficients learned by Bayesian linear regression: a prior (from a profile, or
the accelerator's roofline, or a generic guess, each with its own uncertainty), plus every
window's observations, weighted by their request count and forgotten with a half-life so that a
pool whose speed changes is re-learned. The posterior's spread is the confidence: capacity is
planned on the mean plus one standard deviation of latency, so a pool known from few requests
is planned cautiously and one known well is planned close to its limit.

The capacity of a class is the highest request rate per instance at which, with the batch from
Little's law and K = batch x the class's context, the predicted TTFT and TPOT stay within the
SLO, the batch fits the engine (its sequence limit, and the KV cache for prompts and answers of
that size) for all but 5% of the time (`held_batch`: a batch planned at its limit on average is
full half the time, and prompts queue behind it), and prefill uses at most `_PREFILL_UTILIZATION`
of the compute the roofline allows.
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
from runtimes.profile.capacity import is_feasible
from runtimes.profile.profile_file import Profile
from runtimes.profile.roofline import BYTES_PER_PARAM, COMPUTE_DTYPE, ModelShape, decode_point

__all__ = [
    "Capacity",
    "Estimate",
    "LatencyPrior",
    "Load",
    "Observation",
    "capacity",
    "context_ktok",
    "generic_prior",
    "held_batch",
    "load_tpot_features",
    "observations",
    "prefill_stretch",
    "profile_prior",
    "roofline_prior",
    "tpot_features",
    "ttft_features",
    "variant_precision",
    "window_load",
]

COEFFICIENTS = ("tpot_s", "tpot_s_per_context_ktok", "tpot_s_per_prefill_ktok_s", "ttft_s",
                "ttft_s_per_context_ktok", "ttft_s_per_kilotoken")  # fmt: skip
_SIZE = len(COEFFICIENTS)
_SD_FLOOR = np.array([0.002, 0.0002, 0.0005, 0.02, 0.002, 0.01])
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
_PREFILL_UTILIZATION = 0.7
"""Most of an instance's prefill compute planned for prompts: past it, prompts queue and TTFT explodes."""
_FULL_BATCH_SHARE = 0.05
"""Most of the time an instance's batch may be full: a request that arrives then waits for a slot,
and past the SLO's 5% its TTFT p95 is a queue's, not the model's."""
_FULL_BATCH_Z = 1.645
"""The standard normal quantile of 1 - `_FULL_BATCH_SHARE`."""
_KV_DISPERSION = 2.0
"""Variance over mean of the KV cache a batch holds, in sequences of the class's mean size: the
count of requests in flight is Poisson (dispersion 1, whatever their durations), and each one
holds its prompt and its answer so far (vLLM allocates as it decodes), whose sizes within a class
spread about as much as an exponential's (squared coefficient of variation 1)."""
_MAX_PREFILL_SHARE = 0.9
"""Most of a second counted as prefill in the decode stretch: a load past it says the prior's prefill
rate is wrong, and a stretch without bound would make one window's observation dominate the fit."""
_TYPICAL_CONTEXT_KTOK = 1.0
"""Context per sequence (thousands of tokens) where a number is needed without a workload."""
_OUTLIER_FACTOR = 3.0
"""Window p95s are capped at this multiple of the SLO: past it the engine is queueing, which no line fits."""

Coefficients = tuple[float, float, float, float, float, float]


@dataclass(frozen=True)
class LatencyPrior:
    mean: Coefficients
    """The coefficients, in the order of `COEFFICIENTS`."""
    sd: Coefficients
    max_concurrency: float
    """Requests in flight one instance can batch at most (the engine's sequence limit)."""
    kv_tokens: float | None = None
    """Tokens the KV cache of one instance holds (None: unknown, only `max_concurrency` bounds the batch)."""
    prefill_tokens_per_s: float | None = None
    """Prompt tokens per second one instance's compute reads at most (None: unknown)."""
    duration_ratio: float = 0.8
    """Mean request duration over the duration computed from p95 latencies."""
    source: str = "generic"


@dataclass(frozen=True)
class Observation:
    features: Coefficients
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
    """What bounds it: `tpot`, `ttft`, `batch` (sequences or KV cache), `prefill`."""


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
        return cls(prior=prior, information=np.zeros((_SIZE, _SIZE)), moment=np.zeros(_SIZE))

    def posterior(self, strength: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
        """Mean and covariance of the coefficients."""
        prior_precision = strength * np.diag(1.0 / np.square(np.maximum(self.prior.sd, _SD_FLOOR)))
        precision = prior_precision + self.information
        covariance = np.linalg.inv(precision)
        mean = covariance @ (prior_precision @ np.array(self.prior.mean) + self.moment)
        # Latency never falls as load or prompts grow, and no term is negative: a fit that says so is noise.
        return np.maximum(mean, 0.0), covariance

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
        """How far the data has narrowed TPOT at a typical batch (a quarter of the limit, 1k tokens each): 0 to 1."""
        x = tpot_features(max(1.0, self.prior.max_concurrency / 4) * _TYPICAL_CONTEXT_KTOK, 0.0, None)
        prior_only = Estimate.from_prior(self.prior)
        _, spread = self.predict(x, strength)
        _, prior_spread = prior_only.predict(x, strength)
        return max(0.0, 1.0 - spread / prior_spread) if prior_spread > 0 else 1.0


def capacity(
    estimate: Estimate, slo: SLOConfig, input_tokens: float, output_tokens: float, strength: float = 1.0
) -> Capacity:
    """The most requests per second of this size one instance serves within the SLO."""
    mean, covariance = estimate.posterior(strength)
    a, b, g, c, d, e = (float(v) for v in mean)
    tpot_limit, ttft_limit = slo.tpot_p95_ms / 1000, slo.ttft_p95_ms / 1000
    in_k, decode = input_tokens / 1000, max(0.0, output_tokens - 1)
    context_k = context_ktok(input_tokens, output_tokens)
    ratio = estimate.duration_ratio if estimate.duration_ratio is not None else estimate.prior.duration_ratio
    prior = estimate.prior
    batch_limit = held_batch(prior.max_concurrency, 1.0)
    if prior.kv_tokens is not None and input_tokens + output_tokens > 0:
        batch_limit = min(batch_limit, held_batch(prior.kv_tokens / (input_tokens + output_tokens), _KV_DISPERSION))

    def cautious(x: np.ndarray) -> float:
        return float(x @ mean) + _CONFIDENCE_Z * math.sqrt(max(0.0, float(x @ covariance @ x)))

    def load(rate: float) -> tuple[float, float] | None:
        """Requests in flight (Little's law, on the mean model) and prompt kilotokens per second at `rate`."""
        prefill = rate * in_k
        stretch = prefill_stretch(prefill, prior.prefill_tokens_per_s)
        settled = 1 - rate * ratio * (d + decode * b * stretch) * context_k
        if settled <= 0:
            return None  # every request added slows the others enough to add another: no steady state
        return rate * ratio * (c + e * in_k + decode * (a * stretch + g * prefill)) / settled, prefill

    def check(rate: float) -> tuple[str | None, float, float, float]:
        found = load(rate)
        if found is None:
            return "tpot", math.inf, math.inf, math.inf
        batch, prefill = found
        context = batch * context_k
        ttft = cautious(ttft_features(context, in_k))
        tpot = cautious(tpot_features(context, prefill, prior.prefill_tokens_per_s))
        if tpot > tpot_limit:
            return "tpot", batch, ttft, tpot
        if ttft > ttft_limit:
            return "ttft", batch, ttft, tpot
        if batch > batch_limit:
            return "batch", batch, ttft, tpot
        return None, batch, ttft, tpot

    top = math.inf
    limit = "batch"
    if prior.prefill_tokens_per_s is not None and input_tokens > 0:
        top = _PREFILL_UTILIZATION * prior.prefill_tokens_per_s / input_tokens
        limit = "prefill"
    floor_duration = ratio * (c + e * in_k + decode * a)
    if floor_duration > 0 and batch_limit / floor_duration < top:
        top, limit = batch_limit / floor_duration, "batch"
    failed, _, ttft, tpot = check(1e-9)
    if failed is not None:
        return Capacity(0.0, 0.0, ttft, tpot, failed)
    failed, batch, ttft, tpot = check(top) if math.isfinite(top) else ("tpot", 0.0, 0.0, 0.0)
    if failed is None:
        return Capacity(batch, top, ttft, tpot, limit)
    low, high = 0.0, top if math.isfinite(top) else 1e6
    for _ in range(50):  # latency only grows with the rate (non-negative slopes): bisect
        middle = (low + high) / 2
        found, _, _, _ = check(middle)
        if found is None:
            low = middle
        else:
            high, failed = middle, found
    _, batch, ttft, tpot = check(low)
    return Capacity(batch, low, ttft, tpot, failed or limit)


def held_batch(limit: float, dispersion: float) -> float:
    """The largest mean batch that stays within `limit` for all but `_FULL_BATCH_SHARE` of the time.

    The batch fluctuates around its mean L with variance `dispersion` x L (Poisson arrivals), so
    planning the mean at the limit fills the batch half the time and queues new prompts behind it:
    on a simulated TPU v5e, whose KV cache holds 109 chats, TTFT p95 was 0.8 s at a mean of 98 in
    flight and 4.5 s at 13.3 req/s, where preempted sequences recomputing their context cut its
    steps a second by a quarter. Normal approximation: L + z sqrt(dispersion L) <= limit, solved
    for sqrt(L).
    """
    if limit <= 0:
        return 0.0
    spread = _FULL_BATCH_Z * math.sqrt(dispersion)
    root = (-spread + math.sqrt(spread * spread + 4 * limit)) / 2
    return root * root


@dataclass(frozen=True)
class Load:
    """What one instance of a pool carried on average over a window."""

    sequences: float
    """Requests in flight."""
    context_ktok: float
    """Context in flight, thousands of tokens."""
    prefill_ktok_s: float
    """Prompt kilotokens read per second."""


def window_load(window: PoolWindow, status: PoolStatus, window_s: float) -> Load:
    per_instance = window.instance_seconds(window_s, status.ready)
    return Load(
        sequences=window.busy_s / per_instance,
        context_ktok=window.context_token_s / per_instance / 1000,
        prefill_ktok_s=window.prompt_tokens / per_instance / 1000,
    )


def observations(
    window: PoolWindow,
    status: PoolStatus,
    window_s: float,
    learning: LearningConfig,
    slo: SLOConfig,
    prior: LatencyPrior,
) -> tuple[Load, list[Observation]]:
    """The pool's mean load per instance in the window, and what its latencies say at that load
    (`prior`: the pool's batch and KV limits and prefill rate)."""
    load = window_load(window, status, window_s)
    found: list[Observation] = []
    ok_requests = window.requests - window.failures
    if ok_requests < learning.min_requests:
        return load, found
    tpot_cap, ttft_cap = _OUTLIER_FACTOR * slo.tpot_p95_ms / 1000, _OUTLIER_FACTOR * slo.ttft_p95_ms / 1000
    if window.tpot_p95_s is not None:
        value = min(window.tpot_p95_s, tpot_cap)
        x = load_tpot_features(load, prior)
        found.append(_observation(x, value, ok_requests, learning))
    for group in window.classes.values():
        if group.ttft_p95_s is not None and group.requests >= learning.min_requests:
            x = ttft_features(load.context_ktok, group.input_tokens / 1000)
            found.append(_observation(x, min(group.ttft_p95_s, ttft_cap), group.requests, learning))
    return load, found


def load_tpot_features(load: Load, prior: LatencyPrior) -> np.ndarray:
    """The TPOT features of a window's load: at the batch the engine decoded, with its prefill stretch."""
    return tpot_features(_running_context_ktok(load, prior), load.prefill_ktok_s, prior.prefill_tokens_per_s)


def _running_context_ktok(load: Load, prior: LatencyPrior) -> float:
    """The context the engine decodes at once under `load`: requests in flight past the batch or the KV
    cache wait their turn, and only the running ones slow a step. A saturated pool's TPOT set against
    all it held (twice its batch, with a queue) read as a flat line: a slow engine at any load."""
    running = load.context_ktok
    if load.sequences > prior.max_concurrency:
        running *= prior.max_concurrency / load.sequences
    if prior.kv_tokens is not None:
        running = min(running, prior.kv_tokens / 1000)
    return running


def context_ktok(input_tokens: float, output_tokens: float) -> float:
    """Mean context one request holds over its life (its prompt plus half its answer), thousands of tokens."""
    return (input_tokens + output_tokens / 2) / 1000


def _observation(x: np.ndarray, value: float, requests: int, learning: LearningConfig) -> Observation:
    noise = _NOISE * abs(value) + _NOISE_FLOOR_S
    # A p95 of n requests is about as good as sqrt(n) times one of min_requests, up to a point:
    # beyond ~100 the window's own drift dominates.
    weight = min(requests, 100) / learning.min_requests / noise**2
    return Observation(_coefficients(x), value, weight)


def _coefficients(x: np.ndarray) -> Coefficients:
    return float(x[0]), float(x[1]), float(x[2]), float(x[3]), float(x[4]), float(x[5])


def prefill_stretch(prefill_ktok_s: float, prefill_tokens_per_s: float | None) -> float:
    """How much longer decode steps take while prompts are read at this rate: 1 / (1 - rho), rho the
    share of the pool's prefill rate in use (1 where the rate is unknown, or nothing is read)."""
    if not prefill_tokens_per_s or prefill_ktok_s <= 0:
        return 1.0
    share = min(_MAX_PREFILL_SHARE, prefill_ktok_s * 1000 / prefill_tokens_per_s)
    return 1 / (1 - share)


def tpot_features(context_ktok: float, prefill_ktok_s: float, prefill_tokens_per_s: float | None) -> np.ndarray:
    stretch = prefill_stretch(prefill_ktok_s, prefill_tokens_per_s)
    return np.array([stretch, context_ktok * stretch, prefill_ktok_s, 0.0, 0.0, 0.0])


def ttft_features(context_ktok: float, in_k: float) -> np.ndarray:
    return np.array([0.0, 0.0, 0.0, 1.0, context_ktok, in_k])


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
    kv_tokens = max(0.0, accelerator.memory_gib * 2**30 * 0.9 - weights) / shape.kv_bytes_per_token()
    max_batch = max(1.0, min(float(max_num_seqs), kv_tokens / context_tokens))
    batches = sorted({1, max(1, int(max_batch / 4)), max(1, int(max_batch / 2)), max(1, int(max_batch))})
    steps = [decode_point(shape, weights, b, context_tokens, bandwidth, compute).step_ms / 1000 for b in batches]
    a, b = _line([batch * context_tokens / 1000 for batch in batches], steps)  # per kilotoken of context
    a += _STEP_OVERHEAD_S
    prefill_tokens_per_s = compute * 1e12 / shape.flops_per_token(context_tokens // 2)
    prefill_s_per_kilotoken = 1000 / prefill_tokens_per_s
    # Chunked prefill shares each step: the prompts' share of every second stretches the decode steps
    # (`prefill_stretch`), and nothing is left over for g to say before data does.
    g = 0.0
    # Under load a new prompt waits for a share of the running batch's steps.
    # TTFT: one step plus the prompt's prefill, and half a step more per sequence (of `context_tokens`) in the batch.
    mean = (a * 1.1, b * 1.1, g, a, a * 0.5 * 1000 / context_tokens, prefill_s_per_kilotoken)
    sd = [max(abs(value), floor) for value, floor in zip(mean, _SD_FLOOR, strict=True)]
    return LatencyPrior(
        mean=mean,
        sd=(sd[0], sd[1], sd[2], sd[3], sd[4], sd[5]),
        max_concurrency=float(max_num_seqs),
        kv_tokens=kv_tokens,
        prefill_tokens_per_s=prefill_tokens_per_s,
        source=f"roofline: {shape.name} {precision} on {accelerator.kind} {accelerator.bandwidth_gbs:g} GB/s",
    )


def profile_prior(profile: Profile, *, max_concurrency: float | None = None, fallback: LatencyPrior) -> LatencyPrior:
    """Latency lines fitted to a profile's measured levels; tighter than a roofline because it was measured."""
    prompt_k = profile.workload.prompt_tokens / 1000
    per_sequence = context_ktok(profile.workload.prompt_tokens, profile.workload.output_tokens)
    g, e = fallback.mean[2], fallback.mean[5]
    prefill_rate = fallback.prefill_tokens_per_s
    # Queueing past the knee makes latency climb far off any line: fit the levels within the profile's SLO
    # (or every level that completed something, when fewer than two were).
    completed = [level for level in profile.levels if level.metrics.completed > 0]
    feasible = [level for level in completed if is_feasible(level.metrics, profile.slo)]
    # Per instance (throughputs and concurrency are the whole URL's); a level's TPOT includes the wait for its
    # prompts, which the model adds as a stretch of the decode steps and g * prefill rate: the line is fitted
    # to the decode steps unstretched.
    points = []
    for level in feasible if len(feasible) >= 2 else completed:
        concurrency = level.concurrency or level.metrics.request_throughput * level.metrics.mean_e2el_ms / 1000
        prefill = level.metrics.request_throughput * prompt_k / profile.instances
        decode_s = (level.metrics.p95_tpot_ms / 1000 - g * prefill) / prefill_stretch(prefill, prefill_rate)
        points.append((concurrency / profile.instances * per_sequence, decode_s, level.metrics.p95_ttft_ms / 1000))
    if len(points) < 2:
        return fallback
    loads = [p[0] for p in points]
    a, b = _line(loads, [p[1] for p in points])
    c, d = _line(loads, [p[2] for p in points])
    c = max(0.0, c - e * prompt_k)  # the profile ran one prompt length: the roofline says how TTFT scales with it
    mean = (max(a, 1e-4), max(b, 0.0), g, c, max(d, 0.0), e)
    sd = (0.3 * mean[0], 0.5 * mean[1], fallback.sd[2], 0.3 * mean[3], 0.5 * mean[4], fallback.sd[5])
    top = max_concurrency if max_concurrency is not None else max(fallback.max_concurrency, max(loads) / per_sequence)
    return LatencyPrior(
        mean=mean,
        sd=sd,
        max_concurrency=top,
        kv_tokens=fallback.kv_tokens,
        prefill_tokens_per_s=fallback.prefill_tokens_per_s,
        source=f"profile: {profile.created_at} {profile.base_url}",
    )


def generic_prior(slo: SLOConfig, max_concurrency: float = 64.0) -> LatencyPrior:
    """Nothing known: latency that reaches the SLO around a quarter of the batch limit (of 1k-token
    sequences), with 100% uncertainty."""
    tpot, ttft = slo.tpot_p95_ms / 1000, slo.ttft_p95_ms / 1000
    knee = max_concurrency / 4 * _TYPICAL_CONTEXT_KTOK
    mean = (tpot / 4, 0.75 * tpot / knee, tpot / 20, ttft / 4, 0.5 * ttft / knee, ttft / 4)
    return LatencyPrior(mean=mean, sd=mean, max_concurrency=max_concurrency, source="generic")


def _line(xs: Sequence[float], ys: Sequence[float]) -> tuple[float, float]:
    """Least-squares intercept and slope (slope 0 for a single distinct x); the slope never negative."""
    n = len(xs)
    mean_x, mean_y = sum(xs) / n, sum(ys) / n
    spread = sum((x - mean_x) ** 2 for x in xs)
    if spread == 0:
        return mean_y, 0.0
    slope = max(0.0, sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys, strict=True)) / spread)
    return mean_y - slope * mean_x, slope
