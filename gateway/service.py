"""The gateway service: config, fleet, router and proxy, and how one API request flows through them."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import aiohttp
import msgspec
from opentelemetry.sdk.trace import SpanProcessor

from gateway.config import Config
from gateway.errors import model_not_found
from gateway.health import HealthProber
from gateway.protocol import ChatRequestView, CompletionRequestView, ModelCard, ModelList, decode_request
from gateway.proxy import Proxy, StreamReply, UpstreamReply
from gateway.reload import ConfigWatcher
from gateway.router import PoolRoute, Router
from gateway.telemetry import Exchange, Telemetry
from gateway.upstream import UpstreamClient
from optimizer.loop import OptimizerLoop
from optimizer.metrics import OptimizerCollector
from optimizer.quality import gate_reason
from optimizer.setup import build_setup
from optimizer.signals import PoolStatus
from optimizer.tick import Setup
from optimizer.traces import RecordWriter
from runtimes.config import OpenAIEngineConfig, PoolConfig, VllmEngineConfig, resolve_weights
from runtimes.fleet import Fleet
from runtimes.instance import Instance, InstanceState
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
        self,
        config: Config,
        fleet: Fleet | None = None,
        span_processors: Iterable[SpanProcessor] = (),
        config_path: str | Path | None = None,
    ) -> None:
        self.config = config
        self.fleet = fleet or Fleet(config.pools, config.providers)
        self.excluded = {p.name: _quality_gate(config, p) for p in config.pools}
        self.router = Router(
            [
                PoolRoute(p.name, p.model, p.weight, partial(self.fleet.instances, p.name), self.excluded[p.name])
                for p in config.pools
            ],
            eject_s=config.gateway.eject_s,
        )
        self.model_list = ModelList([ModelCard(model.name) for model in config.models])
        self.telemetry = Telemetry(config, self.router, self.fleet, span_processors)
        self.optimizer = OptimizerLoop(
            self.optimizer_setup(config), status=self.pool_status, sink=self.router, scaler=self.fleet
        )
        self.telemetry.feed.subscribe(self.optimizer.add)
        self.telemetry.registry.register(OptimizerCollector(self.optimizer))
        self.recorder: RecordWriter | None = None
        if config.optimizer.record_path:
            self.recorder = RecordWriter(config.optimizer.record_path)
            self.telemetry.feed.subscribe(self.recorder)
        self.watcher = ConfigWatcher(config_path, self.reload_policy) if config_path else None
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
                tasks = [
                    asyncio.create_task(prober.run(), name="health probes"),
                    asyncio.create_task(self.optimizer.run(), name="optimizer"),
                ]
                if self.watcher is not None:
                    tasks.append(asyncio.create_task(self.watcher.run(), name="config watcher"))
                try:
                    yield
                finally:
                    for task in tasks:
                        task.cancel()
                    await asyncio.gather(*tasks, return_exceptions=True)
                    await self.fleet.close()
                    client.close()
                    if self.recorder is not None:
                        self.recorder.close()
                    self._proxy = None

    async def forward(self, body: bytes, endpoint: Endpoint, exchange: Exchange) -> UpstreamReply | StreamReply:
        """Decode the routing view, then relay: a complete reply, or a stream whose first event is ready.

        The caller cancels this (and so the upstream request) when the client disconnects.
        """
        view = decode_request(body, endpoint.view)
        exchange.model, exchange.streaming, exchange.max_tokens = view.model, view.streaming, view.token_limit
        exchange.size_classes = self.size_classes(len(body), view.token_limit)
        if not self.router.serves(view.model):
            raise model_not_found(view.model)
        exchange.served = True
        if view.streaming:
            return await self.proxy.stream(endpoint.path, body, view, exchange)
        return await self.proxy.complete(endpoint.path, body, view, exchange)

    def size_classes(self, body_bytes: int, max_tokens: int | None) -> tuple[str, ...]:
        """The request's size classes for routing: the prompt estimated at 4 bytes of body per token,
        the output from `max_tokens`; without it only the prompt's bucket is known."""
        classes = self.optimizer.setup.size_classes
        prompt = body_bytes // 4
        if max_tokens is None:
            return (classes.input_class(prompt),)
        return classes.classify(prompt, max_tokens), classes.input_class(prompt)

    def optimizer_setup(self, config: Config) -> Setup:
        """The optimizer's view of a config: its policy and models, with this gateway's pools."""
        return build_setup(
            config.optimizer, config.models, self.config.pools, config.catalog(), config.price_per_hour, self.excluded
        )

    def reload_policy(self, config: Config) -> None:
        """Apply a reloaded file's policy: the optimizer section and the models' SLOs and budgets."""
        if msgspec.json.encode(config.pools) != msgspec.json.encode(self.config.pools):
            log.warning("config reload: pool changes take effect at restart; applying the policy only")
        if {m.name for m in config.models} != {m.name for m in self.config.models}:
            raise ValueError("the set of model names changed: that needs a restart")
        self.excluded = {p.name: _quality_gate(config, p) for p in self.config.pools}
        for name, reason in self.excluded.items():
            self.router.pools[name].excluded = reason
        self.optimizer.reconfigure(self.optimizer_setup(config))
        self.optimizer.note("reloaded", f"policy reloaded from {self.watcher.path if self.watcher else 'config'}")

    def pool_status(self) -> dict[str, PoolStatus]:
        """Each pool as the fleet, the health probes and the engine scrapes see it now."""
        now = time.monotonic()
        status = {}
        for name, provider in self.fleet.providers.items():
            instances = provider.instances
            ready = [i for i in instances if i.state is InstanceState.READY]
            loads = [self.telemetry.scraper.load(i.id) for i in ready]
            known = [load for load in loads if load is not None]
            status[name] = PoolStatus(
                ready=len(ready),
                starting=sum(1 for i in instances if i.state is InstanceState.STARTING),
                target=provider.target,
                # An instance that failed and has not passed a probe since is suspect even when its
                # ejection has run out: a frozen engine would otherwise look healthy between probes.
                healthy=not ready or any(i.routable(now) and not i.failures for i in ready),
                in_flight=sum(i.in_flight for i in instances),
                engine_running=sum(load.running for load in known) if known else None,
                engine_waiting=sum(load.waiting for load in known) if known else None,
            )
        return status

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
