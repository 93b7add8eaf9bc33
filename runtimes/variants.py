"""Variant manifests: what a checkpoint is (scheme, size) and what it costs in quality.

`thrifty quantize` writes `variant.json` next to the checkpoint it makes; `thrifty eval` adds
the measured quality. The quality gate reads it: a pool whose variant lost more quality than
its model's `max_quality_loss` allows gets no traffic.
"""

from __future__ import annotations

import datetime
from pathlib import Path
from typing import Annotated

import msgspec
from msgspec import Meta

__all__ = [
    "MANIFEST_NAME",
    "WEIGHT_SUFFIXES",
    "Quality",
    "VariantManifest",
    "now_iso",
    "read_manifest",
    "weight_bytes",
    "write_manifest",
]

MANIFEST_NAME = "variant.json"
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")


class Quality(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A variant measured against its reference on the same held-out text, through the engine."""

    perplexity: Annotated[float, Meta(gt=0)]
    reference_perplexity: Annotated[float, Meta(gt=0)]
    kl_divergence: Annotated[float, Meta(ge=0)]
    """Mean per-token KL(reference || variant), in nats, over the positions evaluated."""
    tokens: Annotated[int, Meta(ge=1)]
    """Prompt tokens scored."""
    method: str
    """How it was measured, e.g. `vllm prompt_logprobs top-20`."""
    measured_at: str
    """ISO 8601 UTC."""

    @property
    def loss(self) -> float:
        """Relative perplexity increase over the reference: what `max_quality_loss` bounds."""
        return self.perplexity / self.reference_perplexity - 1.0


class VariantManifest(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    scheme: str
    """`bf16` for a reference, else `int8-w8a8`, `int4-w4a16`, `fp8-block`, ..."""
    reference: str
    """The checkpoint this variant was made from (path or hub id); itself for a reference."""
    size_bytes: Annotated[int, Meta(ge=0)]
    reference_size_bytes: Annotated[int, Meta(ge=0)]
    created_at: str
    method: str = ""
    """How it was made, e.g. `llmcompressor GPTQ, 128 calibration samples`."""
    quality: Quality | None = None
    """None until `thrifty eval` has measured it."""


def now_iso() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")


def read_manifest(checkpoint: str | Path) -> VariantManifest | None:
    """The manifest next to a local checkpoint, or None when there is none (a hub id, a plain model)."""
    path = Path(checkpoint) / MANIFEST_NAME
    if not path.is_file():
        return None
    return msgspec.json.decode(path.read_bytes(), type=VariantManifest)


def write_manifest(checkpoint: str | Path, manifest: VariantManifest) -> Path:
    path = Path(checkpoint) / MANIFEST_NAME
    path.write_bytes(msgspec.json.format(msgspec.json.encode(manifest)) + b"\n")
    return path


def weight_bytes(checkpoint: Path) -> int:
    """Bytes of the weight files of a checkpoint directory: what a variant saves or costs."""
    return sum(p.stat().st_size for p in checkpoint.iterdir() if p.is_file() and p.name.endswith(WEIGHT_SUFFIXES))
