"""Forwarding a request to an instance: retries before the first byte, streaming relay after it.

A request is tried on up to `max_attempts` instances (another pool if its own has none left),
but only until the first byte reaches the client; after that a failure becomes an error frame
at the end of the stream. The upstream is always asked for usage; the client sees the usage
chunk only if it asked for it.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import AsyncGenerator
from dataclasses import dataclass, field

import aiohttp
import msgspec

from gateway.config import GatewayConfig
from gateway.errors import GatewayError, error_frame, no_capacity, upstream_failed
from gateway.protocol import RequestView, StreamChunkView, Usage, UsageView
from gateway.router import Router
from runtimes.instance import Instance

__all__ = ["Exchange", "Proxy", "UpstreamRejected", "UpstreamReply"]

log = logging.getLogger(__name__)

_DONE = b"data: [DONE]"
_usage_decoder = msgspec.json.Decoder(UsageView)
_chunk_decoder = msgspec.json.Decoder(StreamChunkView)
_UPSTREAM_ERRORS = (aiohttp.ClientError, TimeoutError)


class _Truncated(Exception):
    """The upstream closed the stream before `data: [DONE]`."""


@dataclass
class Exchange:
    """What happened to one request: filled in as it goes, read by logging (and telemetry)."""

    model: str
    streaming: bool
    started: float = field(default_factory=time.monotonic)
    instance: Instance | None = None
    attempts: int = 0
    status: int = 0
    usage: Usage | None = None
    first_token_at: float | None = None
    finished_at: float | None = None


@dataclass
class UpstreamReply:
    """A complete (non-streaming) answer, or an upstream client error passed through as is."""

    status: int
    body: bytes


class Proxy:
    def __init__(
        self,
        session: aiohttp.ClientSession,
        router: Router,
        config: GatewayConfig,
        upstream_headers: dict[str, dict[str, str]] | None = None,
        upstream_models: dict[str, str] | None = None,
    ) -> None:
        self.session = session
        self.router = router
        self.config = config
        self.upstream_headers = upstream_headers or {}
        """Extra headers per pool (an external upstream's API key)."""
        self.upstream_models = upstream_models or {}
        """The model name to send per pool, where the upstream calls it something else."""
        self.complete_timeout = aiohttp.ClientTimeout(
            total=config.response_timeout_s, sock_connect=config.connect_timeout_s
        )
        self.stream_timeout = aiohttp.ClientTimeout(
            sock_read=config.response_timeout_s, sock_connect=config.connect_timeout_s
        )

    async def complete(self, path: str, body: bytes, view: RequestView) -> UpstreamReply:
        """Forward a non-streaming request, retrying on other instances until one answers."""
        exchange = Exchange(view.model, streaming=False)
        failure: str | None = None
        tried: frozenset[str] = frozenset()
        while exchange.attempts < self.config.max_attempts:
            instance = self._next_instance(view.model, tried, exchange)
            if instance is None:
                break
            tried |= {instance.id}
            instance.in_flight += 1
            try:
                async with self.session.post(
                    instance.url + path,
                    data=self._body_for(instance, body, view),
                    headers=self._headers_for(instance),
                    timeout=self.complete_timeout,
                ) as response:
                    status, payload = response.status, await response.read()
            except _UPSTREAM_ERRORS as exc:
                failure = self._failed(instance, exc)
                continue
            finally:
                instance.in_flight -= 1
            if status >= 500:
                failure = self._failed(instance, f"status {status}")
                continue
            self.router.succeeded(instance)
            exchange.status, exchange.finished_at = status, time.monotonic()
            if status == 200:
                exchange.usage = _usage_of(payload)
            _log_exchange(exchange)
            return UpstreamReply(status, payload)
        raise self._give_up(view.model, failure)

    async def stream(self, path: str, body: bytes, view: RequestView) -> AsyncGenerator[bytes]:
        """Forward a streaming request; the first item is ready before any byte goes to the client.

        Until this generator yields, every failure moves on to another instance, and running out
        of them raises GatewayError; callers prime it with `anext()` before sending headers. An
        upstream that rejects the request (4xx) raises `UpstreamRejected`, which carries the
        upstream's status and envelope to the client unchanged.
        """
        exchange = Exchange(view.model, streaming=True)
        failure: str | None = None
        tried: frozenset[str] = frozenset()
        while exchange.attempts < self.config.max_attempts:
            instance = self._next_instance(view.model, tried, exchange)
            if instance is None:
                break
            tried |= {instance.id}
            instance.in_flight += 1
            response: aiohttp.ClientResponse | None = None
            try:
                response = await self.session.post(
                    instance.url + path,
                    data=self._body_for(instance, body, view, stream=True),
                    headers=self._headers_for(instance),
                    timeout=self.stream_timeout,
                )
                if response.status != 200:
                    await self._reject(instance, response)
                first = await _read_event(response)
            except (*_UPSTREAM_ERRORS, _Truncated) as exc:
                instance.in_flight -= 1
                if response is not None:
                    response.close()
                failure = self._failed(instance, exc)
                continue
            except GatewayError as rejected:
                instance.in_flight -= 1
                if rejected.status >= 500:
                    failure = self._failed(instance, f"status {rejected.status}")
                    continue
                raise
            except BaseException:
                instance.in_flight -= 1
                if response is not None:
                    response.close()
                raise
            exchange.status = 200
            async with contextlib.aclosing(self._relay(instance, response, first, view, exchange)) as relay:
                async for event in relay:
                    yield event
            return
        raise self._give_up(view.model, failure)

    async def _relay(
        self,
        instance: Instance,
        response: aiohttp.ClientResponse,
        first: bytes,
        view: RequestView,
        exchange: Exchange,
    ) -> AsyncGenerator[bytes]:
        """Pass events through as they arrive; closing early (client gone) drops the upstream connection."""
        finished = False
        try:
            event = first
            while True:
                if event.startswith(_DONE):
                    finished = True
                    yield event
                    break
                relayed = self._observe(event, view, exchange)
                if relayed:
                    yield relayed
                event = await _read_event(response)
            self.router.succeeded(instance)
        except (*_UPSTREAM_ERRORS, _Truncated) as exc:
            reason = self._failed(instance, exc)
            exchange.status = 502
            yield error_frame(upstream_failed(f"stream interrupted ({reason})"))
        finally:
            instance.in_flight -= 1
            if finished:
                response.release()
            else:
                response.close()  # tells the engine to abort the request
            exchange.finished_at = time.monotonic()
            _log_exchange(exchange)

    def _observe(self, event: bytes, view: RequestView, exchange: Exchange) -> bytes | None:
        """Note first token and usage; drop the usage-only chunk the client did not ask for."""
        if exchange.first_token_at is None:
            exchange.first_token_at = time.monotonic()
        if b'"usage"' not in event:
            return event
        try:
            chunk = _chunk_decoder.decode(event.removeprefix(b"data:").strip())
        except msgspec.DecodeError:
            return event
        if chunk.usage is not None:
            exchange.usage = chunk.usage
            if not chunk.choices and not view.client_wants_usage:
                return None
        return event

    def _next_instance(self, model: str, tried: frozenset[str], exchange: Exchange) -> Instance | None:
        instance = self.router.choose(model, time.monotonic(), exclude=tried)
        if instance is not None:
            exchange.attempts += 1
            exchange.instance = instance
        return instance

    def _failed(self, instance: Instance, reason: object) -> str:
        text = f"{instance.id}: {_describe(reason)}"
        log.warning("upstream failure on %s", text)
        self.router.failed(instance, time.monotonic())
        return text

    def _give_up(self, model: str, failure: str | None) -> GatewayError:
        if failure is None:
            return no_capacity(model, self.config.retry_after_s)
        return upstream_failed(failure)

    async def _reject(self, instance: Instance, response: aiohttp.ClientResponse) -> None:
        """Turn an upstream's non-200 answer to a stream request into the error the client gets."""
        payload = await response.read()
        response.release()
        raise UpstreamRejected(response.status, payload)

    def _body_for(self, instance: Instance, body: bytes, view: RequestView, stream: bool = False) -> bytes:
        """The client's bytes, unless the upstream needs a different model name or must report usage."""
        upstream_model = self.upstream_models.get(instance.pool)
        if upstream_model is None and not (stream and not view.client_wants_usage):
            return body
        document = msgspec.json.decode(body)
        if upstream_model is not None:
            document["model"] = upstream_model
        if stream:
            document["stream_options"] = {**(document.get("stream_options") or {}), "include_usage": True}
        return msgspec.json.encode(document)

    def _headers_for(self, instance: Instance) -> dict[str, str]:
        return self.upstream_headers.get(instance.pool, _JSON_HEADERS)


class UpstreamRejected(GatewayError):
    """An upstream's own error answer, relayed with its status and body."""

    def __init__(self, status: int, payload: bytes) -> None:
        super().__init__(status, payload.decode(errors="replace"))
        self.payload = payload

    def body(self) -> bytes:
        return self.payload


_JSON_HEADERS = {"Content-Type": "application/json"}


async def _read_event(response: aiohttp.ClientResponse) -> bytes:
    """The next server-sent event, with its trailing blank line."""
    event = await response.content.readuntil(b"\n\n")
    if not event.endswith(b"\n\n"):
        raise _Truncated("upstream closed the stream early")
    return event


def _usage_of(payload: bytes) -> Usage | None:
    try:
        return _usage_decoder.decode(payload).usage
    except msgspec.DecodeError:
        return None


def _describe(reason: object) -> str:
    if isinstance(reason, BaseException):
        return f"{type(reason).__name__}: {reason}" if str(reason) else type(reason).__name__
    return str(reason)


def _log_exchange(exchange: Exchange) -> None:
    if not log.isEnabledFor(logging.DEBUG):
        return
    usage = exchange.usage or Usage()
    instance = exchange.instance.id if exchange.instance else "-"
    log.debug(
        "%s stream=%s instance=%s attempts=%d status=%d tokens=%d/%d",
        exchange.model, exchange.streaming, instance, exchange.attempts, exchange.status,
        usage.prompt_tokens, usage.completion_tokens,
    )  # fmt: skip
