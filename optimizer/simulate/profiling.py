"""`thrifty profile` on a simulated instance: the load sweep an operator runs on a pool before deploying it.

Melange-style planning assumes every pool was profiled offline. The `thrifty-profiled` policy gets
the same head start, measured the way `thrifty profile` measures a real instance, not read from the
true capacities. One instance of the pool's engine serves Poisson arrivals (as `thrifty profile
--rates` sends them) at rates that would keep 1, 2, 4, ... requests in flight on an idle instance,
until a level misses the SLO. (A closed loop of equal requests stays in lockstep, every worker
sending at the same step, and measures the TTFT of bursts.) Every request has the workload's mean
prompt and output length: one size, as a real profile has. The levels' metrics come from the
profiler's own code (`level_metrics`, `recorded_profile`), so the profile is what `thrifty profile
-o` would write, and it seeds the optimizer through the same `profile_prior` as a configured
`optimizer.pools.<name>.profile`.

The engine reports a request's first and last token only, so the levels carry no ITL.
"""

from __future__ import annotations

import numpy as np

from optimizer.config import SLOConfig
from optimizer.simulate.engine import EngineSpec, serve_alone
from runtimes.profile.capacity import is_feasible
from runtimes.profile.metrics import Timing, level_metrics
from runtimes.profile.profile_file import SLO, Level, Profile, Workload
from runtimes.profile.sweep import Target, recorded_profile

__all__ = ["profile_engine", "sweep_level"]

_REQUESTS_PER_CONCURRENCY = 8
"""Requests of a level per request its rate keeps in flight (unloaded): several lifetimes of the instance's batch."""
_MIN_REQUESTS = 64


def sweep_level(
    spec: EngineSpec, rate: float, requests: int, prompt_tokens: int, output_tokens: int, seed: int
) -> tuple[list[Timing], float]:
    """One open-loop level on a fresh instance: every request's timing, and the level's duration in seconds."""
    rng = np.random.default_rng(seed)
    sends: list[float] = np.cumsum(rng.exponential(1 / rate, size=requests)).tolist()
    finished = serve_alone(spec, sends, [(prompt_tokens, output_tokens)] * requests)
    timings = [
        Timing(
            start_s=sends[done.rid],
            ttft_ms=(done.first_token - sends[done.rid]) * 1000,
            e2el_ms=(done.end - sends[done.rid]) * 1000,
            itl_ms=[],
            prompt_tokens=prompt_tokens,
            output_tokens=output_tokens,
        )
        for done in finished
    ]
    return timings, max(done.end for done in finished)


def profile_engine(
    spec: EngineSpec,
    slo: SLOConfig,
    target: Target,
    *,
    prompt_tokens: int,
    output_tokens: int,
    seed: int = 0,
) -> Profile:
    """A profile of one instance (`target` says what it records): levels up to the first that misses
    the SLO (or the engine's batch limit)."""
    profile_slo = SLO(ttft_p95_ms=slo.ttft_p95_ms, tpot_p95_ms=slo.tpot_p95_ms)
    alone_s = sweep_level(spec, 1e-3, 1, prompt_tokens, output_tokens, seed)[0][0].e2el_ms / 1000
    levels: list[Level] = []
    concurrency = 1
    while concurrency <= spec.max_num_seqs:
        rate = concurrency / alone_s
        requests = max(_MIN_REQUESTS, _REQUESTS_PER_CONCURRENCY * concurrency)
        timings, duration_s = sweep_level(spec, rate, requests, prompt_tokens, output_tokens, seed + concurrency)
        metrics = level_metrics(timings, duration_s, profile_slo)
        levels.append(Level(mode="open", request_rate=round(rate, 3), metrics=metrics))
        if not is_feasible(metrics, profile_slo):
            break
        concurrency *= 2
    workload = Workload(prompt_tokens=prompt_tokens, output_tokens=output_tokens)
    return recorded_profile(target, workload, profile_slo, levels, created_at="simulated")
