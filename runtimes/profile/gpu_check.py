"""The accelerator check: microbenchmarks (bandwidth; bf16, fp8, int8 matmul) and decode rooflines.

One script for a lent accelerator host that has torch (and perhaps JAX) and none of this
project's dependencies (no vLLM, msgspec or network needed):

    python -m runtimes.profile.gpu_check                     # CUDA; JSON to $OUT (or .)/gpu_check.json
    python -m runtimes.profile.gpu_check --device tpu --accelerator tpu-v6e

It measures once per framework (torch, then JAX when installed: well under a minute each on an
H100, five at most by construction of the budgets) and derives the rooflines of llama-3.1-8b at
bf16, fp8 and int8 and of the bundled tiny-py checkpoint, from the achieved numbers and from the
catalog's peaks (when msgspec is there to read the catalog).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from pathlib import Path

from runtimes.profile.hardware_cli import catalog_peaks, derive_rooflines, format_roofline, measure
from runtimes.profile.microbench import FrameworkMissing, HardwareReport, format_report, match_accelerator
from runtimes.profile.roofline import PRESETS, ModelShape, read_checkpoint

__all__ = ["main"]

_TINY_PY = Path(__file__).parents[1] / "model" / "tiny-py"
_VARIANTS = {"llama-3.1-8b": ("bf16", "fp8", "int8"), "tiny-py": (None,)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m runtimes.profile.gpu_check", description=__doc__.split("\n")[0])
    parser.add_argument("--device", choices=["cuda", "tpu", "cpu"], default="cuda")
    parser.add_argument("--accelerator", help="catalog entry to compare with (default: matched by device name)")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json", type=Path, default=Path(os.environ.get("OUT", ".")) / "gpu_check.json")
    args = parser.parse_args(argv)

    started = time.monotonic()
    reports = _measure_all(args.device, args.quick)
    if not reports:
        return 2
    peaks, memory_gib, catalog_note = catalog_peaks(args.accelerator or match_accelerator(reports[0].device_name))
    for report in reports:
        print(format_report(report, peaks), end="\n\n")
    if catalog_note:
        print(catalog_note)
    rooflines = []
    for name, shape in _models().items():
        for variant in _VARIANTS[name]:
            for basis, roofline in derive_rooflines(
                shape, reports[0], peaks, variant=variant, context_tokens=1024, kv_dtype_bytes=2.0,
                memory_gib=memory_gib,
            ):  # fmt: skip
                print(format_roofline(roofline, basis))
                rooflines.append({"basis": basis, **dataclasses.asdict(roofline)})
    elapsed = time.monotonic() - started
    print(f"\ncheck took {elapsed:.0f} s; JSON: {args.json}")
    document = {
        "elapsed_s": elapsed,
        "accelerator": peaks.name if peaks else None,
        "reports": [dataclasses.asdict(report) for report in reports],
        "rooflines": rooflines,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(document, indent=2) + "\n")
    return 0


def _measure_all(device: str, quick: bool) -> list[HardwareReport]:
    reports = []
    for framework in ("torch", "jax"):
        try:
            reports.append(measure(framework, device, quick))
        except FrameworkMissing as exc:
            print(f"{framework}: not measured: {exc}", file=sys.stderr)
    return reports


def _models() -> dict[str, ModelShape]:
    models = {"llama-3.1-8b": PRESETS["llama-3.1-8b"]}
    if _TINY_PY.is_dir():
        models["tiny-py"] = read_checkpoint(_TINY_PY)
    return models


if __name__ == "__main__":
    sys.exit(main())
