"""The quality gate: a variant that lost more quality than its model allows gets no traffic."""

from __future__ import annotations

from runtimes.variants import VariantManifest

__all__ = ["gate_reason"]


def gate_reason(manifest: VariantManifest | None, max_quality_loss: float) -> str | None:
    """Why a pool serving this variant must get no traffic, or None when it may.

    A pool without a manifest serves a model as it is (a reference, or an external server); a
    variant never evaluated may serve, and the gateway warns about it at start.
    """
    if manifest is None or manifest.quality is None:
        return None
    loss = manifest.quality.loss
    if loss > max_quality_loss:
        return (
            f"quality gate: {manifest.scheme} variant loses {loss:.1%} perplexity against its reference "
            f"(budget {max_quality_loss:.1%})"
        )
    return None
