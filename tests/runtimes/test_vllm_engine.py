"""The vLLM command line and environment for each device."""

from __future__ import annotations

from pathlib import Path

import msgspec

from runtimes.config import VllmEngineConfig, resolve_weights
from runtimes.engines.vllm import build_vllm_launch, count_cpus


def engine(**fields: object) -> VllmEngineConfig:
    return msgspec.convert({"kind": "vllm", "weights": "thrifty:tiny-py", **fields}, VllmEngineConfig)


def test_cpu_instance_is_bound_to_its_cores_and_offline() -> None:
    spec = build_vllm_launch(
        engine(dtype="bfloat16", cpus="1", kv_cache_gib=0.5, max_model_len=2048, enforce_eager=True),
        served_model="tiny-py", host="127.0.0.1", port=8123, python="/py",
    )  # fmt: skip
    argv = spec.argv
    assert argv[:3] == ["/py", "-m", "vllm.entrypoints.openai.api_server"]
    assert argv[argv.index("--model") + 1] == resolve_weights("thrifty:tiny-py")
    assert Path(resolve_weights("thrifty:tiny-py")).name == "tiny-py"
    assert argv[argv.index("--served-model-name") + 1] == "tiny-py"
    assert argv[argv.index("--port") + 1] == "8123"
    assert argv[argv.index("--dtype") + 1] == "bfloat16"
    assert argv[argv.index("--max-model-len") + 1] == "2048"
    assert "--enforce-eager" in argv
    assert spec.env["VLLM_CPU_OMP_THREADS_BIND"] == "1"
    assert spec.env["OMP_NUM_THREADS"] == "1"
    assert spec.env["VLLM_CPU_KVCACHE_SPACE"] == "0.5"


def test_gpu_instance_gets_quantization_and_no_cpu_settings() -> None:
    spec = build_vllm_launch(
        engine(weights="meta-llama/Llama-3.1-8B-Instruct", device="cuda", quantization="fp8",
               gpu_memory_utilization=0.9, extra_args=["--max-num-batched-tokens", "8192"], env={"A": "b"}),
        served_model="llama", host="0.0.0.0", port=8000, python="python",
    )  # fmt: skip
    assert spec.argv[spec.argv.index("--quantization") + 1] == "fp8"
    assert spec.argv[-2:] == ["--max-num-batched-tokens", "8192"]
    assert "--enforce-eager" not in spec.argv
    assert not any(key.startswith("VLLM_CPU") for key in spec.env)
    assert "HF_HUB_OFFLINE" not in spec.env  # a hub id may need the hub
    assert spec.env["A"] == "b"


def test_count_cpus() -> None:
    assert count_cpus("0") == 1
    assert count_cpus("0-3") == 4
    assert count_cpus("0,2,4-5") == 4
