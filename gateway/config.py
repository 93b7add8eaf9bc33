"""The config file: one YAML document decoded into msgspec Structs and checked as a whole.

Each package owns its section (`runtimes.config`, `optimizer.config`); this module composes
them, adds the gateway's own settings and the checks that span sections. Every error names the
path of what is wrong (`$.pools[1].instances.max`).
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Annotated

import msgspec
from msgspec import Meta

from observability.config import ObservabilityConfig
from optimizer.config import ModelConfig
from optimizer.policy import OptimizerConfig
from runtimes.accelerators import Accelerator, AcceleratorOverride, resolve_catalog
from runtimes.config import (
    OpenAIEngineConfig,
    PoolConfig,
    ProvidersConfig,
    VllmEngineConfig,
)

__all__ = [
    "Config",
    "ConfigError",
    "GatewayConfig",
    "default_config_text",
    "load_config",
    "parse_config",
]

PositiveSeconds = Annotated[float, Meta(gt=0)]


class GatewayConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The HTTP front end and how it treats upstream instances."""

    listen: str = "127.0.0.1:8000"
    """`host:port` to serve the OpenAI API on."""
    max_body_bytes: Annotated[int, Meta(ge=1024)] = 8 * 1024 * 1024
    """Larger request bodies get 413."""
    connect_timeout_s: PositiveSeconds = 5.0
    """Time to open a connection to an instance before trying another."""
    response_timeout_s: PositiveSeconds = 600.0
    """Time an instance may take for a whole non-streaming response, or for each stream chunk."""
    max_attempts: Annotated[int, Meta(ge=1, le=10)] = 3
    """Attempts per request over different instances, all before the first byte reaches the client."""
    eject_s: PositiveSeconds = 5.0
    """An instance that failed a request gets no traffic for this long, or until a health probe passes."""
    health_interval_s: PositiveSeconds = 2.0
    """Period of the active health probes of every instance."""
    retry_after_s: Annotated[int, Meta(ge=1)] = 5
    """`Retry-After` sent with 503 when no instance is ready."""

    @property
    def host(self) -> str:
        return self.listen.rpartition(":")[0]

    @property
    def port(self) -> int:
        return int(self.listen.rpartition(":")[2])


class Config(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """The whole file."""

    gateway: GatewayConfig = GatewayConfig()
    models: list[ModelConfig]
    pools: list[PoolConfig]
    accelerators: dict[str, AcceleratorOverride] = {}
    """Catalog overrides and additions, by accelerator name."""
    providers: ProvidersConfig = ProvidersConfig()
    observability: ObservabilityConfig = ObservabilityConfig()
    optimizer: OptimizerConfig = OptimizerConfig()

    def catalog(self) -> dict[str, Accelerator]:
        return resolve_catalog(self.accelerators)

    def price_per_hour(self, pool: PoolConfig) -> float:
        """What one instance of the pool costs per hour: the pool's override or its accelerator's price."""
        if pool.price_per_hour is not None:
            return pool.price_per_hour
        return self.catalog()[pool.accelerator].price_per_hour


class ConfigError(Exception):
    """A config that cannot be used; `problems` holds (path, message) pairs."""

    def __init__(self, source: str, problems: list[tuple[str, str]]) -> None:
        self.source = source
        self.problems = problems
        lines = "\n".join(f"  {path}: {message}" for path, message in problems)
        super().__init__(f"{source}: invalid config\n{lines}")


def default_config_text() -> str:
    """The embedded default: the bundled model in two local CPU pools at different prices."""
    return resources.files("gateway").joinpath("default.yaml").read_text()


def load_config(path: str | Path | None = None) -> Config:
    """Read and check a config file (or the embedded default when `path` is None)."""
    if path is None:
        return parse_config(default_config_text(), source="<default>")
    try:
        text = Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(str(path), [("$", f"cannot read file: {exc.strerror}")]) from exc
    return parse_config(text, source=str(path))


def parse_config(text: str | bytes, source: str = "<config>") -> Config:
    """Decode and check a YAML document; raises ConfigError naming every problem's path."""
    try:
        config = msgspec.yaml.decode(text, type=Config)
    except msgspec.ValidationError as exc:
        message, _, path = str(exc).rpartition(" - at `")
        raise ConfigError(source, [(path.rstrip("`") if message else "$", message or str(exc))]) from exc
    except msgspec.DecodeError as exc:
        raise ConfigError(source, [("$", f"not valid YAML: {exc}")]) from exc
    problems = list(_check(config))
    if problems:
        raise ConfigError(source, problems)
    return config


def _check(config: Config) -> list[tuple[str, str]]:
    """Checks that span fields or sections, which the struct types cannot express."""
    problems: list[tuple[str, str]] = []
    host, _, port = config.gateway.listen.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        problems.append(("$.gateway.listen", f"expected host:port, got {config.gateway.listen!r}"))

    try:
        catalog = config.catalog()
    except ValueError as exc:
        problems.append(("$.accelerators", str(exc)))
        catalog = {}

    model_names: set[str] = set()
    for i, model in enumerate(config.models):
        if model.name in model_names:
            problems.append((f"$.models[{i}].name", f"duplicate model {model.name!r}"))
        model_names.add(model.name)

    pool_names: set[str] = set()
    served: set[str] = set()
    for i, pool in enumerate(config.pools):
        at = f"$.pools[{i}]"
        if pool.name in pool_names:
            problems.append((f"{at}.name", f"duplicate pool {pool.name!r}"))
        pool_names.add(pool.name)
        if pool.model not in model_names:
            problems.append((f"{at}.model", f"unknown model {pool.model!r}; declare it under models"))
        served.add(pool.model)
        if catalog and pool.accelerator not in catalog:
            known = ", ".join(sorted(catalog))
            problems.append((f"{at}.accelerator", f"unknown accelerator {pool.accelerator!r} (known: {known})"))
        problems.extend(_check_pool_shape(pool, at))

    for i, model in enumerate(config.models):
        if model.name not in served:
            problems.append((f"$.models[{i}]", f"no pool serves model {model.name!r}"))
    problems.extend(_check_optimizer(config.optimizer, pool_names))
    return problems


def _check_optimizer(optimizer: OptimizerConfig, pool_names: set[str]) -> list[tuple[str, str]]:
    problems: list[tuple[str, str]] = []
    for name, settings in optimizer.pools.items():
        at = f"$.optimizer.pools.{name}"
        if name not in pool_names:
            problems.append((at, f"unknown pool {name!r}"))
        if settings.profile is not None and not Path(settings.profile).is_file():
            problems.append((f"{at}.profile", f"no such profile file: {settings.profile}"))
    for key in ("input_edges", "output_edges"):
        edges = getattr(optimizer.size_classes, key)
        if edges != sorted(set(edges)):
            problems.append((f"$.optimizer.size_classes.{key}", "edges must be distinct and ascending"))
    return problems


def _check_pool_shape(pool: PoolConfig, at: str) -> list[tuple[str, str]]:
    problems: list[tuple[str, str]] = []
    bounds = pool.instances
    if bounds.min > bounds.max:
        problems.append((f"{at}.instances.max", f"max ({bounds.max}) is below min ({bounds.min})"))
    if bounds.initial is not None and not bounds.min <= bounds.initial <= bounds.max:
        problems.append((f"{at}.instances.initial", f"must lie within min..max ({bounds.min}..{bounds.max})"))
    if pool.provider == "static":
        if not pool.urls:
            problems.append((f"{at}.urls", "a static pool needs at least one URL"))
        for j, url in enumerate(pool.urls):
            if not url.startswith(("http://", "https://")):
                problems.append((f"{at}.urls[{j}]", f"expected an http(s) URL, got {url!r}"))
    else:
        if isinstance(pool.engine, OpenAIEngineConfig):
            problems.append((f"{at}.provider", "engine `openai` is external: use provider `static` with urls"))
        if pool.urls:
            problems.append((f"{at}.urls", "only a static pool takes urls; local instances get their own"))
    if isinstance(pool.engine, VllmEngineConfig) and pool.engine.device != "cpu" and pool.engine.cpus:
        problems.append((f"{at}.engine.cpus", "core binding applies to device `cpu` only"))
    return problems
