"""The HTTP/1.1 client the gateway forwards requests with: keep-alive connections per instance.

aiohttp spent more CPU per forwarded request than everything else in the gateway together (its
request building, header handling, payload registry, timeout objects and a writer task per
request). Forwarding needs much less: POST bytes, get a status and a body, or read a stream
event by event. This client does that over `asyncio.Protocol` and httptools (the parser uvicorn
uses), with content-length, chunked and read-until-close bodies, TLS, a total or per-read
timeout, and a LIFO pool of idle connections per origin.

Every failure (refused, reset, closed mid-answer, unparseable, timed out) is an `UpstreamError`,
so the proxy has one thing to catch before it tries another instance. A connection whose request
was cancelled (the client left) is closed, which is how the engine learns to stop generating.
"""

from __future__ import annotations

import asyncio
import ssl
from dataclasses import dataclass
from typing import cast
from urllib.parse import urlsplit

import httptools

__all__ = ["UpstreamClient", "UpstreamError", "UpstreamResponse"]

_READ_HIGH_WATER = 1 << 20
"""Stream bytes buffered before the connection stops reading (the client is slower than the engine)."""
_READ_LOW_WATER = 1 << 16
_MAX_ORIGINS = 4096
_DRAIN_S = 5.0
"""How long a released connection may take to finish its message before it is closed instead of reused."""


class UpstreamError(Exception):
    """The instance could not be reached, or broke the exchange off."""


@dataclass(frozen=True, slots=True)
class _Origin:
    host: str
    port: int
    tls: bool
    prefix: bytes
    """Path of the base URL, put in front of every request path."""
    host_header: bytes

    @classmethod
    def parse(cls, base_url: str) -> _Origin:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise UpstreamError(f"not an http(s) URL: {base_url!r}")
        tls = parts.scheme == "https"
        port = parts.port or (443 if tls else 80)
        host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
        host_header = f"{host}:{parts.port}" if parts.port else host
        return cls(parts.hostname, port, tls, parts.path.rstrip("/").encode(), host_header.encode())


class _Connection(asyncio.Protocol):
    """One HTTP/1.1 connection, one exchange at a time; fed by the event loop, read by `UpstreamResponse`."""

    def __init__(self, loop: asyncio.AbstractEventLoop, client: UpstreamClient, origin: _Origin) -> None:
        self._loop = loop
        self._client = client
        self.origin = origin
        self._parser = httptools.HttpResponseParser(self)
        self._transport: asyncio.Transport | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timeout_s = 0.0
        self._per_read = False
        self._last_read = 0.0
        self._paused = False
        self.closed = False
        self.reused = False
        self.idle_since = 0.0
        self._reset()

    def _reset(self) -> None:
        self.busy = False
        self.received = False
        self.status = 0
        self.headers_done = False
        self.complete = False
        self.body = bytearray()
        self.error: UpstreamError | None = None
        self.lost_unanswered = False
        self._framed = False
        self._keep_alive = False
        self._release_when_complete = False

    # --- the exchange, driven by UpstreamClient and UpstreamResponse ----------------------------

    def send(self, head: bytes, body: bytes, timeout_s: float, per_read: bool) -> None:
        """Start an exchange: write the request (one writev) and arm its timeout."""
        self._reset()
        if self._transport is None or self._transport.is_closing():
            self.lost_unanswered = True
            raise UpstreamError("connection closed before the request was sent")
        self.busy = True
        self._timeout_s, self._per_read = timeout_s, per_read
        self._last_read = self._loop.time()
        self._timer = self._loop.call_at(self._last_read + timeout_s, self._on_timer)
        self._transport.writelines((head, body))

    async def wait(self) -> None:
        """Until something arrives (or fails); raises the exchange's error."""
        if self.error is None:
            self._waiter = self._loop.create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        if self.error is not None:
            raise self.error

    def consumed(self) -> None:
        """The reader took bytes out of `body`; read again if reading was paused for it."""
        if self._paused and len(self.body) < _READ_LOW_WATER and self._transport is not None:
            self._paused = False
            self._transport.resume_reading()

    def finish(self) -> None:
        """End the exchange: back to the pool when the answer is complete and reusable, else closed."""
        self._cancel_timer()
        if self.error is not None or not self.busy:
            self.close()
        elif self.complete:
            self.busy = False
            self._client.keep(self)
        else:  # the reader stopped at `data: [DONE]`; the end of the message is usually in flight
            self._release_when_complete = True
            self._timer = self._loop.call_later(_DRAIN_S, self.close)

    def close(self) -> None:
        self._cancel_timer()
        self.closed = True
        if self._transport is not None:
            self._transport.close()

    def reusable(self) -> bool:
        closing = self._transport is None or self._transport.is_closing()
        return not (self.closed or closing or self.busy) and self._keep_alive

    # --- asyncio.Protocol --------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's transports do not subclass asyncio's

    def data_received(self, data: bytes) -> None:
        if not self.busy:
            self.close()  # nothing was asked: a server closing an idle connection with a 408, or garbage
            return
        self.received = True
        if self._per_read:
            self._last_read = self._loop.time()
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(UpstreamError(f"invalid HTTP response: {exc}"))
            if self._transport is not None:
                self._transport.abort()
            return
        if self._per_read and len(self.body) > _READ_HIGH_WATER and not self._paused and self._transport is not None:
            self._paused = True
            self._transport.pause_reading()

    def eof_received(self) -> bool | None:
        return None  # close our side too; connection_lost settles the exchange

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._cancel_timer()
        if not self.busy:
            self._client.forget(self)  # an idle connection the server closed
            return
        if self.complete:
            return
        if self.headers_done and not self._framed:  # the body was delimited by the end of the connection
            self.complete = True
            self._wake()
        else:
            self.lost_unanswered = not self.received
            detail = f": {type(exc).__name__}: {exc}" if exc else ""
            self._fail(UpstreamError(f"connection closed before the answer was complete{detail}"))

    # --- httptools callbacks -----------------------------------------------------------------------

    def on_header(self, name: bytes, value: bytes) -> None:
        lower = name.lower()
        if lower == b"content-length" or (lower == b"transfer-encoding" and b"chunked" in value.lower()):
            self._framed = True

    def on_headers_complete(self) -> None:
        self.status = self._parser.get_status_code()
        self.headers_done = True
        if self.status in (204, 304):
            self._framed = True
        self._wake()

    def on_body(self, body: bytes) -> None:
        self.body += body
        self._wake()

    def on_message_complete(self) -> None:
        self.complete = True
        self._keep_alive = self._parser.should_keep_alive()
        self._wake()
        if self._release_when_complete:
            self._release_when_complete = False
            self.finish()

    # --- internals ---------------------------------------------------------------------------------

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _fail(self, error: UpstreamError) -> None:
        if self.error is None:
            self.error = error
        self._wake()

    def _on_timer(self) -> None:
        """A total deadline, or, for streams, the longest silence; re-armed lazily while data flows."""
        self._timer = None
        if not self.busy or self.complete:
            return
        now = self._loop.time()
        if self._per_read and self._paused:
            self._last_read = now  # the silence is our client's, not the engine's
        deadline = self._last_read + self._timeout_s
        if self._per_read and deadline > now:
            self._timer = self._loop.call_at(deadline, self._on_timer)
            return
        self._fail(UpstreamError(f"no answer within {self._timeout_s:g} s"))
        if self._transport is not None:
            self._transport.abort()

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


class UpstreamResponse:
    """An answer whose status and headers are in; read it whole or event by event, then finish it.

    `read()` and `release()` hand the connection back to the pool, `close()` drops it; after
    either, the other does nothing.
    """

    __slots__ = ("_connection", "status")

    def __init__(self, connection: _Connection) -> None:
        self._connection: _Connection | None = connection
        self.status = connection.status

    async def read(self) -> bytes:
        """The whole body; the connection goes back to the pool."""
        connection = self._owned()
        try:
            while not connection.complete:
                await connection.wait()
        except BaseException:
            self.close()
            raise
        body = bytes(connection.body)
        self._connection = None
        connection.finish()
        return body

    async def read_event(self) -> bytes:
        """The next server-sent event with its blank line; at the end, what is left (b"" if nothing)."""
        connection = self._owned()
        try:
            while True:
                body = connection.body
                end = body.find(b"\n\n")
                if end >= 0:
                    event = bytes(body[: end + 2])
                    del body[: end + 2]
                    connection.consumed()
                    return event
                if connection.complete:
                    event = bytes(body)
                    body.clear()
                    return event
                await connection.wait()
        except BaseException:
            self.close()
            raise

    def release(self) -> None:
        """Done with the answer: the connection is reused once its message is complete."""
        connection, self._connection = self._connection, None
        if connection is not None:
            connection.finish()

    def close(self) -> None:
        """Drop the connection: an engine aborts a request whose connection closes."""
        connection, self._connection = self._connection, None
        if connection is not None:
            connection.close()

    def _owned(self) -> _Connection:
        if self._connection is None:
            raise UpstreamError("the answer was already released")
        return self._connection


class UpstreamClient:
    """Keep-alive connections per origin; `post` forwards one request."""

    def __init__(self, connect_timeout_s: float, max_idle_s: float = 4.0, max_idle_per_origin: int = 1024) -> None:
        self.connect_timeout_s = connect_timeout_s
        self.max_idle_s = max_idle_s
        """Idle connections older than this are not reused: servers close theirs (uvicorn after 5 s)."""
        self.max_idle_per_origin = max_idle_per_origin
        self._origins: dict[str, _Origin] = {}
        self._idle: dict[_Origin, list[_Connection]] = {}
        self._ssl: ssl.SSLContext | None = None
        self._closed = False

    async def post(
        self, base_url: str, path: str, body: bytes, headers: bytes, timeout_s: float, per_read: bool = False
    ) -> UpstreamResponse:
        """Send `body` to `base_url + path` with `headers` (raw lines); returns once the status is in.

        `timeout_s` bounds the whole answer, or with `per_read` each wait for more of it.
        """
        origin = self._origin(base_url)
        head = b"POST %s%s HTTP/1.1\r\nHost: %s\r\nContent-Length: %d\r\n%s\r\n" % (
            origin.prefix, path.encode(), origin.host_header, len(body), headers,
        )  # fmt: skip
        connection = await self._acquire(origin)
        try:
            return await _exchange(connection, head, body, timeout_s, per_read)
        except UpstreamError:
            if not (connection.reused and connection.lost_unanswered):
                raise
        # The server closed this idle connection as it was reused, so it never saw the request.
        return await _exchange(await self._connect(origin), head, body, timeout_s, per_read)

    def keep(self, connection: _Connection) -> None:
        """Put a connection whose exchange is over back in the pool, or close it."""
        idle = self._idle.setdefault(connection.origin, [])
        if self._closed or not connection.reusable() or len(idle) >= self.max_idle_per_origin:
            connection.close()
            return
        connection.idle_since = asyncio.get_running_loop().time()
        connection.reused = True
        idle.append(connection)

    def forget(self, connection: _Connection) -> None:
        """Take a connection the server closed out of the pool."""
        idle = self._idle.get(connection.origin)
        if idle and connection in idle:
            idle.remove(connection)
        if not idle:
            self._idle.pop(connection.origin, None)

    def close(self) -> None:
        """Close the idle connections; busy ones close when their exchange ends."""
        self._closed = True
        for idle in self._idle.values():
            for connection in idle:
                connection.close()
        self._idle.clear()

    def _origin(self, base_url: str) -> _Origin:
        origin = self._origins.get(base_url)
        if origin is None:
            if len(self._origins) >= _MAX_ORIGINS:  # instances come and go with new URLs
                self._origins.clear()
            origin = self._origins[base_url] = _Origin.parse(base_url)
        return origin

    async def _acquire(self, origin: _Origin) -> _Connection:
        idle = self._idle.get(origin)
        if idle:
            oldest = asyncio.get_running_loop().time() - self.max_idle_s
            while idle:
                connection = idle.pop()
                if connection.reusable() and connection.idle_since >= oldest:
                    return connection
                connection.close()
        return await self._connect(origin)

    async def _connect(self, origin: _Origin) -> _Connection:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self.connect_timeout_s):
                _, connection = await loop.create_connection(
                    lambda: _Connection(loop, self, origin),
                    origin.host,
                    origin.port,
                    ssl=self._ssl_context() if origin.tls else None,
                    server_hostname=origin.host if origin.tls else None,
                )
        except TimeoutError:
            raise UpstreamError(f"no connection within {self.connect_timeout_s:g} s") from None
        except OSError as exc:
            raise UpstreamError(f"cannot connect: {type(exc).__name__}: {exc}") from exc
        return connection

    def _ssl_context(self) -> ssl.SSLContext:
        if self._ssl is None:
            self._ssl = ssl.create_default_context()
        return self._ssl


async def _exchange(
    connection: _Connection, head: bytes, body: bytes, timeout_s: float, per_read: bool
) -> UpstreamResponse:
    """Send the request on `connection`; returns once the status and headers are in."""
    connection.send(head, body, timeout_s, per_read)
    try:
        while not connection.headers_done:
            await connection.wait()
    except BaseException:
        connection.close()
        raise
    return UpstreamResponse(connection)
