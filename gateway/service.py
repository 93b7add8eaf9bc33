"""The gateway service: config, fleet, router and proxy, and how one API request flows through them."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from functools import partial

import aiohttp
from opentelemetry.sdk.trace import SpanProcessor

from gateway.config import Config
from gateway.errors import model_not_found
from gateway.health import HealthProber
from gateway.protocol import ChatRequestView, CompletionRequestView, ModelCard, ModelList, decode_request
from gateway.proxy import Proxy, StreamReply, UpstreamReply
from gateway.router import PoolRoute, Router
from gateway.telemetry import Exchange, Telemetry
from gateway.upstream import UpstreamClient
from optimizer.quality import gate_reason
from runtimes.config import OpenAIEngineConfig, PoolConfig, VllmEngineConfig, resolve_weights
from runtimes.fleet import Fleet
from runtimes.instance import Instance
from runtimes.variants import read_manifest

__all__ = ["CHAT", "COMPLETIONS", "Endpoint", "Gateway"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Endpoint:
    path: str
    view: type[ChatRequestView] | type[CompletionRequestView]
    operation: str
    """`gen_ai.operation.name` of its requests."""


CHAT = Endpoint("/v1/chat/completions", ChatRequestView, "chat")
COMPLETIONS = Endpoint("/v1/completions", CompletionRequestView, "text_completion")


class Gateway:
    def __init__(
        self, config: Config, fleet: Fleet | None = None, span_processors: Iterable[SpanProcessor] = ()
    ) -> None:
        self.config = config
        self.fleet = fleet or Fleet(config.pools, config.providers)
        self.router = Router(
            [
                PoolRoute(p.name, p.model, p.weight, partial(self.fleet.instances, p.name), _quality_gate(config, p))
                for p in config.pools
            ],
            eject_s=config.gateway.eject_s,
        )
        self.model_list = ModelList([ModelCard(model.name) for model in config.models])
        self.telemetry = Telemetry(config, self.router, self.fleet, span_processors)
        self._proxy: Proxy | None = None

    @property
    def proxy(self) -> Proxy:
        if self._proxy is None:
            raise RuntimeError("the gateway is not running")
        return self._proxy

    @contextlib.asynccontextmanager
    async def running(self, _app: object = None) -> AsyncIterator[None]:
        """The app's lifespan: upstream connections, instances and health probes."""
        client = UpstreamClient(self.config.gateway.connect_timeout_s)
        async with aiohttp.ClientSession() as session:  # health probes only: requests go through `client`
            self._proxy = Proxy(client, self.router, self.config.gateway, self.telemetry, *self._upstream_overrides())
            prober = HealthProber(session, self.router, self.all_instances, self.config.gateway.health_interval_s)
            async with self.telemetry.running(session):
                await self.fleet.start()
                probing = asyncio.create_task(prober.run(), name="health probes")
                try:
                    yield
                finally:
                    probing.cancel()
                    await asyncio.gather(probing, return_exceptions=True)
                    await self.fleet.close()
                    client.close()
                    self._proxy = None

    async def forward(self, body: bytes, endpoint: Endpoint, exchange: Exchange) -> UpstreamReply | StreamReply:
        """Decode the routing view, then relay: a complete reply, or a stream whose first event is ready.

        The caller cancels this (and so the upstream request) when the client disconnects.
        """
        view = decode_request(body, endpoint.view)
        exchange.model, exchange.streaming, exchange.max_tokens = view.model, view.streaming, view.token_limit
        if not self.router.serves(view.model):
            raise model_not_found(view.model)
        exchange.served = True
        if view.streaming:
            return await self.proxy.stream(endpoint.path, body, view, exchange)
        return await self.proxy.complete(endpoint.path, body, view, exchange)

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


def _quality_gate(config: Config, pool: PoolConfig) -> str | None:
    """Why the pool's variant may not serve (its manifest against the model's budget), or None."""
    if not isinstance(pool.engine, VllmEngineConfig):
        return None
    manifest = read_manifest(resolve_weights(pool.engine.weights))
    if manifest is not None and manifest.quality is None and manifest.scheme != "bf16":
        log.warning("pool %s: its %s variant was never evaluated (thrifty eval)", pool.name, manifest.scheme)
    budget = next(model.max_quality_loss for model in config.models if model.name == pool.model)
    reason = gate_reason(manifest, budget)
    if reason is not None:
        log.warning("pool %s gets no traffic: %s", pool.name, reason)
    return reason
