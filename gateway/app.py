"""The Litestar app factory and its thin controllers."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from litestar import Litestar, Request, Response, asgi, get, post
from litestar.datastructures import State
from litestar.di import NamedDependency, Provide
from litestar.enums import ScopeType
from litestar.exceptions import MethodNotAllowedException
from litestar.handlers import ASGIRouteHandler
from litestar.params import FromQuery
from litestar.types import Receive, Scope, Send
from opentelemetry.sdk.trace import SpanProcessor
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from gateway.asgi import ClientGone, DisconnectWatch, read_body, respond, stream
from gateway.config import Config
from gateway.errors import GatewayError, exception_handlers, status_of
from gateway.protocol import ModelList
from gateway.proxy import StreamReply, UpstreamReply
from gateway.service import CHAT, COMPLETIONS, Endpoint, Gateway
from gateway.telemetry import CLIENT_CLOSED
from observability.otlp import OTLPDecodeError, decode_export, request_records
from optimizer.tick import Decision
from runtimes.fleet import Fleet

__all__ = ["create_app"]


@get("/v1/models")
async def list_models(gateway: NamedDependency[Gateway]) -> ModelList:
    return gateway.model_list


@get("/health")
async def health() -> dict[str, str]:
    return {"status": "ok"}


@get("/ready")
async def ready(gateway: NamedDependency[Gateway]) -> dict[str, str]:
    unready = gateway.unready_models(time.monotonic())
    if unready:
        raise GatewayError(
            503,
            f"No ready instance for: {', '.join(unready)}",
            code="not_ready",
            headers={"Retry-After": str(gateway.config.gateway.retry_after_s)},
        )
    return {"status": "ready"}


@get("/metrics", sync_to_thread=False)
def prometheus_metrics(gateway: NamedDependency[Gateway]) -> Response[bytes]:
    """Prometheus exposition: request metrics, pools, cost, engine and host utilization."""
    return Response(generate_latest(gateway.telemetry.registry), media_type=CONTENT_TYPE_LATEST)


@get("/admin/pools")
async def pools(gateway: NamedDependency[Gateway]) -> dict[str, Any]:
    """Every pool with its weight, target and instances: what an operator checks first."""
    return {
        name: {
            "weight": gateway.router.pools[name].weight,
            "excluded": gateway.router.pools[name].excluded,
            "target": provider.target,
            "instances": [
                {"id": i.id, "url": i.url, "state": str(i.state), "in_flight": i.in_flight, "failures": i.failures}
                for i in provider.instances
            ],
        }
        for name, provider in gateway.fleet.providers.items()
    }


@get("/admin/plan")
async def plan(gateway: NamedDependency[Gateway]) -> dict[str, Any]:
    """The plan in force (weights, class weights, targets) and the latest decision behind it."""
    loop = gateway.optimizer
    return {
        "enabled": loop.setup.policy.enabled,
        "interval_s": loop.setup.policy.interval_s,
        "plan": loop.plan,
        "last_decision": loop.decisions[-1] if loop.decisions else None,
        "reload_error": gateway.watcher.last_error if gateway.watcher else None,
    }


@get("/admin/decisions")
async def decisions(gateway: NamedDependency[Gateway], limit: FromQuery[int] = 50) -> list[Decision]:
    """The latest decisions, newest first, each with its changes, reasons and numbers."""
    kept = gateway.optimizer.decisions
    return [kept[i] for i in range(len(kept) - 1, max(-1, len(kept) - 1 - limit), -1)]


@post("/v1/traces", status_code=200)
async def receive_traces(request: Request[Any, Any, Any], gateway: NamedDependency[Gateway]) -> Response[bytes]:
    """OTLP/HTTP trace receiver: other gateways' request spans feed this gateway's optimizer."""
    content_type = request.headers.get("content-type", "application/x-protobuf")
    try:
        export = decode_export(await request.body(), content_type)
    except OTLPDecodeError as exc:
        raise GatewayError(400, f"Not an OTLP trace export: {exc}", code="invalid_otlp") from exc
    for record in request_records(export):
        gateway.optimizer.add(record)
    if "json" in content_type:
        return Response(b"{}", media_type="application/json")
    return Response(b"", media_type="application/x-protobuf")  # an empty ExportTraceServiceResponse


def _relay(gateway: Gateway, endpoint: Endpoint) -> ASGIRouteHandler:
    """`POST endpoint.path` as a raw ASGI handler: read the body, forward it, answer or stream.

    Errors raised before the answer starts reach the client through the app's error mapper.
    """
    limit = gateway.config.gateway.max_body_bytes

    async def relay(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP or scope["method"] != "POST":
            raise MethodNotAllowedException(headers={"Allow": "POST"})
        exchange = gateway.telemetry.begin(endpoint.operation, scope["headers"])
        try:
            body = await read_body(scope, receive, limit)
            with DisconnectWatch(receive):
                await _answer(send, await gateway.forward(body, endpoint, exchange))
        except ClientGone:  # the upstream request was cancelled; no one is left to answer
            exchange.status = CLIENT_CLOSED
        except BaseException as exc:
            exchange.status = CLIENT_CLOSED if isinstance(exc, asyncio.CancelledError) else status_of(exc)
            raise
        finally:
            gateway.telemetry.finish(exchange)

    return asgi(endpoint.path, name=endpoint.path, copy_scope=False)(relay)


async def _answer(send: Send, reply: UpstreamReply | StreamReply) -> None:
    if isinstance(reply, UpstreamReply):
        await respond(send, reply.status, reply.body)
        return
    async with contextlib.aclosing(reply.rest):  # ends the upstream request however the stream ends
        await stream(send, reply.first, reply.rest)


def create_app(
    config: Config,
    fleet: Fleet | None = None,
    span_processors: Iterable[SpanProcessor] = (),
    config_path: str | Path | None = None,
) -> Litestar:
    """The gateway as an ASGI app; its lifespan starts and stops the fleet and the optimizer.

    `span_processors` receive every span besides the in-process feed and the OTLP exporter.
    `config_path`: the file to watch for policy reloads (None: no reload).
    """
    gateway = Gateway(config, fleet, span_processors, config_path)
    return Litestar(
        route_handlers=[
            _relay(gateway, CHAT),
            _relay(gateway, COMPLETIONS),
            list_models,
            health,
            ready,
            prometheus_metrics,
            pools,
            plan,
            decisions,
            receive_traces,
        ],
        dependencies={"gateway": Provide(lambda: gateway, use_cache=True, sync_to_thread=False)},
        exception_handlers=exception_handlers,
        lifespan=[gateway.running],
        state=State({"gateway": gateway}),
        request_max_body_size=config.gateway.max_body_bytes,
        openapi_config=None,
        logging_config=None,  # the CLI configures logging once for every component
        debug=False,
    )
