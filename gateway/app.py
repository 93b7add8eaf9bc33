"""The Litestar app factory and its thin controllers."""

from __future__ import annotations

import time
from typing import Any

from litestar import Litestar, Request, Response, get, post
from litestar.di import NamedDependency, Provide
from litestar.response import Stream

from gateway.config import Config
from gateway.errors import GatewayError, exception_handlers
from gateway.protocol import ModelList
from gateway.proxy import UpstreamReply
from gateway.service import CHAT, COMPLETIONS, ClientGone, Endpoint, Gateway
from runtimes.fleet import Fleet

__all__ = ["create_app"]

_SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


@post("/v1/chat/completions", status_code=200)
async def chat_completions(
    request: Request[Any, Any, Any], gateway: NamedDependency[Gateway]
) -> Response[bytes] | Stream:
    return await _relay(request, gateway, CHAT)


@post("/v1/completions", status_code=200)
async def completions(request: Request[Any, Any, Any], gateway: NamedDependency[Gateway]) -> Response[bytes] | Stream:
    return await _relay(request, gateway, COMPLETIONS)


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


@get("/admin/pools")
async def pools(gateway: NamedDependency[Gateway]) -> dict[str, Any]:
    """Every pool with its weight, target and instances: what an operator checks first."""
    return {
        name: {
            "weight": gateway.router.pools[name].weight,
            "target": provider.target,
            "instances": [
                {"id": i.id, "url": i.url, "state": str(i.state), "in_flight": i.in_flight, "failures": i.failures}
                for i in provider.instances
            ],
        }
        for name, provider in gateway.fleet.providers.items()
    }


async def _relay(request: Request[Any, Any, Any], gateway: Gateway, endpoint: Endpoint) -> Response[bytes] | Stream:
    try:
        reply = await gateway.forward(request, endpoint)
    except ClientGone:
        return Response(b"", status_code=499)
    if isinstance(reply, UpstreamReply):
        return Response(reply.body, status_code=reply.status, media_type="application/json")
    return Stream(reply, status_code=200, media_type="text/event-stream", headers=_SSE_HEADERS)


def create_app(config: Config, fleet: Fleet | None = None) -> Litestar:
    """The gateway as an ASGI app; its lifespan starts and stops the fleet."""
    gateway = Gateway(config, fleet)
    return Litestar(
        route_handlers=[chat_completions, completions, list_models, health, ready, pools],
        dependencies={"gateway": Provide(lambda: gateway, use_cache=True, sync_to_thread=False)},
        exception_handlers=exception_handlers,
        lifespan=[gateway.running],
        request_max_body_size=config.gateway.max_body_bytes,
        openapi_config=None,
        logging_config=None,  # the CLI configures logging once for every component
        debug=False,
    )
