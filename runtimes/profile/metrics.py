"""Serving metrics of one load level from per-request timings, with vLLM's benchmark definitions.

The definitions are those of vLLM's `benchmark_serving` (`calculate_metrics`): a request's TTFT
runs to its first chunk with a choice and its end-to-end latency to its last; its TPOT is
(e2el - ttft) / (output_tokens - 1) and is left out for single-token outputs; ITL pools every
gap between successive chunks of every request; goodput counts the requests whose own TTFT and
TPOT are within the SLO. Percentiles interpolate linearly between ranks (numpy's default).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import msgspec

from runtimes.loadgen import percentile
from runtimes.profile.profile_file import SLO, LevelMetrics

__all__ = ["PERCENTILES", "Timing", "distribution", "is_good", "level_metrics"]

PERCENTILES = (50, 90, 95, 99)


class Timing(msgspec.Struct, frozen=True, kw_only=True):
    """One streamed request as the profiler saw it; times in ms from its own send."""

    start_s: float
    """When it was sent, in seconds since the level started."""
    ttft_ms: float | None
    """First chunk with a choice; None when none arrived."""
    e2el_ms: float
    """Last chunk with a choice (the whole attempt when it failed)."""
    itl_ms: list[float]
    """Gaps between successive chunks with a choice."""
    prompt_tokens: int
    output_tokens: int
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and self.ttft_ms is not None

    @property
    def tpot_ms(self) -> float | None:
        """Time per output token after the first; None for fewer than two tokens."""
        if self.ttft_ms is None or self.output_tokens < 2:
            return None
        return (self.e2el_ms - self.ttft_ms) / (self.output_tokens - 1)


def is_good(timing: Timing, slo: SLO) -> bool:
    """Whether this request met the SLO on its own (vLLM's goodput criterion)."""
    tpot = timing.tpot_ms
    return (
        timing.ok
        and timing.ttft_ms is not None
        and timing.ttft_ms <= slo.ttft_p95_ms
        and (tpot is None or tpot <= slo.tpot_p95_ms)
    )


def distribution(name: str, values: Sequence[float]) -> dict[str, float]:
    """`mean_<name>_ms` and `p<q>_<name>_ms` for each of PERCENTILES; all 0.0 for no values."""
    ordered = sorted(values)
    stats = {f"mean_{name}_ms": sum(ordered) / len(ordered) if ordered else 0.0}
    stats |= {f"p{q}_{name}_ms": percentile(ordered, q) for q in PERCENTILES}
    return stats


def level_metrics(timings: Sequence[Timing], duration_s: float, slo: SLO) -> LevelMetrics:
    """Throughputs over `duration_s` and latency distributions over the completed requests."""
    ok = [t for t in timings if t.ok]
    per_s = 1 / duration_s if duration_s > 0 else 0.0
    input_tokens = sum(t.prompt_tokens for t in ok)
    output_tokens = sum(t.output_tokens for t in ok)
    fields: dict[str, object] = {
        "completed": len(ok),
        "failed": len(timings) - len(ok),
        "duration_s": duration_s,
        "total_input_tokens": input_tokens,
        "total_output_tokens": output_tokens,
        "request_throughput": len(ok) * per_s,
        "request_goodput": sum(is_good(t, slo) for t in ok) * per_s,
        "output_throughput": output_tokens * per_s,
        "total_token_throughput": (input_tokens + output_tokens) * per_s,
        "errors": dict(Counter(t.error or "no output" for t in timings if not t.ok)),
    }
    fields |= distribution("ttft", [t.ttft_ms for t in ok if t.ttft_ms is not None])
    fields |= distribution("tpot", [tpot for t in ok if (tpot := t.tpot_ms) is not None])
    fields |= distribution("itl", [gap for t in ok for gap in t.itl_ms])
    fields |= distribution("e2el", [t.e2el_ms for t in ok])
    return msgspec.convert(fields, LevelMetrics)
