"""The hidden truth: how fast each pool's engine really is, which the optimizer must learn from traces.

The optimizer sees only catalog peaks (its roofline prior) and the request records; the simulator
runs every pool at efficiencies the optimizer is never told. Defaults vary by accelerator kind
(mature GPU kernels reach more of their peaks than TPU or CPU serving stacks) and by variant
(quantized kernels lose some bandwidth and compute to scales and dequantization); a scenario
overrides them per pool. The per-token coefficients come from `ModelShape`, the compute dtype
from `COMPUTE_DTYPE`, so the simulator and the roofline share the model's arithmetic.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from optimizer.simulate.engine import EngineSpec
from optimizer.simulate.scenario import EngineSettings, PoolScenario, TruthSpec, usable_memory_bytes
from runtimes.accelerators import Accelerator
from runtimes.profile.roofline import COMPUTE_DTYPE, ModelShape

__all__ = ["KIND_EFFICIENCY", "VARIANT_FACTOR", "Efficiency", "compute_dtype", "engine_spec", "true_efficiency"]


@dataclass(frozen=True)
class Efficiency:
    bandwidth: float
    """Share of the catalog memory bandwidth reached."""
    compute: float
    """Share of the catalog peak FLOP/s reached."""
    step_overhead_s: float


KIND_EFFICIENCY = {
    "gpu": Efficiency(bandwidth=0.76, compute=0.55, step_overhead_s=0.0025),
    "tpu": Efficiency(bandwidth=0.66, compute=0.48, step_overhead_s=0.004),
    "inferentia": Efficiency(bandwidth=0.6, compute=0.42, step_overhead_s=0.005),
    "cpu": Efficiency(bandwidth=0.58, compute=0.36, step_overhead_s=0.009),
}
"""Per accelerator kind, for bf16 weights."""

VARIANT_FACTOR = {
    "bf16": (1.0, 1.0),
    "fp16": (1.0, 1.0),
    "fp32": (1.0, 1.0),
    "fp8": (0.95, 0.88),
    "int8": (0.93, 0.85),
    "int4": (0.84, 0.72),
}
"""(bandwidth, compute) multipliers of each variant: scales, dequantization and less tuned kernels."""


def true_efficiency(accelerator: Accelerator, variant: str, override: TruthSpec) -> Efficiency:
    """The pool's true efficiencies: the scenario's where it gives them, else kind x variant defaults."""
    base = KIND_EFFICIENCY.get(accelerator.kind, KIND_EFFICIENCY["gpu"])
    bandwidth_factor, compute_factor = VARIANT_FACTOR[variant]
    return Efficiency(
        bandwidth=override.bandwidth_efficiency or base.bandwidth * bandwidth_factor,
        compute=override.compute_efficiency or base.compute * compute_factor,
        step_overhead_s=(
            override.step_overhead_ms / 1000 if override.step_overhead_ms is not None else base.step_overhead_s
        ),
    )


def compute_dtype(accelerator: Accelerator, variant: str) -> str:
    """The dtype the matmuls run in: the variant's, or bf16 where the accelerator has no units for it."""
    dtype = COMPUTE_DTYPE[variant]
    return dtype if dtype in accelerator.peak_tflops else "bf16"


def engine_spec(shape: ModelShape, accelerator: Accelerator, pool: PoolScenario) -> EngineSpec:
    """The engine of one instance of `pool`, at the pool's true efficiencies and vLLM's limits."""
    efficiency = true_efficiency(accelerator, pool.variant, pool.truth)
    weights = shape.weights_at(pool.variant)
    kv = shape.kv_bytes_per_token()
    settings = pool.engine
    usable = usable_memory_bytes(accelerator.memory_gib, settings)
    if weights >= usable:
        raise ValueError(
            f"pool {pool.name!r}: {shape.name} at {pool.variant} does not fit {accelerator.memory_gib} GiB"
        )
    peak = accelerator.peak_tflops.get(compute_dtype(accelerator, pool.variant))
    if peak is None:
        raise ValueError(f"pool {pool.name!r}: the accelerator has no bf16 peak to compute {pool.variant} in")
    seqs, budget = _limits(accelerator, settings)
    return EngineSpec(
        weight_bytes=weights,
        kv_bytes_per_token=kv,
        flops_per_token=float(shape.flops_per_token(0)),
        attention_flops=float(shape.flops_per_token(1) - shape.flops_per_token(0)),
        bandwidth=accelerator.bandwidth_gbs * 1e9 * efficiency.bandwidth,
        compute=peak * 1e12 * efficiency.compute,
        step_overhead_s=efficiency.step_overhead_s,
        kv_capacity_tokens=math.floor((usable - weights) / kv),
        max_num_seqs=seqs,
        max_num_batched_tokens=budget,
    )


def _limits(accelerator: Accelerator, settings: EngineSettings) -> tuple[int, int]:
    """vLLM's server defaults where the scenario sets none: 256 sequences; 8192 tokens a step on big GPUs."""
    seqs = settings.max_num_seqs or 256
    big_gpu = accelerator.kind == "gpu" and accelerator.memory_gib >= 70
    budget = settings.max_num_batched_tokens or (8192 if big_gpu else 2048)
    return seqs, max(budget, seqs + 1)
