"""The latency model: priors, learning from windows, forgetting, and capacity at the SLO."""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, replace
from typing import Any

import pytest
import scipy.stats

from optimizer.config import SLOConfig
from optimizer.performance import (
    COEFFICIENTS,
    Estimate,
    LatencyPrior,
    capacity,
    generic_prior,
    held_batch,
    observations,
    profile_prior,
    roofline_prior,
    tpot_features,
    ttft_features,
)
from optimizer.policy import LearningConfig
from optimizer.signals import ClassWindow, PoolStatus, PoolWindow
from runtimes.accelerators import CATALOG
from runtimes.profile.profile_file import SLO, Level, LevelMetrics, Profile, Workload
from runtimes.profile.roofline import PRESETS

SLO_ = SLOConfig(ttft_p95_ms=1000, tpot_p95_ms=100)
LEARNING = LearningConfig(half_life_s=60.0)
WINDOW_S = 60.0
IN, OUT = 500.0, 100.0
"""The size of every request in the synthetic windows."""
CONTEXT_K = (IN + OUT / 2) / 1000
"""Context each of those requests holds in flight, thousands of tokens."""


def index(name: str) -> int:
    return COEFFICIENTS.index(name)


@dataclass(frozen=True)
class Truth:
    """A pool's real latency: linear in the batch, as the model assumes."""

    tpot_s: float = 0.010
    tpot_s_per_seq: float = 0.002
    ttft_s: float = 0.100
    ttft_s_per_seq: float = 0.010
    ttft_s_per_kilotoken: float = 0.050

    def tpot(self, batch: float) -> float:
        return self.tpot_s + self.tpot_s_per_seq * batch

    def ttft(self, batch: float) -> float:
        return self.ttft_s + self.ttft_s_per_seq * batch + self.ttft_s_per_kilotoken * IN / 1000

    def window(self, batch: float) -> PoolWindow:
        """A window of one instance at `batch` requests in flight, its request count from Little's law."""
        duration = self.ttft(batch) + (OUT - 1) * self.tpot(batch)
        requests = round(batch * WINDOW_S / duration)
        group = ClassWindow(requests, IN, OUT, self.ttft(batch), self.tpot(batch), self.tpot(batch), duration)
        return PoolWindow(requests, 0, batch * WINDOW_S, int(requests * OUT), self.ttft(batch), self.tpot(batch),
                          self.tpot(batch), {"c": group}, context_token_s=batch * WINDOW_S * CONTEXT_K * 1000)  # fmt: skip

    def slower(self, factor: float) -> Truth:
        return Truth(self.tpot_s * factor, self.tpot_s_per_seq * factor, self.ttft_s, self.ttft_s_per_seq,
                     self.ttft_s_per_kilotoken)  # fmt: skip


FAST = Truth()
LOADS = (2.0, 6.0, 12.0, 20.0)


def learn(
    estimate: Estimate, truth: Truth, start: float, windows: int, learning: LearningConfig = LEARNING
) -> Estimate:
    """One window every 15 s at loads that vary as traffic does."""
    for i, load in zip(range(windows), itertools.cycle(LOADS), strict=False):
        window = truth.window(load)
        _, found = observations(window, PoolStatus(ready=1), WINDOW_S, learning, SLO_, estimate.prior)
        assert found
        estimate = estimate.observe(start + 15.0 * i, found, window.requests, learning)
    return estimate


def tpot_at(estimate: Estimate, batch: float) -> float:
    """The posterior mean TPOT at `batch` (at the prompt rate a pool of the truth's speed reads there)."""
    window = FAST.window(batch)
    prefill = window.requests * IN / WINDOW_S / 1000
    mean, _ = estimate.predict(tpot_features(batch * CONTEXT_K, prefill, estimate.prior.prefill_tokens_per_s))
    return mean


def test_the_posterior_moves_from_the_prior_to_the_data() -> None:
    prior = Estimate.from_prior(generic_prior(SLO_, 64))
    errors = []
    estimate = prior
    for windows in (0, 1, 4, 20):
        estimate = learn(prior, FAST, 0.0, windows) if windows else prior
        errors.append(abs(tpot_at(estimate, 8.0) - FAST.tpot(8.0)))
    assert errors[0] > 0.5 * FAST.tpot(8.0)  # the generic prior is far off
    assert errors == sorted(errors, reverse=True)
    assert errors[-1] < 0.1 * FAST.tpot(8.0)
    assert estimate.evidence > prior.evidence
    assert estimate.prior is prior.prior  # learning never changes the prior itself


def test_without_new_data_the_estimate_drifts_back_to_its_prior() -> None:
    prior = Estimate.from_prior(generic_prior(SLO_, 64))
    learned = learn(prior, FAST, 0.0, 20)
    at = learned.updated_at
    assert at is not None
    for half_lives, before in ((1, learned), (20, learned)):
        aged = before.decayed(at + half_lives * LEARNING.half_life_s, LEARNING)
        assert aged.evidence == pytest.approx(learned.evidence * 0.5**half_lives)
    aged = learned.decayed(at + 40 * LEARNING.half_life_s, LEARNING)
    assert tpot_at(aged, 8.0) == pytest.approx(tpot_at(prior, 8.0), rel=1e-3)
    assert learned.decayed(at - 10.0, LEARNING) == learned  # time never runs backwards


def test_forgetting_relearns_a_pool_that_slows_down() -> None:
    """The pool's TPOT triples: its capacity falls at once and reaches the slow pool's within a few half-lives."""
    prior = Estimate.from_prior(generic_prior(SLO_, 64))
    slow = FAST.slower(3.0)
    truth_fast = capacity(learn(prior, FAST, 0.0, 200), SLO_, IN, OUT).requests_per_s
    truth_slow = capacity(learn(prior, slow, 0.0, 200), SLO_, IN, OUT).requests_per_s
    assert truth_slow < 0.3 * truth_fast

    learned = learn(prior, FAST, 0.0, 40)
    assert capacity(learned, SLO_, IN, OUT).requests_per_s == pytest.approx(truth_fast, rel=0.05)
    # A window every 15 s, a 60 s half-life: 4 windows a half-life.
    after = {n: capacity(learn(learned, slow, 600.0, 4 * n), SLO_, IN, OUT).requests_per_s for n in (1, 2, 8)}
    assert after[1] < 1.3 * truth_slow  # from 3.8x: most of the way in one half-life
    assert after[2] == pytest.approx(truth_slow, rel=0.25)
    assert after[8] == pytest.approx(truth_slow, rel=0.1)

    # Without forgetting, the old evidence keeps the capacity far too high for as long.
    forever = LearningConfig(half_life_s=1e9)
    stubborn = learn(learn(prior, FAST, 0.0, 40, forever), slow, 600.0, 8, forever)
    assert capacity(stubborn, SLO_, IN, OUT).requests_per_s > 1.5 * truth_slow


def test_forgetting_relearns_a_pool_that_recovers() -> None:
    prior = Estimate.from_prior(generic_prior(SLO_, 64))
    slow = FAST.slower(3.0)
    truth_fast = capacity(learn(prior, FAST, 0.0, 200), SLO_, IN, OUT).requests_per_s
    learned = learn(prior, slow, 0.0, 40)
    assert capacity(learned, SLO_, IN, OUT).requests_per_s < 0.3 * truth_fast
    recovered = capacity(learn(learned, FAST, 600.0, 32), SLO_, IN, OUT).requests_per_s
    assert recovered == pytest.approx(truth_fast, rel=0.05)


def test_confidence_grows_with_data() -> None:
    prior = Estimate.from_prior(generic_prior(SLO_, 64))
    levels = [prior.confidence()] + [learn(prior, FAST, 0.0, n).confidence() for n in (1, 5, 20)]
    assert levels[0] == 0.0
    assert levels == sorted(levels)
    assert levels[1] > 0.0 and levels[-1] > 0.5
    assert levels[-1] < 1.0


def test_planned_capacity_grows_with_confidence() -> None:
    """Latency is planned at mean + 1 sd: with the mean right from the start, more data plans closer to the limit."""
    mean = [0.0] * len(COEFFICIENTS)
    for name in ("tpot_s", "ttft_s", "ttft_s_per_kilotoken"):
        mean[index(name)] = getattr(FAST, name)
    mean[index("tpot_s_per_context_ktok")] = FAST.tpot_s_per_seq / CONTEXT_K
    mean[index("ttft_s_per_context_ktok")] = FAST.ttft_s_per_seq / CONTEXT_K
    coefficients = (mean[0], mean[1], mean[2], mean[3], mean[4], mean[5])
    prior = Estimate.from_prior(LatencyPrior(mean=coefficients, sd=coefficients, max_concurrency=64))
    forever = LearningConfig(half_life_s=1e9)
    planned = [capacity(learn(prior, FAST, 0.0, n, forever), SLO_, IN, OUT).requests_per_s for n in (0, 1, 4, 40)]
    assert planned == sorted(planned)
    assert planned[0] < 0.95 * planned[-1]


def test_capacity_is_monotone_in_the_slo() -> None:
    estimate = learn(Estimate.from_prior(generic_prior(SLO_, 64)), FAST, 0.0, 20)
    by_tpot = [
        capacity(estimate, SLOConfig(ttft_p95_ms=10_000, tpot_p95_ms=ms), IN, OUT).requests_per_s
        for ms in (15, 20, 30, 50, 80, 120, 200)
    ]
    assert by_tpot == sorted(by_tpot)
    assert by_tpot[0] < by_tpot[-1]
    by_ttft = [
        capacity(estimate, SLOConfig(ttft_p95_ms=ms, tpot_p95_ms=1000), IN, OUT).requests_per_s
        for ms in (200, 250, 300, 400, 600, 1000, 3000)
    ]
    assert by_ttft == sorted(by_ttft)
    assert by_ttft[0] < by_ttft[-1]


def test_capacity_keeps_the_planned_latency_within_the_slo() -> None:
    estimate = learn(Estimate.from_prior(generic_prior(SLO_, 64)), FAST, 0.0, 20)
    for tpot_ms, ttft_ms in ((30, 10_000), (1000, 400), (60, 600)):
        slo = SLOConfig(ttft_p95_ms=ttft_ms, tpot_p95_ms=tpot_ms)
        found = capacity(estimate, slo, IN, OUT)
        assert found.requests_per_s > 0
        assert found.tpot_p95_s <= tpot_ms / 1000 + 1e-6
        assert found.ttft_p95_s <= ttft_ms / 1000 + 1e-6
    assert capacity(estimate, SLOConfig(ttft_p95_ms=10_000, tpot_p95_ms=30), IN, OUT).limit == "tpot"
    assert capacity(estimate, SLOConfig(ttft_p95_ms=400, tpot_p95_ms=1000), IN, OUT).limit == "ttft"


@pytest.mark.parametrize("limit", [4.0, 16.0, 109.0, 256.0])
def test_a_held_batch_overflows_its_limit_about_five_percent_of_the_time(limit: float) -> None:
    # Requests in flight under Poisson arrivals are Poisson, whatever their durations.
    held = held_batch(limit, 1.0)
    assert 0 < held < limit
    overflow = scipy.stats.poisson.sf(math.floor(limit), held)
    assert 0.01 < overflow < 0.1
    # A cache whose sequences vary in size holds fewer of them on average, and none at all holds nothing.
    assert held_batch(limit, 2.0) < held
    assert held_batch(0.0, 1.0) == 0.0


def test_a_batch_bound_class_is_planned_below_the_mean_batch_that_fills_the_cache() -> None:
    """Planning a mean batch at the cache's size fills it half the time, and prompts queue behind it."""
    known = sure_prior(0.02, 0.05)
    prior = LatencyPrior(known.mean, known.sd, max_concurrency=256, kv_tokens=100 * (IN + OUT))
    found = capacity(Estimate.from_prior(prior), SLO_, IN, OUT)
    assert found.limit == "batch"
    assert 0 < found.concurrency <= held_batch(100.0, 2.0) + 1e-6


def sure_prior(tpot_s: float, ttft_s: float) -> LatencyPrior:
    """A prior that is certain of a flat latency (sd at the floor)."""
    mean = [0.0] * len(COEFFICIENTS)
    mean[index("tpot_s")], mean[index("ttft_s")] = tpot_s, ttft_s
    values = (mean[0], mean[1], mean[2], mean[3], mean[4], mean[5])
    return LatencyPrior(mean=values, sd=(0.0,) * 6, max_concurrency=64)


def test_capacity_is_zero_when_even_an_empty_instance_misses_the_slo() -> None:
    too_slow = capacity(Estimate.from_prior(sure_prior(0.05, 0.1)), SLOConfig(tpot_p95_ms=20), IN, OUT)
    assert (too_slow.requests_per_s, too_slow.concurrency, too_slow.limit) == (0.0, 0.0, "tpot")
    assert too_slow.tpot_p95_s > 0.02
    late = capacity(Estimate.from_prior(sure_prior(0.01, 2.0)), SLOConfig(ttft_p95_ms=1000), IN, OUT)
    assert (late.requests_per_s, late.limit) == (0.0, "ttft")
    # The same pools meet a looser SLO.
    assert capacity(Estimate.from_prior(sure_prior(0.05, 0.1)), SLOConfig(tpot_p95_ms=200), IN, OUT).requests_per_s > 0


H100, LLAMA_8B = CATALOG["nvidia-h100-80gb"], PRESETS["llama-3.1-8b"]


def test_roofline_prior_for_llama_8b_on_an_h100() -> None:
    bf16, fp8 = roofline_prior(LLAMA_8B, H100, "bf16"), roofline_prior(LLAMA_8B, H100, "fp8")
    # 16 GB of weights at ~70% of 3.35 TB/s: about 7 ms a step, plus overhead.
    assert 0.005 < bf16.mean[index("tpot_s")] < 0.03
    # Each 1k tokens of context adds ~131 MB of KV cache to read: ~0.06 ms a step.
    assert 0 < bf16.mean[index("tpot_s_per_context_ktok")] < 0.0002
    # fp8 reads half the bytes and computes twice as fast.
    assert fp8.mean[index("tpot_s")] < 0.8 * bf16.mean[index("tpot_s")]
    assert fp8.mean[index("ttft_s_per_kilotoken")] < bf16.mean[index("ttft_s_per_kilotoken")]
    for prior in (bf16, fp8):
        assert all(sd >= abs(mean) and sd > 0 for mean, sd in zip(prior.mean, prior.sd, strict=True))
        # The prompts' share of the compute stretches the decode steps; no residual is assumed before data.
        assert prior.mean[index("tpot_s_per_prefill_ktok_s")] == 0
        assert all(
            mean > 0 for name, mean in zip(COEFFICIENTS, prior.mean, strict=True) if name != "tpot_s_per_prefill_ktok_s"
        )
        assert "h100" not in prior.source or "3350" in prior.source
    slo = SLOConfig(ttft_p95_ms=1000, tpot_p95_ms=50)
    bf16_capacity = capacity(Estimate.from_prior(bf16), slo, 1000, 200)
    fp8_capacity = capacity(Estimate.from_prior(fp8), slo, 1000, 200)
    assert bf16_capacity.requests_per_s > 1.0  # an H100 serves an 8B model at several requests per second
    assert fp8_capacity.requests_per_s > bf16_capacity.requests_per_s


def test_roofline_prior_on_cpus() -> None:
    # 32 cores, ~100 GB/s: about a quarter of a second per token for 16 GB of bf16 weights.
    cpu = roofline_prior(LLAMA_8B, CATALOG["cpu-32c"], "bf16")
    assert 0.1 < cpu.mean[index("tpot_s")] < 1.0
    assert cpu.mean[index("tpot_s")] > 10 * roofline_prior(LLAMA_8B, H100, "bf16").mean[index("tpot_s")]
    assert capacity(Estimate.from_prior(cpu), SLOConfig(tpot_p95_ms=100), IN, OUT).requests_per_s == 0.0
    assert (
        capacity(Estimate.from_prior(cpu), SLOConfig(ttft_p95_ms=60_000, tpot_p95_ms=2000), IN, OUT).requests_per_s > 0
    )
    # 8 GiB cannot hold 16 GB of weights: no batch fits, whatever the SLO.
    tiny = roofline_prior(LLAMA_8B, CATALOG["cpu-2c"], "bf16")
    loose = SLOConfig(ttft_p95_ms=1e6, tpot_p95_ms=1e5)
    assert capacity(Estimate.from_prior(tiny), loose, IN, OUT).requests_per_s == 0.0


def level(concurrency: float | None, tpot_ms: float, ttft_ms: float, *, rate: float | None = None,
          completed: int = 100) -> Level:  # fmt: skip
    """A level whose throughput follows from its latencies by Little's law (100-token answers)."""
    e2el_ms = ttft_ms + 99 * tpot_ms
    throughput = rate if rate is not None else (concurrency or 0) / (e2el_ms / 1000)
    numbers: dict[str, Any] = dict.fromkeys(
        ["duration_s", "request_goodput", "output_throughput", "total_token_throughput"]
        + [f"{stat}_{kind}_ms" for kind in ("ttft", "tpot", "itl", "e2el") for stat in ("mean", "p50", "p90", "p99")],
        1.0,
    )
    metrics = LevelMetrics(
        completed=completed, failed=0, total_input_tokens=1000 * completed, total_output_tokens=100 * completed,
        request_throughput=throughput, p95_tpot_ms=tpot_ms, p95_ttft_ms=ttft_ms, p95_itl_ms=tpot_ms,
        p95_e2el_ms=e2el_ms, **{**numbers, "mean_e2el_ms": e2el_ms},
    )  # fmt: skip
    if concurrency is None:
        return Level(mode="open", request_rate=throughput, metrics=metrics)
    return Level(mode="closed", concurrency=int(concurrency), metrics=metrics)


def profile(levels: list[Level], instances: int = 1) -> Profile:
    return Profile(
        created_at="2026-11-01T00:00:00Z", base_url="http://pool", model="m", instances=instances,
        workload=Workload(prompt_tokens=1000, output_tokens=100), slo=SLO(ttft_p95_ms=1000, tpot_p95_ms=100),
        levels=levels, capacity=None,
    )  # fmt: skip


def tpot_ms(n: float) -> float:
    return 10 + 2 * n


def ttft_ms(n: float) -> float:
    return 200 + 30 * n


@pytest.mark.parametrize(
    "fallback", [roofline_prior(LLAMA_8B, H100, "bf16"), generic_prior(SLOConfig(ttft_p95_ms=200))]
)
def test_profile_prior_fits_the_measured_levels(fallback: LatencyPrior) -> None:
    """The prior predicts each level's TPOT and TTFT at its load and prompt rate."""
    levels = [level(n, tpot_ms(n), ttft_ms(n)) for n in (1, 2, 4, 8, 16)]
    prior = profile_prior(profile(levels), fallback=fallback)
    estimate = Estimate.from_prior(prior)
    for n in (1, 2, 4, 8, 16):
        prefill = levels[[1, 2, 4, 8, 16].index(n)].metrics.request_throughput * 1.0  # 1000-token prompts
        # Within 2.5 ms: the prompt rate is not linear in the load, so the line fits it only nearly.
        context = n * 1.05  # 1000-token prompts and 100-token answers hold 1.05k tokens each
        x = tpot_features(context, prefill, prior.prefill_tokens_per_s)
        assert estimate.predict(x)[0] == pytest.approx(tpot_ms(n) / 1000, abs=0.0025)
        assert estimate.predict(ttft_features(context, 1.0))[0] == pytest.approx(ttft_ms(n) / 1000, rel=0.01)
    assert prior.mean[index("ttft_s_per_context_ktok")] == pytest.approx(0.030 / 1.05)
    # The profile ran one prompt length: the roofline's prefill rate says how much of the intercept is the prompt.
    e = fallback.mean[index("ttft_s_per_kilotoken")]
    assert prior.mean[index("ttft_s_per_kilotoken")] == e
    assert prior.mean[index("ttft_s")] == pytest.approx(0.200 - e * 1.0)
    # Measured, so tighter than the roofline's guess.
    assert prior.sd[index("tpot_s")] < fallback.sd[index("tpot_s")]
    assert prior.max_concurrency == fallback.max_concurrency
    assert profile_prior(profile(levels), max_concurrency=32, fallback=fallback).max_concurrency == 32
    assert prior.source.startswith("profile:")


def test_profile_prior_reads_open_loop_levels_and_skips_empty_ones() -> None:
    closed = [level(n, tpot_ms(n), ttft_ms(n)) for n in (1, 2, 4, 8)]
    # Open loop: the load in flight is throughput x mean duration (Little's law), here 8 again.
    opened = [*closed[:3], level(None, tpot_ms(8), ttft_ms(8), rate=closed[3].metrics.request_throughput)]
    opened.append(level(64, 999, 9999, completed=0))  # nothing completed: no point
    fallback = generic_prior(SLO_, 64)
    assert profile_prior(profile(opened), fallback=fallback).mean == pytest.approx(
        profile_prior(profile(closed), fallback=fallback).mean
    )


def test_profile_prior_is_per_instance() -> None:
    """A profile of two instances behind one URL: twice the load and throughput for the same latency."""
    fallback = generic_prior(SLO_, 64)
    one = profile([level(n, tpot_ms(n), ttft_ms(n)) for n in (1, 2, 4, 8)])
    two = profile([level(2 * n, tpot_ms(n), ttft_ms(n)) for n in (1, 2, 4, 8)], instances=2)
    assert profile_prior(two, fallback=fallback).mean == pytest.approx(profile_prior(one, fallback=fallback).mean)


def test_profile_prior_fits_the_levels_within_the_slo() -> None:
    """Past the knee requests queue and latency leaves any line: a sweep that ran into it fits as one that did not."""
    fallback = generic_prior(SLO_, 64)
    within = [level(n, tpot_ms(n), ttft_ms(n)) for n in (1, 2, 4, 8)]
    saturated = [*within, level(64, 95, 9000)]  # TTFT 9 s: over the profile's 1000 ms
    assert profile_prior(profile(saturated), fallback=fallback).mean == pytest.approx(
        profile_prior(profile(within), fallback=fallback).mean
    )
    # With fewer than two levels within the SLO, every level that completed is fitted.
    assert profile_prior(profile([within[0], level(64, 95, 9000)]), fallback=fallback) is not fallback


def test_profile_prior_needs_two_levels() -> None:
    fallback = generic_prior(SLO_)
    assert profile_prior(profile([level(4, 20, 300)]), fallback=fallback) is fallback


def mixed_window(chats: float, documents: float) -> PoolWindow:
    """One instance with `chats` 500/100-token and `documents` 5000/300-token requests in flight, on an engine
    whose decode step grows with the context it reads (2 ms per 1k tokens), as a real one's does."""
    sizes = {"chat": (500.0, 100.0, chats), "doc": (5000.0, 300.0, documents)}
    context = sum(batch * (prompt + output / 2) / 1000 for prompt, output, batch in sizes.values())
    tpot = 0.01 + 0.002 * context
    groups, busy, tokens = {}, 0.0, 0.0
    for name, (prompt, output, batch) in sizes.items():
        if batch <= 0:
            continue
        ttft = 0.1 + 0.01 * context + 0.05 * prompt / 1000
        duration = ttft + (output - 1) * tpot
        requests = round(batch * WINDOW_S / duration)
        groups[name] = ClassWindow(requests, prompt, output, ttft, tpot, tpot, duration)
        busy += batch * WINDOW_S
        tokens += batch * WINDOW_S * (prompt + output / 2)
    requests = sum(group.requests for group in groups.values())
    return PoolWindow(requests, 0, busy, 0, None, tpot, tpot, groups, context_token_s=tokens)


def test_a_saturated_window_is_seen_at_the_batch_the_engine_decoded() -> None:
    """Past its batch of 32 a pool queues: a window holds 64 in flight at the TPOT of 32. Learnt at 64,
    the line through it and an unsaturated window is flat, and the pool looks slow at any load."""
    prior = generic_prior(SLO_, 32)
    saturated = FAST.window(32.0)
    saturated = replace(saturated, busy_s=2 * saturated.busy_s, context_token_s=2 * saturated.context_token_s)
    load, found = observations(saturated, PoolStatus(ready=1), WINDOW_S, LEARNING, SLO_, prior)
    assert load.sequences == pytest.approx(64.0)
    tpot = found[0]
    assert tpot.value == pytest.approx(FAST.tpot(32.0))
    assert tpot.features[index("tpot_s_per_context_ktok")] == pytest.approx(32 * CONTEXT_K)
    estimate = Estimate.from_prior(prior)
    for i, batch in enumerate((4.0, 32.0, 32.0, 4.0)):
        window = FAST.window(batch) if batch < 32 else saturated
        _, found = observations(window, PoolStatus(ready=1), WINDOW_S, LEARNING, SLO_, prior)
        estimate = estimate.observe(15.0 * i, found, window.requests, LEARNING)
    assert tpot_at(estimate, 16.0) == pytest.approx(FAST.tpot(16.0), rel=0.1)


def test_long_documents_in_the_mix_do_not_make_short_requests_look_expensive() -> None:
    """Load is the context in flight, not the count of sequences: a pool learned on a mix where 5k-token
    documents are a fifth of the batch plans chat as the same pool learned on chat alone does."""

    def learned(documents_per_chat: float) -> Estimate:
        estimate = Estimate.from_prior(generic_prior(SLO_, 256))
        for i, chats in zip(range(40), itertools.cycle((2.0, 6.0, 12.0, 20.0)), strict=False):
            window = mixed_window(chats, chats * documents_per_chat)
            _, found = observations(window, PoolStatus(ready=1), WINDOW_S, LEARNING, SLO_, estimate.prior)
            estimate = estimate.observe(15.0 * i, found, window.requests, LEARNING)
        return estimate

    chat_alone = capacity(learned(0.0), SLO_, IN, OUT).requests_per_s
    in_the_mix = capacity(learned(0.25), SLO_, IN, OUT).requests_per_s
    assert chat_alone > 0
    assert in_the_mix == pytest.approx(chat_alone, rel=0.15)
