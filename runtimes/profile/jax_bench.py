"""Hardware microbenchmarks with JAX (CPU, GPU or TPU): the same measurements as `hardware` with torch.

JAX is imported only when asked for; it is not a dependency of this project. Bandwidth: an
elementwise add (reads and writes the buffer: 2x bytes) and a sum (reads it once), each jitted.
Matmuls: `jax.lax.dot` with bf16 or fp32 inputs; int8 inputs with int32 accumulation; fp8 e4m3
inputs with bf16 output. Results are awaited with `block_until_ready`.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable, Sequence
from typing import Any

from runtimes.profile.microbench import (
    BUDGETS,
    DTYPES_BY_DEVICE,
    Budget,
    FrameworkMissing,
    HardwareReport,
    Measurement,
    best_seconds,
    best_seconds_sized,
    gigabytes_per_s,
    matmul_tflops,
)

__all__ = ["jax_report"]

_BACKENDS = {"cpu": "cpu", "cuda": "gpu", "tpu": "tpu"}
_KINDS = {backend: kind for kind, backend in _BACKENDS.items()}
_UNSUPPORTED = (RuntimeError, NotImplementedError, TypeError, ValueError, KeyError)
"""What JAX raises (XlaRuntimeError is a RuntimeError) for a dtype or op a device lacks."""


def jax_report(device: str = "auto", quick: bool = False, dtypes: Sequence[str] | None = None) -> HardwareReport:
    """Measure bandwidth and matmuls on `device` (`auto`: JAX's default backend)."""
    # Measure, do not reserve: by default JAX grabs most of a GPU's memory when it starts.
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    try:
        jax = importlib.import_module("jax")
    except ImportError as exc:
        raise FrameworkMissing("jax is not installed") from exc
    backend = jax.default_backend() if device == "auto" else _BACKENDS[device]
    try:
        target = jax.devices(backend)[0]
    except RuntimeError as exc:
        raise FrameworkMissing(f"jax sees no {backend} device: {exc}") from exc
    kind = _KINDS.get(backend, backend)
    budget = BUDGETS[(kind, quick)]
    with jax.default_device(target):
        measurements = _bandwidth(jax, budget)
        for dtype in dtypes or DTYPES_BY_DEVICE[kind]:
            measurements.append(_matmul(jax, dtype, budget))
    return HardwareReport(framework="jax", device=kind, device_name=str(target.device_kind), measurements=measurements)


def _sync(result: object) -> None:
    getattr(result, "block_until_ready")()  # noqa: B009 - the result is any jax.Array


def _bandwidth(jax: Any, budget: Budget) -> list[Measurement]:
    jnp = jax.numpy
    source = jnp.ones(budget.bandwidth_bytes // 4, dtype=jnp.float32)
    add_one = jax.jit(lambda x: x + 1.0)
    total = jax.jit(jnp.sum)
    size = f"{budget.bandwidth_bytes / 2**20:.0f} MiB fp32"
    patterns: list[tuple[str, Callable[[], object], int]] = [
        ("copy", lambda: add_one(source), 2 * budget.bandwidth_bytes),
        ("read", lambda: total(source), budget.bandwidth_bytes),
    ]
    return [
        Measurement("bandwidth", name, gigabytes_per_s(moved, best_seconds(call, _sync, budget.seconds)), "GB/s", size)
        for name, call, moved in patterns
    ]


def _matmul(jax: Any, dtype: str, budget: Budget) -> Measurement:
    unit = "TOPS" if dtype == "int8" else "TFLOP/s"
    try:
        n, seconds = best_seconds_sized(lambda size: _matmul_call(jax, dtype, size), _sync, budget)
    except _UNSUPPORTED as exc:
        return Measurement("matmul", dtype, None, unit, f"not measured: {type(exc).__name__}: {str(exc)[:160]}")
    return Measurement("matmul", dtype, matmul_tflops(n, seconds), unit, f"{n}x{n}x{n}")


def _matmul_call(jax: Any, dtype: str, n: int) -> Callable[[], object]:
    jnp = jax.numpy
    key_a, key_b = jax.random.split(jax.random.key(0))
    if dtype == "int8":
        a = jax.random.randint(key_a, (n, n), -8, 8, dtype=jnp.int8)
        b = jax.random.randint(key_b, (n, n), -8, 8, dtype=jnp.int8)
        accumulate = jnp.int32
    else:
        inputs = {"bf16": jnp.bfloat16, "fp16": jnp.float16, "fp32": jnp.float32, "fp8": jnp.float8_e4m3fn}[dtype]
        a = jax.random.normal(key_a, (n, n), dtype=jnp.float32).astype(inputs)
        b = jax.random.normal(key_b, (n, n), dtype=jnp.float32).astype(inputs)
        accumulate = jnp.bfloat16 if dtype == "fp8" else None
    dot = jax.jit(lambda x, y: jax.lax.dot(x, y, preferred_element_type=accumulate))
    return lambda: dot(a, b)
