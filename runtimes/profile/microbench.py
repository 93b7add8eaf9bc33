"""What the hardware microbenchmarks report, how they time, and how results read against peaks.

Standard library only, like `hardware`, `jax_bench` and `roofline`: these run on bare
accelerator hosts that have torch or JAX and nothing of this project's dependencies.

Timing: one warm-up call (compilation, allocation), then batches of calls, each batch long
enough (about 10 ms) that one synchronization per batch costs little; the best batch average
within the time budget is the result. The best rather than the mean, because the question is
what the hardware can do, and other load on a shared host only ever makes a batch slower.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

__all__ = [
    "BUDGETS",
    "DTYPES_BY_DEVICE",
    "Budget",
    "FrameworkMissing",
    "HardwareReport",
    "Measurement",
    "Peaks",
    "best_seconds",
    "best_seconds_sized",
    "format_report",
    "gigabytes_per_s",
    "match_accelerator",
    "matmul_tflops",
]

_BATCH_S = 0.01
_MAX_BATCH = 1_000_000

Sync = Callable[[object], None]
"""Waits until the result of a call (and everything before it on the device) is computed."""


class FrameworkMissing(Exception):
    """The framework (or its device plugin) asked for is not installed here, or sees no such device."""


@dataclass(frozen=True)
class Measurement:
    kind: Literal["bandwidth", "matmul"]
    name: str
    """`copy` or `read` for bandwidth; the dtype (`bf16`, `fp8`, `int8`, `fp32`) for matmul."""
    value: float | None
    """GB/s, or TFLOP/s (TOPS for int8); None when it could not be measured."""
    unit: str
    detail: str = ""
    """The size measured, or why there is no value."""


@dataclass(frozen=True)
class HardwareReport:
    framework: str
    """`torch`, `torch-xla` or `jax`."""
    device: str
    """`cpu`, `cuda` or `tpu`."""
    device_name: str
    measurements: list[Measurement]
    notes: list[str] = field(default_factory=list)

    @property
    def bandwidth_gbs(self) -> float | None:
        """The best achieved memory bandwidth of any pattern."""
        values = [m.value for m in self.measurements if m.kind == "bandwidth" and m.value is not None]
        return max(values, default=None)

    def tflops(self, dtype: str) -> float | None:
        for m in self.measurements:
            if m.kind == "matmul" and m.name == dtype:
                return m.value
        return None


@dataclass(frozen=True)
class Peaks:
    """A catalog entry's datasheet numbers, to read achieved numbers against."""

    name: str
    bandwidth_gbs: float
    tflops: dict[str, float]


@dataclass(frozen=True)
class Budget:
    """How long and how large each measurement may be on a device."""

    bandwidth_bytes: int
    """Size of the buffer streamed: well beyond the last-level cache."""
    matmul_sizes: tuple[int, ...]
    """Square sizes tried in order until one call takes `call_s`."""
    call_s: float
    seconds: float
    """Timing budget of each measurement, after its warm-up."""


def best_seconds(call: Callable[[], object], sync: Sync, budget_s: float, max_batch: int = _MAX_BATCH) -> float:
    """Seconds per call: the best batch average within `budget_s` (at least one batch), after a warm-up.

    `max_batch=1` synchronizes after every call, for lazy frameworks that could merge repeated calls.
    """
    sync(call())
    return _best_batch(call, sync, _time_once(call, sync), budget_s, max_batch)


def best_seconds_sized(
    make_call: Callable[[int], Callable[[], object]], sync: Sync, budget: Budget, max_batch: int = _MAX_BATCH
) -> tuple[int, float]:
    """The first size whose warm call takes `budget.call_s` (or the largest), and its best seconds per call."""
    if not budget.matmul_sizes:
        raise ValueError("no matmul sizes to try")
    for n in budget.matmul_sizes:
        call = make_call(n)
        sync(call())
        single = _time_once(call, sync)
        if single >= budget.call_s:
            break
    return n, _best_batch(call, sync, single, budget.seconds, max_batch)


def _time_once(call: Callable[[], object], sync: Sync) -> float:
    started = time.perf_counter()
    sync(call())
    return time.perf_counter() - started


def _best_batch(call: Callable[[], object], sync: Sync, single: float, budget_s: float, max_batch: int) -> float:
    per_batch = max(1, min(max_batch, int(_BATCH_S / max(single, 1e-9))))
    best = single
    deadline = time.perf_counter() + budget_s
    while True:
        started = time.perf_counter()
        result = None
        for _ in range(per_batch):
            result = call()
        sync(result)
        best = min(best, (time.perf_counter() - started) / per_batch)
        if time.perf_counter() >= deadline:
            return best


def matmul_tflops(n: int, seconds: float) -> float:
    """A square n x n x n matmul does 2 n^3 operations (a multiply and an add per term)."""
    return 2 * n**3 / seconds / 1e12


_ACCELERATOR_NAMES = (
    ("H200", "nvidia-h200-141gb"),
    ("H100", "nvidia-h100-80gb"),
    ("A100", "nvidia-a100-80gb"),
    ("L40S", "nvidia-l40s"),
    ("A10G", "nvidia-a10g"),
    ("L4", "nvidia-l4"),
    ("TPU v5 lite", "tpu-v5e"),
    ("TPU v5e", "tpu-v5e"),
    ("TPU v5", "tpu-v5p"),
    ("TPU v6", "tpu-v6e"),
)


def match_accelerator(device_name: str) -> str | None:
    """The catalog name for a device name such as `NVIDIA H100 80GB HBM3` or `TPU v5 lite`, if known."""
    for marker, name in _ACCELERATOR_NAMES:
        if marker.lower() in device_name.lower():
            return name
    return None


def format_report(report: HardwareReport, peaks: Peaks | None) -> str:
    """A plain-text table: achieved numbers, and against the catalog's peaks when given."""
    against = f" against {peaks.name}" if peaks else ""
    lines = [f"{report.framework} on {report.device} ({report.device_name}){against}"]
    lines.append(f"  {'measure':<16} {'achieved':>12} {'peak':>10} {'of peak':>8}  detail")
    for m in report.measurements:
        peak = _peak(m, peaks)
        achieved = f"{_number(m.value)} {m.unit}" if m.value is not None else "-"
        share = f"{100 * m.value / peak:.0f}%" if peak and m.value is not None else ""
        lines.append(f"  {m.kind + ' ' + m.name:<16} {achieved:>12} {_number(peak):>10} {share:>8}  {m.detail}")
    lines += [f"  note: {note}" for note in report.notes]
    return "\n".join(lines)


def _peak(m: Measurement, peaks: Peaks | None) -> float | None:
    if peaks is None:
        return None
    return peaks.bandwidth_gbs if m.kind == "bandwidth" else peaks.tflops.get(m.name)


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:,.4g}"


def gigabytes_per_s(nbytes: float, seconds: float) -> float:
    return nbytes / seconds / 1e9


DTYPES_BY_DEVICE: dict[str, Sequence[str]] = {
    "cpu": ("bf16", "fp32", "int8"),
    "cuda": ("bf16", "fp8", "int8"),
    "tpu": ("bf16", "int8", "fp8"),
}
"""Matmul dtypes measured by default: those the catalog lists peaks for on that kind of device.
CPUs have no fp8 matmul units (torch emulates `_scaled_mm` there at about 1e-5 TFLOP/s)."""

BUDGETS: dict[tuple[str, bool], Budget] = {
    ("cpu", False): Budget(bandwidth_bytes=1 << 30, matmul_sizes=(256, 512, 1024, 2048, 4096), call_s=0.05, seconds=2),
    ("cpu", True): Budget(bandwidth_bytes=16 << 20, matmul_sizes=(128, 256), call_s=0.01, seconds=0.05),
    ("cuda", False): Budget(
        bandwidth_bytes=2 << 30, matmul_sizes=(1024, 2048, 4096, 8192, 16384), call_s=0.005, seconds=2
    ),
    ("cuda", True): Budget(bandwidth_bytes=256 << 20, matmul_sizes=(1024, 2048), call_s=0.001, seconds=0.2),
    ("tpu", False): Budget(bandwidth_bytes=2 << 30, matmul_sizes=(1024, 2048, 4096, 8192), call_s=0.005, seconds=2),
    ("tpu", True): Budget(bandwidth_bytes=256 << 20, matmul_sizes=(1024, 2048), call_s=0.001, seconds=0.2),
}
"""Per device and quick mode. Full runs stay well within a minute on CPU and a few on an accelerator."""
