"""The profile file: a load sweep of one pool (or URL) and the capacity it showed within an SLO.

The optimizer loads it as its prior for the pool's SLO-feasible capacity per instance; `accepts`
says whether a profile can serve as one. Metric names follow vLLM's benchmark
(`mean_ttft_ms`, `p95_tpot_ms`, `request_goodput`, ...), so numbers compare one to one.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Literal

import msgspec
from msgspec import Meta

__all__ = [
    "FORMAT_VERSION",
    "SLO",
    "Capacity",
    "Level",
    "LevelMetrics",
    "Profile",
    "Workload",
    "accepts",
    "level_label",
    "load_profile",
    "save_profile",
    "validate",
]

FORMAT_VERSION = 1

PositiveMs = Annotated[float, Meta(gt=0)]
NonNegative = Annotated[float, Meta(ge=0)]


class SLO(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Latency objectives as 95th percentiles; the same names as the optimizer's `SLOConfig`."""

    ttft_p95_ms: PositiveMs
    tpot_p95_ms: PositiveMs


class Workload(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """What every request of the sweep looked like."""

    prompt_tokens: Annotated[int, Meta(ge=1)]
    """Target prompt length; prompts are built to about this many tokens (see the levels' input totals)."""
    output_tokens: Annotated[int, Meta(ge=1)]
    """`max_tokens` of every request; exact when `ignore_eos` is set."""
    api: Literal["completions", "chat"] = "completions"
    ignore_eos: bool = True
    """vLLM's sampling parameter: generate `output_tokens` whatever the model says."""


class LevelMetrics(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One load level, with vLLM's benchmark definitions; latencies over completed requests.

    TTFT: send to the first chunk with a choice. E2EL: send to the last such chunk.
    TPOT per request: (e2el - ttft) / (output_tokens - 1), for requests with more than one token.
    ITL: every gap between successive chunks of a request, pooled over all requests.
    Goodput: completed requests per second whose own TTFT and TPOT are within the SLO.
    """

    completed: int
    failed: int
    duration_s: float
    total_input_tokens: int
    total_output_tokens: int
    request_throughput: float
    request_goodput: float
    output_throughput: float
    total_token_throughput: float
    mean_ttft_ms: float
    p50_ttft_ms: float
    p90_ttft_ms: float
    p95_ttft_ms: float
    p99_ttft_ms: float
    mean_tpot_ms: float
    p50_tpot_ms: float
    p90_tpot_ms: float
    p95_tpot_ms: float
    p99_tpot_ms: float
    mean_itl_ms: float
    p50_itl_ms: float
    p90_itl_ms: float
    p95_itl_ms: float
    p99_itl_ms: float
    mean_e2el_ms: float
    p50_e2el_ms: float
    p90_e2el_ms: float
    p95_e2el_ms: float
    p99_e2el_ms: float
    errors: dict[str, int] = {}
    """Failed requests by kind (`HTTP 503`, `TimeoutError`, ...)."""


class Level(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One point of the sweep: a closed loop at a concurrency or an open loop at a request rate."""

    mode: Literal["closed", "open"]
    concurrency: int | None = None
    """Workers of a closed loop; the in-flight cap of an open loop."""
    request_rate: float | None = None
    """Offered Poisson arrivals per second (open loop)."""
    metrics: LevelMetrics

    @property
    def label(self) -> str:
        return level_label(self.mode, self.concurrency, self.request_rate)


def level_label(mode: Literal["closed", "open"], concurrency: int | None, request_rate: float | None) -> str:
    """`concurrency 4` or `rate 2.5/s`: how a level is named in tables, plots and `Capacity.level`."""
    return f"concurrency {concurrency}" if mode == "closed" else f"rate {request_rate:g}/s"


class Capacity(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The highest measured load per instance that kept TTFT p95 and TPOT p95 within the SLO."""

    level: str
    """The level it was measured at, e.g. `concurrency 4`."""
    request_throughput: float
    """Completed requests per second per instance."""
    output_throughput: float
    """Output tokens per second per instance."""
    p95_ttft_ms: float
    p95_tpot_ms: float
    tokens_per_dollar: float | None
    """Output tokens per USD at this load: output tok/s * 3600 / price; None without a (non-zero) price."""


class Profile(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A whole profile: what was measured, against what, and the capacity it showed."""

    version: int = FORMAT_VERSION
    created_at: str
    """ISO 8601 UTC."""
    base_url: str
    model: str
    """The model name the requests asked for."""
    pool: str | None = None
    accelerator: str | None = None
    variant: str | None = None
    """The precision served (`bf16`, `int8-w8a8`, ...), when known."""
    price_per_hour: NonNegative | None = None
    """USD per instance-hour used for tokens per dollar."""
    instances: Annotated[int, Meta(ge=1)] = 1
    """Instances behind `base_url`; throughputs in `capacity` are divided by it."""
    workload: Workload
    slo: SLO
    levels: list[Level]
    capacity: Capacity | None
    """None when no level met the SLO."""


def save_profile(profile: Profile, path: str | Path) -> None:
    Path(path).write_bytes(msgspec.json.format(msgspec.json.encode(profile)) + b"\n")


def load_profile(path: str | Path) -> Profile:
    """Read a profile; raises `msgspec.ValidationError` (with the field's path) for a malformed file."""
    return msgspec.json.decode(Path(path).read_bytes(), type=Profile)


def validate(profile: Profile, slo: SLO | None = None) -> list[str]:
    """Why the profile cannot serve as the optimizer's prior; empty when it can.

    With `slo`, the profile must have been measured against an SLO at least as strict; a looser
    one overstates capacity (`capacity.select_capacity` can recompute from the levels instead).
    """
    problems = []
    if profile.version != FORMAT_VERSION:
        problems.append(f"format version {profile.version}, expected {FORMAT_VERSION}")
    if not (_positive(profile.slo.ttft_p95_ms) and _positive(profile.slo.tpot_p95_ms)):
        problems.append("the SLO is not recorded (TTFT and TPOT p95 must be positive and finite)")
    if profile.workload.prompt_tokens < 1 or profile.workload.output_tokens < 1:
        problems.append("the workload is not recorded (prompt and output tokens must be at least 1)")
    if not profile.levels:
        problems.append("no load levels")
    capacity = profile.capacity
    if capacity is None:
        problems.append("no level met the SLO: no capacity")
    elif not (_positive(capacity.request_throughput) and _positive(capacity.output_throughput)):
        problems.append("capacity is not a positive finite throughput")
    if slo is not None and (profile.slo.ttft_p95_ms > slo.ttft_p95_ms or profile.slo.tpot_p95_ms > slo.tpot_p95_ms):
        problems.append(f"measured against a looser SLO ({_slo_text(profile.slo)}) than required ({_slo_text(slo)})")
    return problems


def accepts(profile: Profile, slo: SLO | None = None) -> bool:
    """Whether the optimizer can use the profile as its prior (see `validate`)."""
    return not validate(profile, slo)


def _positive(value: float) -> bool:
    return math.isfinite(value) and value > 0


def _slo_text(slo: SLO) -> str:
    return f"TTFT p95 {slo.ttft_p95_ms:g} ms, TPOT p95 {slo.tpot_p95_ms:g} ms"
