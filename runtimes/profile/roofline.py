"""The decode roofline: tokens per second one instance can reach, from bandwidth, compute and model size.

Standard library only. One decode step of a batch of B sequences, each with C tokens of context:

    bytes per step  = W + B * C * kv
    flops per step  = B * (2 * P + 4 * layers * C * heads * head_dim)

W is the weight bytes at the variant's precision; kv the KV-cache bytes per token,
2 (K and V) * layers * kv_heads * head_dim * bytes per element; P the parameters (a multiply and
an add each); the attention term is the scores and the weighted sum over C positions.
    step time       = max(bytes / bandwidth, flops / matmul throughput)
    tokens/s        = B / step time

At batch 1 decode is bandwidth-bound: about bandwidth / (W + C * kv). Growing the batch shares
the weight read, until compute takes longer than memory: the knee, where

    B* = (W / bandwidth) / (F_token / throughput - C * kv / bandwidth)      F_token = 2 P + 4 layers C heads head_dim

which does not exist when the KV-cache read per token outgrows its compute (then the batch
never becomes compute-bound). The batch is also bounded by memory: W + B * C * kv <= memory.
This is an upper bound: it leaves out kernel efficiency, scheduling and sampling overheads,
prefill work, and quantization scales (a few percent of W); it reads all weights once per step.
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

__all__ = [
    "BYTES_PER_PARAM",
    "COMPUTE_DTYPE",
    "PRESETS",
    "DecodePoint",
    "ModelShape",
    "Roofline",
    "decode_point",
    "decode_roofline",
    "read_checkpoint",
]

BYTES_PER_PARAM = {"fp32": 4.0, "bf16": 2.0, "fp16": 2.0, "fp8": 1.0, "int8": 1.0, "int4": 0.5}
"""Weight bytes per parameter at each variant's precision."""

COMPUTE_DTYPE = {"fp32": "fp32", "bf16": "bf16", "fp16": "bf16", "fp8": "fp8", "int8": "int8", "int4": "bf16"}
"""The matmul dtype a variant computes in: W8A8 in int8, FP8 in fp8, W4A16 dequantizes to bf16."""

_SAFETENSORS_BYTES = {"F64": 8, "F32": 4, "BF16": 2, "F16": 2, "F8_E4M3": 1, "F8_E5M2": 1, "I64": 8, "I32": 4,
                      "I16": 2, "I8": 1, "U8": 1, "BOOL": 1}  # fmt: skip


@dataclass(frozen=True)
class ModelShape:
    name: str
    params: int
    weight_bytes: int
    """As stored (checkpoint), or params at the preset's native precision."""
    layers: int
    heads: int
    kv_heads: int
    head_dim: int

    def weights_at(self, variant: str | None) -> float:
        """Weight bytes read per step: as stored, or the parameters at `variant`'s precision."""
        return float(self.weight_bytes) if variant is None else self.params * BYTES_PER_PARAM[variant]

    def kv_bytes_per_token(self, kv_dtype_bytes: float = 2.0) -> float:
        return 2 * self.layers * self.kv_heads * self.head_dim * kv_dtype_bytes

    def flops_per_token(self, context: int) -> float:
        return 2.0 * self.params + 4.0 * self.layers * context * self.heads * self.head_dim


PRESETS = {
    "llama-3.1-8b": ModelShape(
        name="llama-3.1-8b", params=8_030_261_248, weight_bytes=16_060_522_496, layers=32, heads=32, kv_heads=8,
        head_dim=128,
    ),
    "llama-3.1-70b": ModelShape(
        name="llama-3.1-70b", params=70_553_706_496, weight_bytes=141_107_412_992, layers=80, heads=64, kv_heads=8,
        head_dim=128,
    ),
}  # fmt: skip
"""Published shapes (config.json of the Hugging Face checkpoints), stored in bf16."""


@dataclass(frozen=True)
class DecodePoint:
    batch: int
    tokens_per_s: float
    """Output tokens per second of the whole batch (one instance)."""
    step_ms: float
    bound: Literal["bandwidth", "compute"]


@dataclass(frozen=True)
class Roofline:
    model: str
    variant: str
    compute_dtype: str
    weight_bytes: float
    kv_bytes_per_token: float
    context_tokens: int
    bandwidth_gbs: float
    tflops: float
    batch1: DecodePoint
    knee: DecodePoint | None
    """The first batch at which compute bounds the step; None if it never does (or not within memory)."""
    max_batch: int | None
    """The largest batch whose KV cache fits next to the weights; None without a memory size."""
    at_max_batch: DecodePoint | None


def read_checkpoint(path: str | Path) -> ModelShape:
    """The shape from `config.json`, and parameters and bytes from the safetensors headers (exact, no torch)."""
    directory = Path(path)
    config = json.loads((directory / "config.json").read_text())
    params = stored = 0
    for file in sorted(directory.glob("*.safetensors")):
        for numel, nbytes in _tensor_sizes(file):
            params += numel
            stored += nbytes
    if not params:
        raise ValueError(f"{directory}: no safetensors weights")
    heads = int(config["num_attention_heads"])
    return ModelShape(
        name=directory.name,
        params=params,
        weight_bytes=stored,
        layers=int(config["num_hidden_layers"]),
        heads=heads,
        kv_heads=int(config.get("num_key_value_heads", heads)),
        head_dim=int(config.get("head_dim") or config["hidden_size"] // heads),
    )


def _tensor_sizes(file: Path) -> list[tuple[int, int]]:
    """(elements, bytes) of each tensor, from the header: 8-byte little-endian length, then JSON."""
    with file.open("rb") as handle:
        (length,) = struct.unpack("<Q", handle.read(8))
        header = json.loads(handle.read(length))
    sizes = []
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        start, end = entry["data_offsets"]
        sizes.append((math.prod(entry["shape"]), end - start))
    return sizes


def decode_point(
    shape: ModelShape, weight_bytes: float, batch: int, context: int, bandwidth_gbs: float, tflops: float,
    kv_dtype_bytes: float = 2.0,
) -> DecodePoint:  # fmt: skip
    """One decode step of `batch` sequences at `context` tokens each (see the module's formulas)."""
    memory_s = (weight_bytes + batch * context * shape.kv_bytes_per_token(kv_dtype_bytes)) / (bandwidth_gbs * 1e9)
    compute_s = batch * shape.flops_per_token(context) / (tflops * 1e12)
    step_s = max(memory_s, compute_s)
    bound: Literal["bandwidth", "compute"] = "compute" if compute_s > memory_s else "bandwidth"
    return DecodePoint(batch=batch, tokens_per_s=batch / step_s, step_ms=step_s * 1000, bound=bound)


def decode_roofline(
    shape: ModelShape,
    *,
    bandwidth_gbs: float,
    tflops_by_dtype: dict[str, float],
    variant: str | None = None,
    context_tokens: int = 1024,
    kv_dtype_bytes: float = 2.0,
    memory_gib: float | None = None,
) -> Roofline:
    """Batch 1, the knee where compute starts to bound, and the largest batch that fits in memory.

    `variant` (`bf16`, `fp8`, `int8`, `int4`, ...) sets the weight bytes and the matmul dtype
    (bf16 when `tflops_by_dtype` has no number for it); None keeps the checkpoint's stored bytes
    and computes in bf16.
    """
    compute_dtype = COMPUTE_DTYPE[variant or "bf16"]
    if compute_dtype not in tflops_by_dtype:  # e.g. no fp8 units: the matmuls run in bf16
        compute_dtype = "bf16"
    tflops = tflops_by_dtype[compute_dtype]
    weights = shape.weights_at(variant)
    kv = shape.kv_bytes_per_token(kv_dtype_bytes)

    def point(batch: int) -> DecodePoint:
        return decode_point(shape, weights, batch, context_tokens, bandwidth_gbs, tflops, kv_dtype_bytes)

    max_batch = None
    if memory_gib is not None:
        max_batch = max(0, math.floor((memory_gib * 2**30 - weights) / (context_tokens * kv)))
    knee_batch = _knee(weights, kv, shape.flops_per_token(context_tokens), context_tokens, bandwidth_gbs, tflops)
    if knee_batch is not None and max_batch is not None and knee_batch > max_batch:
        knee_batch = None
    return Roofline(
        model=shape.name,
        variant=variant or "as stored",
        compute_dtype=compute_dtype,
        weight_bytes=weights,
        kv_bytes_per_token=kv,
        context_tokens=context_tokens,
        bandwidth_gbs=bandwidth_gbs,
        tflops=tflops,
        batch1=point(1),
        knee=point(knee_batch) if knee_batch is not None else None,
        max_batch=max_batch,
        at_max_batch=point(max_batch) if max_batch else None,
    )


def _knee(
    weights: float, kv: float, flops_per_token: float, context: int, bandwidth_gbs: float, tflops: float
) -> int | None:
    """The smallest whole batch at which the step is compute-bound, if any."""
    per_token_margin = flops_per_token / (tflops * 1e12) - context * kv / (bandwidth_gbs * 1e9)
    if per_token_margin <= 0:
        return None
    return max(1, math.ceil(weights / (bandwidth_gbs * 1e9) / per_token_margin))
