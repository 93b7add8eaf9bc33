"""Helpers shared by the tests: deadlines instead of sleeps, and a real gateway on a free port."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import uvicorn
from opentelemetry.sdk.trace import SpanProcessor

from gateway.app import create_app
from gateway.config import Config, parse_config
from observability.otlp import OTLPDecodeError, decode_export, request_records
from observability.records import RequestRecord
from runtimes.fleet import Fleet
from runtimes.providers.local import free_port

__all__ = ["OTLPReceiver", "free_port", "running_gateway", "static_config", "wait_for", "wait_for_async"]


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


def static_config(
    pools: dict[str, list[str]],
    model: str = "stub",
    pool_settings: dict[str, dict[str, object]] | None = None,
    optimizer: str = "{enabled: false}",
    **gateway: object,
) -> Config:
    """A config with one static pool per entry (name -> instance URLs) serving `model`.

    `pool_settings` adds keys to pools by name, e.g. `{"a": {"price_per_hour": 2.0}}`.
    `optimizer` is the optimizer section as flow YAML; off by default, so weights stay as set.
    """
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
        lines += [f"    {key}: {value}" for key, value in (pool_settings or {}).get(name, {}).items()]
    lines.append(f"optimizer: {optimizer}")
    return parse_config("\n".join(lines))


@contextlib.asynccontextmanager
async def running_gateway(
    config: Config,
    fleet: Fleet | None = None,
    span_processors: Iterable[SpanProcessor] = (),
    records: list[RequestRecord] | None = None,
) -> AsyncIterator[str]:
    """Serve the gateway app over real HTTP in this event loop; yields its base URL.

    `records`, if given, receives the record of every finished request (the optimizer's feed).
    """
    app = create_app(config, fleet, span_processors)
    if records is not None:
        app.state.gateway.telemetry.feed.subscribe(records.append)
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


class OTLPReceiver:
    """An OTLP/HTTP trace receiver on a real socket (`POST /v1/traces`, protobuf or JSON), in a thread.

    It decodes with `observability.otlp`, so what it holds is what the optimizer would receive.
    """

    def __init__(self) -> None:
        self.records: list[RequestRecord] = []
        self.content_types: list[str] = []
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, name="otlp receiver", daemon=True)

    def __enter__(self) -> OTLPReceiver:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def received(self) -> list[RequestRecord]:
        with self._lock:
            return list(self.records)

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                content_type = self.headers.get("Content-Type", "")
                try:
                    records = request_records(decode_export(body, content_type)) if self.path == "/v1/traces" else None
                except OTLPDecodeError as exc:
                    self._answer(400, str(exc).encode())
                    return
                if records is None:
                    self._answer(404, b"")
                    return
                with receiver._lock:
                    receiver.records.extend(records)
                    receiver.content_types.append(content_type)
                self._answer(200, b"")

            def _answer(self, status: int, body: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                return None

        return Handler
