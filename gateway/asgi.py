"""Raw ASGI I/O for the hot endpoints: read a bounded body, answer, stream, notice a client leaving.

The completion endpoints skip Litestar's signature model, dependency injection and `Response`
objects (a quarter of the gateway's CPU per request at saturation); these helpers are all they
need instead. Errors are still raised, and Litestar's exception middleware maps them with the
gateway's one error mapper (`gateway.errors`).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from types import TracebackType

from litestar.types import Message, Receive, Scope, Send

from gateway.errors import bad_request, body_too_large

__all__ = ["WATCH_AFTER_S", "ClientGone", "DisconnectWatch", "read_body", "respond", "stream"]

WATCH_AFTER_S = 0.02
"""How far into a request the gateway starts watching for its client to hang up."""

_JSON = [(b"content-type", b"application/json")]
_SSE = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache"), (b"x-accel-buffering", b"no")]
_END: Message = {"type": "http.response.body", "body": b"", "more_body": False}


class ClientGone(Exception):
    """The client disconnected before its answer was complete; there is no one to answer."""


async def read_body(scope: Scope, receive: Receive, limit: int) -> bytes:
    """The whole request body; 413 past `limit` bytes, declared up front or counted as they arrive."""
    declared = _content_length(scope)
    if declared is not None and declared > limit:
        raise body_too_large(limit)
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            raise ClientGone
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise body_too_large(limit)
        if not message.get("more_body", False):
            return b"".join((*chunks, chunk)) if chunks else chunk
        chunks.append(chunk)


def _content_length(scope: Scope) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                raise bad_request("Invalid Content-Length header.") from None
    return None


async def respond(send: Send, status: int, body: bytes) -> None:
    """A complete JSON answer (the upstream's bytes as they came)."""
    headers = [*_JSON, (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})


async def stream(send: Send, first: bytes, rest: AsyncIterator[bytes]) -> None:
    """A server-sent event stream, one ASGI message per event so that each token leaves at once."""
    await send({"type": "http.response.start", "status": 200, "headers": _SSE})
    await send({"type": "http.response.body", "body": first, "more_body": True})
    async for event in rest:
        await send({"type": "http.response.body", "body": event, "more_body": True})
    await send(_END)


class DisconnectWatch:
    """Cancels the task serving a request when its client hangs up (which cancels the upstream call).

    Noticing a disconnect means awaiting `receive()` beside the work, in a task of its own. Most
    requests through a gateway in front of a fast backend end within a millisecond, so the watcher
    task is only started `after_s` into the request: a client that leaves sooner is noticed at
    most that late, and short requests pay for a timer instead of a task.

        with DisconnectWatch(receive):
            ...  # leaving the block because the client left raises ClientGone
    """

    def __init__(self, receive: Receive, after_s: float = WATCH_AFTER_S) -> None:
        task = asyncio.current_task()
        if task is None:
            raise RuntimeError("DisconnectWatch works inside the task that serves the request")
        self._task = task
        self._receive = receive
        self._after_s = after_s
        self._timer: asyncio.TimerHandle | None = None
        self._watcher: asyncio.Task[None] | None = None
        self._gone = False

    def __enter__(self) -> DisconnectWatch:
        self._timer = asyncio.get_running_loop().call_later(self._after_s, self._start)
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        if self._timer is not None:
            self._timer.cancel()
        if self._watcher is not None:
            self._watcher.cancel()
        if self._gone and exc_type is asyncio.CancelledError and self._task.uncancel() == 0:
            raise ClientGone from None  # the cancellation was ours, not the server's

    def _start(self) -> None:
        self._timer = None
        self._watcher = asyncio.get_running_loop().create_task(self._watch())

    async def _watch(self) -> None:
        while (await self._receive())["type"] != "http.disconnect":
            pass
        self._gone = True
        self._task.cancel()
