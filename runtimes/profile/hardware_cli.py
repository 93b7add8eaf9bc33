"""`thrifty profile hardware`: microbenchmarks against the catalog's peaks, and the decode roofline.

Standard library only (plus torch or JAX, imported when measured); the catalog needs msgspec,
and without it the numbers are printed without their share of the peaks.

    python -m runtimes.profile hardware --device cpu --checkpoint runtimes/model/tiny-py
    python -m runtimes.profile hardware --device cuda --preset llama-3.1-8b --variant fp8 --json hw.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

from runtimes.profile.microbench import FrameworkMissing, HardwareReport, Peaks, format_report, match_accelerator
from runtimes.profile.roofline import (
    BYTES_PER_PARAM,
    PRESETS,
    DecodePoint,
    ModelShape,
    Roofline,
    decode_roofline,
    read_checkpoint,
)

__all__ = [
    "add_hardware_arguments",
    "catalog_peaks",
    "derive_rooflines",
    "format_roofline",
    "main",
    "measure",
    "run_hardware",
]


def add_hardware_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", choices=["auto", "cpu", "cuda", "tpu"], default="auto")
    parser.add_argument("--framework", choices=["all", "torch", "jax"], default="all",
                        help="all: torch, and JAX when it is installed")  # fmt: skip
    parser.add_argument("--accelerator", help="catalog entry to compare with (default: matched by device name)")
    parser.add_argument("--quick", action="store_true", help="small sizes and budgets: checks that it runs")
    parser.add_argument("--json", type=Path, help="write the measurements and rooflines here")
    model = parser.add_argument_group("decode roofline (one of)")
    model.add_argument("--checkpoint", type=Path, help="a Hugging Face checkpoint dir (config.json + safetensors)")
    model.add_argument("--preset", choices=sorted(PRESETS), help="a published model shape")
    model.add_argument("--params", type=float, help="parameter count (no KV-cache term without a shape)")
    parser.add_argument("--bytes-per-param", type=float, default=2.0, help="with --params (default 2: bf16)")
    parser.add_argument("--variant", choices=sorted(BYTES_PER_PARAM), help="precision served (default: as stored)")
    parser.add_argument("--context", type=int, default=1024, help="tokens of context per sequence (KV-cache term)")
    parser.add_argument("--kv-bytes", type=float, default=2.0, help="bytes per KV-cache element (1 for fp8)")


def run_hardware(args: argparse.Namespace) -> int:
    """Measure, print against the catalog, derive the rooflines; 2 when an asked-for framework is missing."""
    reports = []
    for framework in ("torch", "jax") if args.framework == "all" else (args.framework,):
        try:
            reports.append(measure(framework, args.device, args.quick))
        except FrameworkMissing as exc:
            print(f"{framework}: not measured: {exc}", file=sys.stderr)
            if args.framework != "all":
                return 2
    if not reports:
        return 2
    peaks, memory_gib, catalog_note = catalog_peaks(args.accelerator or match_accelerator(reports[0].device_name))
    for report in reports:
        print(format_report(report, peaks), end="\n\n")
    if catalog_note:
        print(catalog_note)
    shape = _model_shape(args)
    rooflines = []
    if shape is not None:
        rooflines = derive_rooflines(
            shape, reports[0], peaks, variant=args.variant, context_tokens=args.context, kv_dtype_bytes=args.kv_bytes,
            memory_gib=memory_gib,
        )  # fmt: skip
    for basis, roofline in rooflines:
        print(format_roofline(roofline, basis))
    if args.json is not None:
        document = {
            "reports": [dataclasses.asdict(report) for report in reports],
            "accelerator": peaks.name if peaks else None,
            "rooflines": [{"basis": basis, **dataclasses.asdict(roofline)} for basis, roofline in rooflines],
        }
        args.json.write_text(json.dumps(document, indent=2) + "\n")
    return 0


def measure(framework: str, device: str, quick: bool) -> HardwareReport:
    """One framework's report; raises FrameworkMissing when it (or the device) is not there."""
    if framework == "jax":
        from runtimes.profile.jax_bench import jax_report

        return jax_report(device, quick)
    from runtimes.profile.hardware import torch_report

    return torch_report(device, quick)


def format_roofline(roofline: Roofline, basis: str) -> str:
    lines = [
        f"decode roofline ({basis}): {roofline.model} {roofline.variant}, {roofline.weight_bytes / 1e9:.3g} GB of "
        f"weights, KV {roofline.kv_bytes_per_token / 1e3:.3g} kB/token, context {roofline.context_tokens}, "
        f"{roofline.bandwidth_gbs:,.1f} GB/s, {roofline.tflops:,.2f} {roofline.compute_dtype} TFLOP/s",
        f"  batch 1: {_point(roofline.batch1)}",
    ]
    if roofline.knee is not None:
        lines.append(f"  compute-bound from batch {roofline.knee.batch}: {_point(roofline.knee)}")
    else:
        lines.append("  no batch that fits in memory is compute-bound")
    if roofline.at_max_batch is not None:
        lines.append(f"  largest batch in memory ({roofline.max_batch}): {_point(roofline.at_max_batch)}")
    elif roofline.max_batch == 0:
        lines.append("  the weights do not fit in the device's memory")
    return "\n".join(lines)


def _point(point: DecodePoint) -> str:
    rate = f"{point.tokens_per_s:,.0f}" if point.tokens_per_s >= 100 else f"{point.tokens_per_s:.3g}"
    return f"{rate} tokens/s ({point.step_ms:,.3g} ms/step, {point.bound}-bound)"


def catalog_peaks(name: str | None) -> tuple[Peaks | None, float | None, str]:
    """The catalog entry's peaks and memory, or why there are none."""
    if name is None:
        return None, None, "no catalog entry matches this device: pass --accelerator NAME to compare"
    try:
        from runtimes.accelerators import CATALOG
    except ImportError as exc:  # msgspec missing on a bare accelerator host
        return None, None, f"catalog unavailable ({exc}): numbers printed without their share of the peaks"
    entry = CATALOG.get(name)
    if entry is None:
        return None, None, f"{name!r} is not in the catalog (known: {', '.join(sorted(CATALOG))})"
    return Peaks(name, entry.bandwidth_gbs, dict(entry.peak_tflops)), entry.memory_gib, ""


def _model_shape(args: argparse.Namespace) -> ModelShape | None:
    if args.checkpoint is not None:
        return read_checkpoint(args.checkpoint)
    if args.preset is not None:
        return PRESETS[args.preset]
    if args.params is not None:
        params = int(args.params)
        weight_bytes = int(params * args.bytes_per_param)
        return ModelShape(f"{params:.3g} params", params, weight_bytes, layers=0, heads=0, kv_heads=0, head_dim=0)
    return None


def derive_rooflines(
    shape: ModelShape,
    report: HardwareReport,
    peaks: Peaks | None,
    *,
    variant: str | None,
    context_tokens: int,
    kv_dtype_bytes: float,
    memory_gib: float | None,
) -> list[tuple[str, Roofline]]:
    """From the achieved numbers, and from the datasheet's when the catalog knows the device; with their basis."""
    measured = {m.name: m.value for m in report.measurements if m.kind == "matmul" and m.value is not None}
    bases: list[tuple[str, float | None, dict[str, float]]] = [
        (f"achieved, {report.framework} on {report.device}", report.bandwidth_gbs, measured)
    ]
    if peaks is not None:
        bases.append((f"datasheet peaks of {peaks.name}", peaks.bandwidth_gbs, peaks.tflops))
    return [
        (basis, decode_roofline(
            shape, bandwidth_gbs=bandwidth, tflops_by_dtype=tflops, variant=variant, context_tokens=context_tokens,
            kv_dtype_bytes=kv_dtype_bytes, memory_gib=memory_gib,
        ))
        for basis, bandwidth, tflops in bases
        if bandwidth is not None and "bf16" in tflops
    ]  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m runtimes.profile.hardware_cli", description=__doc__.split("\n")[0])
    add_hardware_arguments(parser)
    return run_hardware(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
