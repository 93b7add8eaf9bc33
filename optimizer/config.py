"""Config sections owned by the optimizer: each model's latency objectives and quality budget."""

from __future__ import annotations

from typing import Annotated

import msgspec
from msgspec import Meta

__all__ = ["ModelConfig", "SLOConfig"]


class SLOConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Latency objectives a model's traffic must keep, as 95th percentiles."""

    ttft_p95_ms: Annotated[float, Meta(gt=0)] = 1000.0
    """Time to first token."""
    tpot_p95_ms: Annotated[float, Meta(gt=0)] = 100.0
    """Time per output token after the first."""


class ModelConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A model name clients can ask for."""

    name: Annotated[str, Meta(min_length=1)]
    slo: SLOConfig = SLOConfig()
    max_quality_loss: Annotated[float, Meta(ge=0)] = 0.05
    """Allowed relative perplexity increase of a quantized variant over its reference."""
