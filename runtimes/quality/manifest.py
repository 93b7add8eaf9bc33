"""The variant manifest after an evaluation: the measured quality added to what is known of the checkpoint."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import msgspec

from runtimes.config import resolve_weights
from runtimes.variants import Quality, VariantManifest, now_iso, read_manifest, weight_bytes

__all__ = ["manifest_with_quality", "scheme_of"]


_DTYPE_SCHEMES = {"bfloat16": "bf16", "float16": "fp16", "float32": "fp32"}


def manifest_with_quality(checkpoint: Path, reference: str, quality: Quality) -> VariantManifest:
    """The checkpoint's manifest with `quality` set; a new one when it has none.

    An existing manifest keeps every field it has (scheme, sizes, how it was made). A new one
    takes its scheme from the checkpoint's `config.json`.
    """
    existing = read_manifest(checkpoint)
    if existing is not None:
        return msgspec.structs.replace(existing, quality=quality)
    reference_dir = Path(resolve_weights(reference))
    return VariantManifest(
        scheme=scheme_of(checkpoint),
        reference=reference,
        size_bytes=weight_bytes(checkpoint),
        reference_size_bytes=weight_bytes(reference_dir) if reference_dir.is_dir() else 0,
        created_at=now_iso(),
        quality=quality,
    )


def scheme_of(checkpoint: Path) -> str:
    """`int8-w8a8`, `int4-w4a16`, `fp8-block`, ... from `quantization_config`, else the dtype (`bf16`)."""
    config = json.loads((checkpoint / "config.json").read_text())
    quantization = config.get("quantization_config")
    if quantization:
        return _quantized_scheme(quantization)
    dtype = config.get("dtype") or config.get("torch_dtype") or "float32"  # transformers' own default
    return _DTYPE_SCHEMES.get(dtype, dtype)


def _quantized_scheme(quantization: dict[str, Any]) -> str:
    method = str(quantization.get("quant_method", "unknown"))
    if method == "compressed-tensors":
        return _compressed_tensors_scheme(quantization)
    if method == "fp8":
        return "fp8-block" if quantization.get("weight_block_size") else "fp8"
    if method in {"gptq", "awq"} and "bits" in quantization:
        bits = quantization["bits"]
        return f"int{bits}-w{bits}a16"
    return method


def _compressed_tensors_scheme(quantization: dict[str, Any]) -> str:
    """The first config group's weights and input activations, e.g. `int8-w8a8` or `fp8-block`."""
    groups = list(quantization.get("config_groups", {}).values())
    if not groups or not groups[0].get("weights"):
        return "compressed-tensors"
    weights, activations = groups[0]["weights"], groups[0].get("input_activations")
    kind = "fp" if weights.get("type") == "float" else "int"
    bits = weights.get("num_bits")
    if weights.get("strategy") == "block":
        return f"{kind}{bits}-block"
    return f"{kind}{bits}-w{bits}a{activations.get('num_bits') if activations else 16}"
