"""Hardware microbenchmarks with torch: achieved memory bandwidth and matmul throughput per dtype.

CPU and CUDA through torch; TPU through torch-xla when it is installed. Bandwidth streams a
buffer far larger than the last-level cache, twice: a copy (reads and writes it: 2x bytes) and
a sum (reads it once). Matmuls are square: bf16 and fp32 with `torch.matmul`, int8 with
`torch._int_mm` (int32 accumulation), fp8 e4m3 with `torch._scaled_mm` (bf16 output). A dtype
the device or this torch build cannot do is reported as not measured, with torch's reason.
"""

from __future__ import annotations

import importlib
import platform
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from runtimes.profile.microbench import (
    BUDGETS,
    DTYPES_BY_DEVICE,
    Budget,
    FrameworkMissing,
    HardwareReport,
    Measurement,
    Sync,
    best_seconds,
    best_seconds_sized,
    gigabytes_per_s,
    matmul_tflops,
)

__all__ = ["torch_report"]

_UNSUPPORTED = (RuntimeError, NotImplementedError, TypeError, AttributeError, ValueError)
"""What torch raises for a dtype or op a device or build lacks."""


def torch_report(device: str = "auto", quick: bool = False, dtypes: Sequence[str] | None = None) -> HardwareReport:
    """Measure bandwidth and matmuls on `device` (`auto`: CUDA when available, else CPU)."""
    try:
        import torch
    except ImportError as exc:
        raise FrameworkMissing("torch is not installed") from exc
    kind = ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device
    target, sync, framework, name, max_batch = _device(torch, kind)
    budget = BUDGETS[(kind, quick)]
    measurements = _bandwidth(torch, target, sync, budget, max_batch)
    for dtype in dtypes or DTYPES_BY_DEVICE[kind]:
        measurements.append(_matmul(torch, target, dtype, sync, budget, max_batch))
    notes = [f"{torch.get_num_threads()} threads"] if kind == "cpu" else []
    if kind == "cuda":
        torch.cuda.empty_cache()  # hand the buffers back before another framework measures
    return HardwareReport(framework=framework, device=kind, device_name=name, measurements=measurements, notes=notes)


def _device(torch: Any, kind: str) -> tuple[Any, Sync, str, str, int]:
    """The torch device, how to wait for it, the framework's name, the device's name, the largest batch."""
    if kind == "cuda":
        if not torch.cuda.is_available():
            raise FrameworkMissing("torch has no CUDA device here")
        return "cuda", lambda _: torch.cuda.synchronize(), "torch", torch.cuda.get_device_name(0), 1_000_000
    if kind == "tpu":
        try:
            xm = importlib.import_module("torch_xla.core.xla_model")
        except ImportError as exc:
            raise FrameworkMissing("torch-xla is not installed") from exc

        def xla_sync(_: object) -> None:
            xm.mark_step()
            xm.wait_device_ops()

        # Lazy tensors: identical calls in one graph could be merged, so each call is its own step.
        return xm.xla_device(), xla_sync, "torch-xla", str(xm.xla_device_hw(xm.xla_device())), 1
    return "cpu", lambda _: None, "torch", _cpu_name(), 1_000_000


def _cpu_name() -> str:
    return cpuinfo_field("model name") or platform.processor() or platform.machine()


def cpuinfo_field(name: str) -> str | None:
    """The value of `name` (`model name`, `flags`) for this host's first CPU in /proc/cpuinfo; None off Linux."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == name:
                return value.strip()
    return None


def _bandwidth(torch: Any, device: Any, sync: Sync, budget: Budget, max_batch: int) -> list[Measurement]:
    elements = budget.bandwidth_bytes // 4
    source = torch.ones(elements, dtype=torch.float32, device=device)
    target = torch.empty_like(source)
    size = f"{budget.bandwidth_bytes / 2**20:.0f} MiB fp32"
    patterns: list[tuple[str, Callable[[], object], int]] = [
        ("copy", lambda: target.copy_(source), 2 * budget.bandwidth_bytes),
        ("read", lambda: source.sum(), budget.bandwidth_bytes),
    ]
    measurements = []
    for name, call, moved in patterns:
        seconds = best_seconds(call, sync, budget.seconds, max_batch)
        measurements.append(Measurement("bandwidth", name, gigabytes_per_s(moved, seconds), "GB/s", size))
    return measurements


def _matmul(torch: Any, device: Any, dtype: str, sync: Sync, budget: Budget, max_batch: int) -> Measurement:
    unit = "TOPS" if dtype == "int8" else "TFLOP/s"
    try:
        n, seconds = best_seconds_sized(lambda size: _matmul_call(torch, device, dtype, size), sync, budget, max_batch)
    except _UNSUPPORTED as exc:
        return Measurement("matmul", dtype, None, unit, f"not measured: {_first_line(exc)}")
    return Measurement("matmul", dtype, matmul_tflops(n, seconds), unit, f"{n}x{n}x{n}")


def _matmul_call(torch: Any, device: Any, dtype: str, n: int) -> Callable[[], object]:
    if dtype in ("bf16", "fp16", "fp32"):
        torch_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[dtype]
        a = torch.randn(n, n, device=device, dtype=torch_dtype)
        b = torch.randn(n, n, device=device, dtype=torch_dtype)
        return lambda: torch.matmul(a, b)
    if dtype == "int8":
        qa = torch.randint(-8, 8, (n, n), device=device, dtype=torch.int8)
        qb = torch.randint(-8, 8, (n, n), device=device, dtype=torch.int8)
        return lambda: torch._int_mm(qa, qb)
    if dtype == "fp8":
        fa = torch.randn(n, n, device=device).to(torch.float8_e4m3fn)
        fb = torch.randn(n, n, device=device).to(torch.float8_e4m3fn).t()  # column-major, as cuBLASLt wants
        one = torch.tensor(1.0, device=device)
        return lambda: torch._scaled_mm(fa, fb, scale_a=one, scale_b=one, out_dtype=torch.bfloat16)
    raise ValueError(f"unknown dtype {dtype!r}")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:160]}" if text else type(exc).__name__
