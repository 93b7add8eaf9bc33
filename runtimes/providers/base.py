"""What every provider offers: the instances of one pool, and a target count to move toward."""

from __future__ import annotations

import abc
from typing import Any, ClassVar, Protocol

from runtimes.config import PoolConfig, ProvidersConfig
from runtimes.instance import Instance

__all__ = ["PROVIDERS", "InstanceListener", "Provider"]

PROVIDERS: dict[str, type[Provider]] = {}


class InstanceListener(Protocol):
    """Told when an instance starts to exist and when it is gone (what cost accounting needs)."""

    def instance_started(self, instance: Instance) -> None: ...

    def instance_stopped(self, instance: Instance) -> None: ...


class Provider(abc.ABC):
    """Starts, watches and stops the instances of one pool.

    Subclasses register under the name the config uses: `class Local(Provider, name="local")`.
    """

    name: ClassVar[str]

    def __init_subclass__(cls, name: str, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.name = name
        PROVIDERS[name] = cls

    def __init__(self, pool: PoolConfig, settings: ProvidersConfig) -> None:
        self.pool = pool
        self.settings = settings
        self.listeners: list[InstanceListener] = []

    @property
    @abc.abstractmethod
    def instances(self) -> list[Instance]:
        """Instances that exist now, in every state but stopped."""

    @property
    @abc.abstractmethod
    def target(self) -> int:
        """The instance count the provider is moving toward."""

    @abc.abstractmethod
    async def start(self) -> None:
        """Begin bringing up the pool's initial instances; returns without waiting for them."""

    @abc.abstractmethod
    async def set_target(self, count: int) -> int:
        """Scale toward `count` (clamped to the pool's bounds); returns the target in force."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Stop everything this provider started and wait until it is gone."""

    def announce_started(self, instance: Instance) -> None:
        """The instance costs money from now on: its process (or machine) was asked for."""
        for listener in self.listeners:
            listener.instance_started(instance)

    def announce_stopped(self, instance: Instance) -> None:
        for listener in self.listeners:
            listener.instance_stopped(instance)

    def clamp(self, count: int) -> int:
        return max(self.pool.instances.min, min(self.pool.instances.max, count))
