"""The accelerator catalog: what each kind of hardware can do and what an instance of it costs.

Prices are on-demand list prices per instance-hour. Users override any entry (or add their own)
in the config's `accelerators` section; the catalog is only the starting point.
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
    """`gpu`, `tpu` or `cpu`."""
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


CATALOG: dict[str, Accelerator] = {
    "nvidia-h100-80gb": Accelerator(
        kind="gpu",
        memory_gib=80,
        bandwidth_gbs=3350,
        peak_tflops={"bf16": 989, "fp8": 1979, "int8": 1979},
        price_per_hour=3.90,
        source="NVIDIA H100 SXM datasheet; price: typical cloud on-demand per GPU, 2026-11",
    ),
    "nvidia-a100-80gb": Accelerator(
        kind="gpu",
        memory_gib=80,
        bandwidth_gbs=2039,
        peak_tflops={"bf16": 312, "int8": 624},
        price_per_hour=2.50,
        source="NVIDIA A100 SXM datasheet; price: typical cloud on-demand per GPU, 2026-11",
    ),
    "nvidia-l4": Accelerator(
        kind="gpu",
        memory_gib=24,
        bandwidth_gbs=300,
        peak_tflops={"bf16": 121, "fp8": 242, "int8": 242},
        price_per_hour=0.80,
        source="NVIDIA L4 datasheet; price: typical cloud on-demand per GPU, 2026-11",
    ),
    "tpu-v5e": Accelerator(
        kind="tpu",
        memory_gib=16,
        bandwidth_gbs=819,
        peak_tflops={"bf16": 197, "int8": 394},
        price_per_hour=1.20,
        source="Google Cloud TPU v5e docs; on-demand per chip-hour, 2026-11",
    ),
    "cpu-2c": Accelerator(
        kind="cpu",
        memory_gib=8,
        bandwidth_gbs=20,
        peak_tflops={"bf16": 0.2, "fp32": 0.1},
        price_per_hour=0.10,
        source="2 vCPU general-purpose VM, typical cloud on-demand, 2026-11",
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
