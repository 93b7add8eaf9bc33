"""The quality gate: a pool whose variant lost more than its model's budget gets no traffic, and says so."""

from __future__ import annotations

from pathlib import Path

import httpx
import openai
import pytest

from gateway.bench.stub_backend import StubServer
from gateway.config import parse_config
from optimizer.quality import gate_reason
from runtimes.fleet import Fleet
from runtimes.variants import Quality, VariantManifest, now_iso, read_manifest, write_manifest
from tests.support import free_port, running_gateway, static_config


def manifest(perplexity: float | None, scheme: str = "int4-w4a16") -> VariantManifest:
    quality = None
    if perplexity is not None:
        quality = Quality(
            perplexity=perplexity,
            reference_perplexity=50.0,
            kl_divergence=0.01,
            tokens=1000,
            method="test",
            measured_at=now_iso(),
        )
    return VariantManifest(
        scheme=scheme, reference="ref", size_bytes=1, reference_size_bytes=4, created_at=now_iso(), quality=quality
    )


def test_gate_reason() -> None:
    assert gate_reason(None, 0.05) is None
    assert gate_reason(manifest(None), 0.05) is None  # never evaluated: served, with a warning at start
    assert gate_reason(manifest(51.0), 0.05) is None  # 2% loss within a 5% budget
    reason = gate_reason(manifest(60.0), 0.05)
    assert reason is not None and "20.0%" in reason and "5.0%" in reason and "int4-w4a16" in reason


def test_manifest_round_trips(tmp_path: Path) -> None:
    written = manifest(55.0)
    write_manifest(tmp_path, written)
    assert read_manifest(tmp_path) == written
    assert read_manifest(tmp_path / "missing") is None


@pytest.mark.parametrize(("budget", "variant_serves"), [(0.05, False), (0.5, True)])
async def test_a_variant_over_budget_gets_no_traffic(
    stub: StubServer, tmp_path: Path, budget: float, variant_serves: bool
) -> None:
    reference, variant = tmp_path / "reference", tmp_path / "variant"
    reference.mkdir()
    variant.mkdir()
    write_manifest(variant, manifest(60.0))  # 20% perplexity loss
    config = parse_config(
        f"""
gateway: {{listen: "127.0.0.1:{free_port()}"}}
models: [{{name: stub, max_quality_loss: {budget}}}]
pools:
  - {{name: reference, model: stub, engine: {{kind: vllm, weights: "{reference}"}}, accelerator: cpu-2c}}
  - {{name: variant, model: stub, engine: {{kind: vllm, weights: "{variant}"}}, accelerator: cpu-2c}}
"""
    )
    # The same pool names served by the stub: the gate reads the config's checkpoints, not the fleet.
    served_by_stub = static_config({"reference": [stub.url], "variant": [stub.url]})
    fleet = Fleet(served_by_stub.pools, served_by_stub.providers)
    async with running_gateway(config, fleet) as url, httpx.AsyncClient() as http:
        client = openai.AsyncOpenAI(base_url=url + "/v1", api_key="unused", max_retries=0)
        for _ in range(30):
            await client.completions.create(model="stub", prompt="x", max_tokens=1)
        pools = (await http.get(url + "/admin/pools")).json()
        metrics = (await http.get(url + "/metrics")).text
    served = {pool for pool in ("reference", "variant") if f'pool="{pool}",status="200"' in metrics}
    if variant_serves:
        assert pools["variant"]["excluded"] is None
        assert served == {"reference", "variant"}
        assert 'thrifty_pool_excluded{pool="variant"} 0.0' in metrics
    else:
        assert "quality gate" in pools["variant"]["excluded"]
        assert served == {"reference"}
        assert 'thrifty_pool_excluded{pool="variant"} 1.0' in metrics
