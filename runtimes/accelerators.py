"""The accelerator catalog: what each kind of hardware can do and what an instance of it costs.

Prices are on-demand list prices per instance-hour; an instance is one GPU, one TPU chip, one
Inferentia2 chip or one CPU server. Peaks are dense (datasheets also print 2x "with sparsity").
Every entry names its sources and their date; estimates say so. Users override any entry (or add
their own) in the config's `accelerators` section; the catalog is only the starting point.
"""

from __future__ import annotations

from typing import Annotated

import msgspec
from msgspec import Meta

__all__ = ["CATALOG", "Accelerator", "AcceleratorOverride", "resolve_catalog"]

PositiveFloat = Annotated[float, Meta(gt=0)]


class Accelerator(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One kind of accelerator (or CPU server) as one instance of a pool sees it."""

    kind: str
    """`gpu`, `tpu`, `inferentia` or `cpu`."""
    memory_gib: PositiveFloat
    """Device memory (host memory for CPU servers) available to one instance."""
    bandwidth_gbs: PositiveFloat
    """Peak memory bandwidth in GB/s: bounds decode speed."""
    peak_tflops: dict[str, PositiveFloat]
    """Dense peak TFLOP/s (TOPS for int8) per dtype: bounds prefill speed."""
    price_per_hour: Annotated[float, Meta(ge=0)]
    """On-demand price of one instance-hour in USD."""
    source: str = ""
    """Where the numbers come from, with a date."""


class AcceleratorOverride(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A config entry that changes some fields of a catalog accelerator or defines a new one."""

    kind: str | None = None
    memory_gib: PositiveFloat | None = None
    bandwidth_gbs: PositiveFloat | None = None
    peak_tflops: dict[str, PositiveFloat] | None = None
    price_per_hour: Annotated[float, Meta(ge=0)] | None = None
    source: str | None = None


_GPU_PRICE = "typical cloud on-demand price per GPU-hour (estimate)"
_DENSE = "dense peaks (no sparsity)"

CATALOG: dict[str, Accelerator] = {
    # NVIDIA GPUs: one GPU per instance. Peaks are dense; datasheets also print 2x "with sparsity".
    "nvidia-h100-80gb": Accelerator(
        kind="gpu",
        memory_gib=80,
        bandwidth_gbs=3350,
        peak_tflops={"bf16": 989, "fp8": 1979, "int8": 1979},
        price_per_hour=3.90,
        source=f"NVIDIA H100 SXM5 datasheet, {_DENSE}; price: {_GPU_PRICE}; 2026-11",
    ),
    "nvidia-h200-141gb": Accelerator(
        kind="gpu",
        memory_gib=141,
        bandwidth_gbs=4800,
        peak_tflops={"bf16": 989, "fp8": 1979, "int8": 1979},
        price_per_hour=4.50,
        source=f"NVIDIA H200 SXM datasheet, {_DENSE}; price: {_GPU_PRICE}; 2026-11",
    ),
    "nvidia-a100-80gb": Accelerator(
        kind="gpu",
        memory_gib=80,
        bandwidth_gbs=2039,
        peak_tflops={"bf16": 312, "int8": 624},
        price_per_hour=2.50,
        source=f"NVIDIA A100 80GB SXM datasheet, {_DENSE}, no fp8; price: {_GPU_PRICE}; 2026-11",
    ),
    "nvidia-l40s": Accelerator(
        kind="gpu",
        memory_gib=48,
        bandwidth_gbs=864,
        peak_tflops={"bf16": 362, "fp8": 733, "int8": 733},
        price_per_hour=1.86,
        source=f"NVIDIA L40S datasheet, {_DENSE}; price: AWS g6e.xlarge on-demand, us-east-1 (1 GPU); 2026-11",
    ),
    "nvidia-l4": Accelerator(
        kind="gpu",
        memory_gib=24,
        bandwidth_gbs=300,
        peak_tflops={"bf16": 121, "fp8": 242, "int8": 242},
        price_per_hour=0.80,
        source=f"NVIDIA L4 datasheet, {_DENSE}; price: {_GPU_PRICE}; 2026-11",
    ),
    "nvidia-a10g": Accelerator(
        kind="gpu",
        memory_gib=24,
        bandwidth_gbs=600,
        peak_tflops={"bf16": 70, "int8": 140},
        price_per_hour=1.01,
        source=(
            "NVIDIA A10G (AWS variant of the A10; no NVIDIA datasheet: tensor peaks as commonly published, "
            "estimate), no fp8; price: AWS g5.xlarge on-demand, us-east-1 (1 GPU); 2026-11"
        ),
    ),
    # Google TPUs: one chip per instance, on-demand chip-hour prices (us-central regions). No fp8 MXU.
    "tpu-v5e": Accelerator(
        kind="tpu",
        memory_gib=16,
        bandwidth_gbs=819,
        peak_tflops={"bf16": 197, "int8": 394},
        price_per_hour=1.20,
        source="Google Cloud TPU v5e docs; price: Cloud TPU pricing, on-demand per chip-hour; 2026-11",
    ),
    "tpu-v5p": Accelerator(
        kind="tpu",
        memory_gib=95,
        bandwidth_gbs=2765,
        peak_tflops={"bf16": 459, "int8": 918},
        price_per_hour=4.20,
        source="Google Cloud TPU v5p docs; price: Cloud TPU pricing, on-demand per chip-hour; 2026-11",
    ),
    "tpu-v6e": Accelerator(
        kind="tpu",
        memory_gib=32,
        bandwidth_gbs=1640,
        peak_tflops={"bf16": 918, "int8": 1836},
        price_per_hour=2.70,
        source="Google Cloud TPU v6e (Trillium) docs; price: Cloud TPU pricing, on-demand per chip-hour; 2026-11",
    ),
    # AWS Inferentia2: one chip (two NeuronCore-v2) per instance.
    "aws-inferentia2": Accelerator(
        kind="inferentia",
        memory_gib=32,
        bandwidth_gbs=820,
        peak_tflops={"bf16": 190, "fp8": 190, "int8": 380},
        price_per_hour=0.76,
        source=(
            "AWS Neuron docs, Inferentia2 architecture: per chip (2 NeuronCore-v2), fp8 is cFP8; "
            "price: AWS inf2.xlarge on-demand, us-east-1 (1 chip); 2026-11"
        ),
    ),
    # CPU servers: host memory and bandwidth; bf16/int8 peaks are AMX (Sapphire Rapids class), fp32 AVX-512.
    "cpu-2c": Accelerator(
        kind="cpu",
        memory_gib=8,
        bandwidth_gbs=20,
        peak_tflops={"bf16": 4.1, "int8": 8.2, "fp32": 0.13},
        price_per_hour=0.10,
        source=(
            "2 vCPU (1 core) general-purpose VM; peaks: estimate, 1 core x 2.0 GHz x AMX 2048 bf16 / 4096 int8 "
            "and AVX-512 64 fp32 flop/cycle; bandwidth: estimate of one core's share; price: typical cloud "
            "on-demand (estimate); 2026-11"
        ),
    ),
    "cpu-32c": Accelerator(
        kind="cpu",
        memory_gib=128,
        bandwidth_gbs=100,
        peak_tflops={"bf16": 65.5, "int8": 131, "fp32": 2.05},
        price_per_hour=1.61,
        source=(
            "32 vCPU (16 cores) Sapphire Rapids VM, basis AWS m7i.8xlarge; peaks: estimate, 16 cores x 2.0 GHz "
            "x AMX/AVX-512 flop/cycle; bandwidth: estimate, 1/3 of a socket's 8 x DDR5-4800 (307 GB/s); "
            "price: AWS m7i.8xlarge on-demand, us-east-1; 2026-11"
        ),
    ),
    "cpu-64c": Accelerator(
        kind="cpu",
        memory_gib=256,
        bandwidth_gbs=200,
        peak_tflops={"bf16": 131, "int8": 262, "fp32": 4.1},
        price_per_hour=3.23,
        source=(
            "64 vCPU (32 cores) Sapphire Rapids VM, basis AWS m7i.16xlarge; peaks: estimate, 32 cores x 2.0 GHz "
            "x AMX/AVX-512 flop/cycle; bandwidth: estimate, 2/3 of a socket's 8 x DDR5-4800 (307 GB/s); "
            "price: AWS m7i.16xlarge on-demand, us-east-1; 2026-11"
        ),
    ),
}


def resolve_catalog(overrides: dict[str, AcceleratorOverride]) -> dict[str, Accelerator]:
    """The built-in catalog with the config's overrides applied; new names must be complete."""
    catalog = dict(CATALOG)
    for name, override in overrides.items():
        changes = {f: v for f in override.__struct_fields__ if (v := getattr(override, f)) is not None}
        base = catalog.get(name)
        if base is not None:
            catalog[name] = msgspec.structs.replace(base, **changes)
            continue
        missing = {"kind", "memory_gib", "bandwidth_gbs", "peak_tflops", "price_per_hour"} - changes.keys()
        if missing:
            raise ValueError(f"new accelerator {name!r} needs {', '.join(sorted(missing))}")
        catalog[name] = Accelerator(**changes)
    return catalog
