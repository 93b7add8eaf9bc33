"""Forwarding a request to an instance: retries before the first byte, streaming relay after it.

A request is tried on up to `max_attempts` instances (another pool if its own has none left),
but only until the first byte reaches the client; after that a failure becomes an error frame
at the end of the stream. The upstream is always asked for usage; the client sees the usage
chunk only if it asked for it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncGenerator, Iterator
from dataclasses import dataclass

import msgspec

from gateway.config import GatewayConfig
from gateway.errors import GatewayError, error_frame, no_capacity, upstream_failed
from gateway.protocol import RequestView, StreamChunkView, Usage, UsageView
from gateway.router import Router
from gateway.telemetry import CANCELLED, Attempt, Exchange, Telemetry
from gateway.upstream import UpstreamClient, UpstreamError, UpstreamResponse
from runtimes.instance import Instance

__all__ = ["Proxy", "StreamReply", "UpstreamRejected", "UpstreamReply"]

log = logging.getLogger(__name__)

_DONE = b"data: [DONE]"
_usage_decoder = msgspec.json.Decoder(UsageView)
_chunk_decoder = msgspec.json.Decoder(StreamChunkView)


class _Truncated(Exception):
    """The upstream closed the stream before `data: [DONE]`."""


@dataclass
class UpstreamReply:
    """A complete (non-streaming) answer, or an upstream client error passed through as is."""

    status: int
    body: bytes


@dataclass
class StreamReply:
    """A stream that an instance accepted: its first event, and the rest (to iterate, then close)."""

    first: bytes
    rest: AsyncGenerator[bytes]


class Proxy:
    def __init__(
        self,
        client: UpstreamClient,
        router: Router,
        config: GatewayConfig,
        telemetry: Telemetry,
        upstream_headers: dict[str, dict[str, str]] | None = None,
        upstream_models: dict[str, str] | None = None,
    ) -> None:
        self.client = client
        self.router = router
        self.config = config
        self.telemetry = telemetry
        self.upstream_headers = {pool: _header_lines(h) for pool, h in (upstream_headers or {}).items()}
        """Header lines per pool (an external upstream's API key)."""
        self.upstream_models = upstream_models or {}
        """The model name to send per pool, where the upstream calls it something else."""

    async def complete(self, path: str, body: bytes, view: RequestView, exchange: Exchange) -> UpstreamReply:
        """Forward a non-streaming request, retrying on other instances until one answers."""
        failure: str | None = None
        for attempt in self._attempts(exchange):
            instance = attempt.instance
            try:
                response = await self._post(attempt, path, self._body_for(instance, body, view))
                status, payload = response.status, await response.read()
            except UpstreamError as exc:
                failure = self._failed(attempt, exchange, exc)
                continue
            except BaseException:
                self.telemetry.end_attempt(attempt, exchange, error=CANCELLED)
                raise
            if status >= 500:
                failure = self._failed(attempt, exchange, f"status {status}", status)
                continue
            self.telemetry.end_attempt(attempt, exchange, status)
            self.router.succeeded(instance)
            exchange.status = status
            if status == 200:
                exchange.usage = _usage_of(payload)
            _log_exchange(exchange)
            return UpstreamReply(status, payload)
        raise self._give_up(view.model, failure)

    async def stream(self, path: str, body: bytes, view: RequestView, exchange: Exchange) -> StreamReply:
        """Forward a streaming request; returns once its first event is ready, before any byte goes out.

        Until then every failure moves on to another instance, and running out of them raises
        GatewayError. An upstream that rejects the request (4xx) raises `UpstreamRejected`, which
        carries the upstream's status and envelope to the client unchanged.
        """
        attempt, response, first = await self._open_stream(path, body, view, exchange)
        rest = self._relay(attempt, response, first, view, exchange)
        return StreamReply(await anext(rest), rest)  # every way through `_relay` yields at least once

    async def _open_stream(
        self, path: str, body: bytes, view: RequestView, exchange: Exchange
    ) -> tuple[Attempt, UpstreamResponse, bytes]:
        """An attempt that got a 200 and its first event; the attempt stays open (ended by `_relay`)."""
        failure: str | None = None
        for attempt in self._attempts(exchange):
            try:
                response, first = await self._first_event(
                    attempt, path, self._body_for(attempt.instance, body, view, True)
                )
            except (UpstreamError, _Truncated) as exc:
                failure = self._failed(attempt, exchange, exc)
                continue
            except UpstreamRejected as rejected:
                if rejected.status < 500:
                    self.telemetry.end_attempt(attempt, exchange, rejected.status)
                    raise
                failure = self._failed(attempt, exchange, f"status {rejected.status}", rejected.status)
                continue
            except BaseException:
                self.telemetry.end_attempt(attempt, exchange, error=CANCELLED)
                raise
            exchange.status = 200
            return attempt, response, first
        raise self._give_up(view.model, failure)

    async def _first_event(self, attempt: Attempt, path: str, body: bytes) -> tuple[UpstreamResponse, bytes]:
        """One attempt at a stream: a 200 and its first event, or the error that decides what comes next."""
        response = await self._post(attempt, path, body, per_read=True)
        try:
            if response.status != 200:
                raise UpstreamRejected(response.status, await response.read())
            return response, await _read_event(response)
        except BaseException:
            response.close()
            raise

    async def _relay(
        self,
        attempt: Attempt,
        response: UpstreamResponse,
        event: bytes,
        view: RequestView,
        exchange: Exchange,
    ) -> AsyncGenerator[bytes]:
        """Pass events through as they arrive; closing early (client gone) drops the upstream connection.

        Started at once by `stream`, so its `finally` (the attempt, the connection) runs however
        the stream ends.
        """
        finished = False
        error: str | None = CANCELLED
        try:
            while not event.startswith(_DONE):
                relayed = self._observe(event, view, exchange)
                if relayed:
                    yield relayed
                event = await _read_event(response)
            finished, error = True, None
            self.router.succeeded(attempt.instance)
            yield event
        except (UpstreamError, _Truncated) as exc:
            reason = self._failed_mid_stream(attempt, exc)
            error = type(exc).__name__
            exchange.status = 502
            yield error_frame(upstream_failed(f"stream interrupted ({reason})"))
        finally:
            self.telemetry.end_attempt(attempt, exchange, 200, error)
            if finished:
                response.release()
            else:
                response.close()  # tells the engine to abort the request
            _log_exchange(exchange)

    async def _post(self, attempt: Attempt, path: str, body: bytes, per_read: bool = False) -> UpstreamResponse:
        """One attempt: a total timeout for a complete answer, a per-read one for a stream."""
        instance = attempt.instance
        headers = self.upstream_headers.get(instance.pool, _JSON_HEADERS) + attempt.header_lines
        return await self.client.post(instance.url, path, body, headers, self.config.response_timeout_s, per_read)

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

    def _attempts(self, exchange: Exchange) -> Iterator[Attempt]:
        """Attempts on a different instance each, up to `max_attempts` or until none is left.

        Each holds its instance until the caller ends it (`Telemetry.end_attempt`).
        """
        tried: frozenset[str] = frozenset()
        while exchange.attempts < self.config.max_attempts:
            now = time.monotonic()
            instance = self.router.choose(exchange.model, now, exclude=tried, classes=exchange.size_classes)
            if instance is None:
                return
            tried |= {instance.id}
            yield self.telemetry.attempt(exchange, instance)

    def _failed(self, attempt: Attempt, exchange: Exchange, reason: object, status: int | None = None) -> str:
        """An attempt failed before the client saw anything: end it and eject its instance."""
        self.telemetry.end_attempt(attempt, exchange, status, error=_error_type(reason))
        return self._failed_mid_stream(attempt, reason)

    def _failed_mid_stream(self, attempt: Attempt, reason: object) -> str:
        instance = attempt.instance
        text = f"{instance.id}: {_describe(reason)}"
        log.warning("upstream failure on %s", text)
        self.router.failed(instance, time.monotonic())
        return text

    def _give_up(self, model: str, failure: str | None) -> GatewayError:
        if failure is None:
            return no_capacity(model, self.config.retry_after_s)
        return upstream_failed(failure)

    def _body_for(self, instance: Instance, body: bytes, view: RequestView, stream: bool = False) -> bytes:
        """The client's bytes, unless the upstream needs a different model name or must report usage."""
        upstream_model = self.upstream_models.get(instance.pool)
        add_usage = stream and not view.client_wants_usage
        if upstream_model is None and not add_usage:
            return body
        if upstream_model is None and b'"stream_options"' not in body:
            return _usage_requested(body)
        document = msgspec.json.decode(body)
        if upstream_model is not None:
            document["model"] = upstream_model
        if stream:
            document["stream_options"] = {**(document.get("stream_options") or {}), "include_usage": True}
        return msgspec.json.encode(document)


class UpstreamRejected(GatewayError):
    """An upstream's own error answer, relayed with its status and body."""

    def __init__(self, status: int, payload: bytes) -> None:
        super().__init__(status, payload.decode(errors="replace"))
        self.payload = payload

    def body(self) -> bytes:
        return self.payload


_JSON_HEADERS = b"Content-Type: application/json\r\n"


def _header_lines(headers: dict[str, str]) -> bytes:
    """Headers as the raw lines the upstream client sends; a line break in a value is a config error."""
    lines = [f"{name}: {value}\r\n" for name, value in headers.items()]
    if any("\n" in line[:-2] or "\r" in line[:-2] for line in lines):
        raise ValueError("an upstream header contains a line break")
    return "".join(lines).encode()


async def _read_event(response: UpstreamResponse) -> bytes:
    """The next server-sent event, with its trailing blank line."""
    event = await response.read_event()
    if not event.endswith(b"\n\n"):
        raise _Truncated("upstream closed the stream early")
    return event


def _usage_requested(body: bytes) -> bytes:
    """The body with `stream_options.include_usage` set, by splicing the key in: no re-encoding.

    Only for a body without a `stream_options` key; it decoded as a non-empty object, so its first
    `{` opens it and a member follows.
    """
    start = body.index(b"{") + 1
    return body[:start] + b'"stream_options":{"include_usage":true},' + body[start:]


def _usage_of(payload: bytes) -> Usage | None:
    try:
        return _usage_decoder.decode(payload).usage
    except msgspec.DecodeError:
        return None


def _describe(reason: object) -> str:
    if isinstance(reason, BaseException):
        return f"{type(reason).__name__}: {reason}" if str(reason) else type(reason).__name__
    return str(reason)


def _error_type(reason: object) -> str:
    return type(reason).__name__ if isinstance(reason, BaseException) else str(reason)


def _log_exchange(exchange: Exchange) -> None:
    if not log.isEnabledFor(logging.DEBUG):
        return
    usage = exchange.usage or Usage()
    instance = exchange.instance.id if exchange.instance else "-"
    end = time.monotonic()
    ttft_ms = ((exchange.first_token_at or end) - exchange.arrived) * 1000
    log.debug(
        "%s stream=%s instance=%s attempts=%d status=%d tokens=%d/%d ttft=%.1fms upstream done=%.1fms",
        exchange.model, exchange.streaming, instance, exchange.attempts, exchange.status,
        usage.prompt_tokens, usage.completion_tokens, ttft_ms, (end - exchange.arrived) * 1000,
    )  # fmt: skip
