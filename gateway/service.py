"""The gateway service: config, fleet, router and proxy, and how one API request flows through them."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable
from dataclasses import dataclass
from functools import partial
from typing import Any, TypeVar

import aiohttp
from litestar import Request

from gateway.config import Config
from gateway.errors import model_not_found
from gateway.health import HealthProber
from gateway.protocol import ChatRequestView, CompletionRequestView, ModelCard, ModelList, decode_request
from gateway.proxy import Proxy, UpstreamReply
from gateway.router import PoolRoute, Router
from runtimes.config import OpenAIEngineConfig
from runtimes.fleet import Fleet
from runtimes.instance import Instance

__all__ = ["CHAT", "COMPLETIONS", "ClientGone", "Endpoint", "Gateway"]

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(frozen=True)
class Endpoint:
    path: str
    view: type[ChatRequestView] | type[CompletionRequestView]


CHAT = Endpoint("/v1/chat/completions", ChatRequestView)
COMPLETIONS = Endpoint("/v1/completions", CompletionRequestView)


class ClientGone(Exception):
    """The client disconnected before its answer was ready; the upstream request was cancelled."""


class Gateway:
    def __init__(self, config: Config, fleet: Fleet | None = None) -> None:
        self.config = config
        self.fleet = fleet or Fleet(config.pools, config.providers)
        self.router = Router(
            [PoolRoute(p.name, p.model, p.weight, partial(self.fleet.instances, p.name)) for p in config.pools],
            eject_s=config.gateway.eject_s,
        )
        self.model_list = ModelList([ModelCard(model.name) for model in config.models])
        self._proxy: Proxy | None = None

    @property
    def proxy(self) -> Proxy:
        if self._proxy is None:
            raise RuntimeError("the gateway is not running")
        return self._proxy

    @contextlib.asynccontextmanager
    async def running(self, _app: object = None) -> AsyncIterator[None]:
        """The app's lifespan: upstream connections, instances and health probes."""
        connector = aiohttp.TCPConnector(limit=0, force_close=False, enable_cleanup_closed=True)
        async with aiohttp.ClientSession(connector=connector, auto_decompress=False) as session:
            self._proxy = Proxy(session, self.router, self.config.gateway, *self._upstream_overrides())
            prober = HealthProber(session, self.router, self.all_instances, self.config.gateway.health_interval_s)
            await self.fleet.start()
            probing = asyncio.create_task(prober.run(), name="health probes")
            try:
                yield
            finally:
                probing.cancel()
                await asyncio.gather(probing, return_exceptions=True)
                await self.fleet.close()
                self._proxy = None

    async def forward(
        self, request: Request[Any, Any, Any], endpoint: Endpoint
    ) -> UpstreamReply | AsyncGenerator[bytes]:
        """Decode the routing view, then relay: a complete reply, or a stream whose first event is ready."""
        body = await request.body()
        view = decode_request(body, endpoint.view)
        if not self.router.serves(view.model):
            raise model_not_found(view.model)
        if view.streaming:
            events = self.proxy.stream(endpoint.path, body, view)
            first = await anext(events)  # failures before this point are retried or become an HTTP error
            return _prepend(first, events)
        return await _unless_disconnected(request, self.proxy.complete(endpoint.path, body, view))

    def all_instances(self) -> list[Instance]:
        return [i for provider in self.fleet.providers.values() for i in provider.instances]

    def unready_models(self, now: float) -> list[str]:
        return [model.name for model in self.config.models if not self.router.has_ready(model.name, now)]

    def _upstream_overrides(self) -> tuple[dict[str, dict[str, str]], dict[str, str]]:
        headers: dict[str, dict[str, str]] = {}
        models: dict[str, str] = {}
        for pool in self.config.pools:
            if not isinstance(pool.engine, OpenAIEngineConfig):
                continue
            if pool.engine.api_key_env:
                key = os.environ.get(pool.engine.api_key_env, "")
                headers[pool.name] = {"Content-Type": "application/json", "Authorization": f"Bearer {key}"}
            if pool.engine.upstream_model:
                models[pool.name] = pool.engine.upstream_model
        return headers, models


async def _prepend(first: bytes, rest: AsyncGenerator[bytes]) -> AsyncGenerator[bytes]:
    async with contextlib.aclosing(rest):
        yield first
        async for item in rest:
            yield item


async def _unless_disconnected(request: Request[Any, Any, Any], work: Awaitable[T]) -> T:
    """Await `work`, cancelling it (and so the upstream request) if the client hangs up first."""
    task = asyncio.current_task()
    assert task is not None
    gone = False

    async def watch() -> None:
        nonlocal gone
        while (await request.receive())["type"] != "http.disconnect":
            pass
        gone = True
        task.cancel()

    watcher = asyncio.create_task(watch())
    try:
        return await work
    except asyncio.CancelledError:
        if gone and task.uncancel() == 0:
            raise ClientGone from None
        raise
    finally:
        watcher.cancel()
