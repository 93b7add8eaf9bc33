"""Helpers shared by the tests: deadlines instead of sleeps, and a real gateway on a free port."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import uvicorn

from gateway.app import create_app
from gateway.config import Config, parse_config
from runtimes.fleet import Fleet
from runtimes.providers.local import free_port

__all__ = ["free_port", "running_gateway", "static_config", "wait_for", "wait_for_async"]


def wait_for(predicate: Callable[[], object], timeout: float, what: str, interval: float = 0.05) -> None:
    """Poll `predicate` until it is truthy; fail with `what` at the deadline."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


async def wait_for_async(
    predicate: Callable[[], object | Awaitable[object]], timeout: float, what: str, interval: float = 0.05
) -> None:
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if isinstance(result, Awaitable):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        await asyncio.sleep(interval)


def static_config(pools: dict[str, list[str]], model: str = "stub", **gateway: object) -> Config:
    """A config with one static pool per entry (name -> instance URLs) serving `model`."""
    settings = ", ".join(
        f"{key}: {value}" for key, value in {"listen": f'"127.0.0.1:{free_port()}"', **gateway}.items()
    )
    lines = [f"gateway: {{{settings}}}", "models:", f"  - name: {model}", "pools:"]
    for name, urls in pools.items():
        lines += [
            f"  - name: {name}",
            f"    model: {model}",
            "    engine: {kind: openai}",
            "    provider: static",
            f"    urls: [{', '.join(urls)}]",
            "    accelerator: cpu-2c",
        ]
    return parse_config("\n".join(lines))


@contextlib.asynccontextmanager
async def running_gateway(config: Config, fleet: Fleet | None = None) -> AsyncIterator[str]:
    """Serve the gateway app over real HTTP in this event loop; yields its base URL."""
    app = create_app(config, fleet)
    server = uvicorn.Server(
        uvicorn.Config(app, host=config.gateway.host, port=config.gateway.port, log_config=None, lifespan="on")
    )
    task = asyncio.create_task(server.serve())
    await wait_for_async(lambda: server.started or task.done(), 10, "the gateway to start")
    if task.done():
        task.result()
    try:
        yield f"http://{config.gateway.listen}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 30)
