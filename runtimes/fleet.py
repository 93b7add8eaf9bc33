"""The fleet: every pool's provider, started and stopped together."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

from runtimes.config import PoolConfig, ProvidersConfig
from runtimes.instance import Instance
from runtimes.providers import PROVIDERS, Provider
from runtimes.providers.base import InstanceListener

__all__ = ["Fleet"]


class Fleet:
    def __init__(self, pools: Iterable[PoolConfig], settings: ProvidersConfig) -> None:
        self.providers: dict[str, Provider] = {pool.name: PROVIDERS[pool.provider](pool, settings) for pool in pools}

    def add_listener(self, listener: InstanceListener) -> None:
        """Tell `listener` of every instance start and stop, in every pool (before `start`)."""
        for provider in self.providers.values():
            provider.listeners.append(listener)

    def instances(self, pool: str) -> list[Instance]:
        return self.providers[pool].instances

    async def set_target(self, pool: str, count: int) -> int:
        return await self.providers[pool].set_target(count)

    async def start(self) -> None:
        for provider in self.providers.values():
            await provider.start()

    async def close(self) -> None:
        await asyncio.gather(*(p.close() for p in self.providers.values()), return_exceptions=True)
