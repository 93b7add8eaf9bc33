"""The static provider: instances at fixed URLs that something else runs."""

from __future__ import annotations

from runtimes.config import OpenAIEngineConfig, PoolConfig, ProvidersConfig
from runtimes.instance import Instance, InstanceState
from runtimes.providers.base import Provider

__all__ = ["StaticProvider"]


class StaticProvider(Provider, name="static"):
    """One instance per configured URL, assumed ready; health probes and passive ejection judge them."""

    def __init__(self, pool: PoolConfig, settings: ProvidersConfig) -> None:
        super().__init__(pool, settings)
        # External OpenAI-compatible servers have no /health; listing models is the cheapest probe.
        health_path = "/v1/models" if isinstance(pool.engine, OpenAIEngineConfig) else "/health"
        self._instances = [
            Instance(
                id=f"{pool.name}-{i}",
                pool=pool.name,
                url=url.rstrip("/"),
                state=InstanceState.READY,
                health_path=health_path,
            )
            for i, url in enumerate(pool.urls)
        ]

    @property
    def instances(self) -> list[Instance]:
        return list(self._instances)

    @property
    def target(self) -> int:
        return len(self._instances)

    async def start(self) -> None:
        for instance in self._instances:  # someone pays for them while we route to them
            self.announce_started(instance)

    async def set_target(self, count: int) -> int:
        return len(self._instances)  # fixed by the config

    async def close(self) -> None:
        for instance in self._instances:
            instance.state = InstanceState.STOPPED
            self.announce_stopped(instance)
