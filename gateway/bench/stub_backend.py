"""A fast fake OpenAI-compatible backend: the upstream for gateway tests and overhead benchmarks.

It speaks enough of vLLM's OpenAI server for a gateway to be unable to tell the difference:
`POST /v1/chat/completions` and `POST /v1/completions` (JSON, or SSE ending in `data: [DONE]`,
with a final usage chunk when `stream_options.include_usage` is set), `GET /v1/models`,
`GET /health` and a few vLLM-style Prometheus lines on `GET /metrics`. The output is
`tok tok tok ...`, one token per stream chunk.

Knobs (`StubOptions`, or the same names as CLI flags) simulate latency (`ttft_ms`, `itl_ms`) and
failures (`fail_status`: every completion gets that status and an OpenAI error envelope;
`die_after_chunks`: streams are cut without `[DONE]`). To show what a gateway forwarded,
`echo_headers` adds the received headers to non-streaming responses (`"received_headers"`), and
`GET /_last_request` returns the last completion request body byte for byte.

HTTP/1.1 is served by an `asyncio.Protocol` over httptools, without a framework: it isolates
gateway overhead, so it must cost far less than the gateway. Measured on one core of the 2-core
dev box (closed loop, 64 keep-alive connections, a raw httptools client on the other core):
22,000-24,000 non-streaming requests/s, and 7,000-11,000 streams/s of 8 tokens (one write per
chunk, as a real engine does); aiohttp.web on uvloop, with a trivial handler, managed 9,000-12,500.

    python -m gateway.bench.stub_backend --port 9001 --model stub --itl-ms 5

In-process (tests): `async with await start_stub(StubOptions()) as stub: ... stub.url ...`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import logging
import signal
import sys
import time
from collections import deque
from collections.abc import Callable, Coroutine
from functools import cache, partial
from http import HTTPStatus
from types import TracebackType
from typing import Annotated, Any, Literal, Protocol, cast

import httptools
import msgspec
from msgspec import UNSET, Meta, UnsetType

__all__ = [
    "StubOptions",
    "StubServer",
    "StubState",
    "build_parser",
    "main",
    "options_from_args",
    "serve_forever",
    "start_stub",
]

log = logging.getLogger(__name__)

Millis = Annotated[float, Meta(ge=0)]


class StubOptions(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """How the stub behaves; every field is also a CLI flag (`ttft_ms` -> `--ttft-ms`)."""

    host: str = "127.0.0.1"
    port: Annotated[int, Meta(ge=0, le=65535)] = 0
    """0 picks a free port; `StubServer.url` tells which."""
    model: str = "stub"
    """The one model served; requests naming another get 404 like vLLM."""
    max_tokens: Annotated[int, Meta(ge=0)] = 16
    """Output tokens when the request names none, and the cap when it names more."""
    ttft_ms: Millis = 0.0
    """Delay before the first token."""
    itl_ms: Millis = 0.0
    """Delay between tokens (a non-streaming response waits for all of them)."""
    fail_status: Annotated[int, Meta(ge=400, le=599)] | None = None
    """Answer every completion request with this status and an OpenAI error envelope."""
    die_after_chunks: Annotated[int, Meta(ge=0)] | None = None
    """Streams: abort the connection after this many content chunks, without `[DONE]`."""
    echo_headers: bool = False
    """Add the received request headers to non-streaming responses as `"received_headers"`."""


class StubState:
    """What the stub saw and is doing; read by `/metrics`, `/_last_request` and in-process tests."""

    def __init__(self) -> None:
        self.last_request: _Request | None = None
        self.running = 0
        """Delayed or streaming replies in progress."""
        self.requests_total = 0
        """Completion requests received, failed ones included."""
        self.success_total = 0
        self.prompt_tokens_total = 0
        self.generation_tokens_total = 0

    @property
    def last_body(self) -> bytes | None:
        """The last completion request body, byte for byte."""
        return None if self.last_request is None else self.last_request.body

    @property
    def last_headers(self) -> dict[str, str]:
        """The last completion request's headers, names lower-cased."""
        return {} if self.last_request is None else self.last_request.header_dict()

    def record(self, request: _Request) -> None:
        self.last_request = request
        self.requests_total += 1


# --- HTTP plumbing ------------------------------------------------------------------------------


class _Request(msgspec.Struct):
    method: bytes
    path: bytes
    headers: list[tuple[bytes, bytes]]
    body: bytes
    keep_alive: bool

    def header_dict(self) -> dict[str, str]:
        """Lower-cased names; repeated headers joined with `, `."""
        out: dict[str, str] = {}
        for raw_name, raw_value in self.headers:
            name, value = raw_name.decode("latin-1").lower(), raw_value.decode("latin-1")
            out[name] = f"{out[name]}, {value}" if name in out else value
        return out


class _Sink(Protocol):
    """Where a streaming reply writes; implemented by the connection."""

    @property
    def closing(self) -> bool: ...

    def write(self, data: bytes) -> None: ...

    def abort(self) -> None: ...

    async def drain(self) -> None: ...


_Job = Callable[[_Sink], Coroutine[Any, Any, None]]
_Reply = bytes | _Job
"""A whole HTTP response, or a job that writes one (delays, streams)."""

_JSON = b"application/json"


@cache
def _status_line(status: int) -> bytes:
    return f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\n".encode()


def _http_response(status: int, body: bytes, content_type: bytes, keep_alive: bool) -> bytes:
    connection = b"" if keep_alive else b"connection: close\r\n"
    head = b"content-type: %s\r\ncontent-length: %d\r\n%s\r\n" % (content_type, len(body), connection)
    return _status_line(status) + head + body


def _chunk(data: bytes) -> bytes:
    """One chunk of a `transfer-encoding: chunked` body."""
    return b"%x\r\n%s\r\n" % (len(data), data)


_STREAM_HEAD = (
    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream; charset=utf-8\r\n"
    b"cache-control: no-cache\r\ntransfer-encoding: chunked\r\n\r\n"
)
_STREAM_END = _chunk(b"data: [DONE]\n\n") + b"0\r\n\r\n"


# --- OpenAI request and response bodies ---------------------------------------------------------


class _ContentPart(msgspec.Struct):
    type: str = "text"
    text: str = ""


class _Message(msgspec.Struct):
    role: str = "user"
    content: str | list[_ContentPart] | None = None


class _StreamOptions(msgspec.Struct):
    include_usage: bool = False


class _CompletionRequest(msgspec.Struct):
    """What the stub reads of a chat or text completion request; everything else is ignored."""

    model: str | None = None
    messages: list[_Message] | None = None
    prompt: str | list[str | int | list[int]] | None = None
    max_tokens: Annotated[int, Meta(ge=0)] | None = None
    max_completion_tokens: Annotated[int, Meta(ge=0)] | None = None
    stream: bool = False
    stream_options: _StreamOptions | None = None


class _Usage(msgspec.Struct):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class _ChatMessage(msgspec.Struct):
    role: str
    content: str


class _ChatChoice(msgspec.Struct):
    index: int
    message: _ChatMessage
    logprobs: None
    finish_reason: str


class _Completion(msgspec.Struct, kw_only=True):
    """A non-streaming response of either kind."""

    id: str
    object: str
    created: int
    model: str
    choices: list[_ChatChoice] | list[_TextChoice]
    usage: _Usage
    received_headers: dict[str, str] | UnsetType = UNSET


class _Delta(msgspec.Struct, omit_defaults=True):
    role: str | None = None
    content: str | None = None


class _ChatChunkChoice(msgspec.Struct):
    index: int
    delta: _Delta
    logprobs: None
    finish_reason: str | None


class _TextChoice(msgspec.Struct):
    index: int
    text: str
    logprobs: None
    finish_reason: str | None
    stop_reason: None = None


class _Chunk(msgspec.Struct, kw_only=True):
    """A stream chunk of either kind; `usage` only on the final usage chunk."""

    id: str
    object: str
    created: int
    model: str
    choices: list[_ChatChunkChoice] | list[_TextChoice]
    usage: _Usage | UnsetType = UNSET


class _ErrorBody(msgspec.Struct):
    message: str
    type: str
    param: str | None
    code: int


class _ErrorEnvelope(msgspec.Struct):
    error: _ErrorBody


class _Model(msgspec.Struct, kw_only=True):
    id: str
    object: str = "model"
    created: int
    owned_by: str = "thrifty-stub"


class _ModelList(msgspec.Struct, kw_only=True):
    object: str = "list"
    data: list[_Model]


_decoder = msgspec.json.Decoder(_CompletionRequest)
_encoder = msgspec.json.Encoder()

Kind = Literal["chat", "text"]


def _error(status: int, message: str, keep_alive: bool, param: str | None = None) -> bytes:
    """The OpenAI error envelope, typed after the status (`503` -> `ServiceUnavailableError`)."""
    kind = HTTPStatus(status).phrase.replace(" ", "").replace("-", "") + "Error"
    body = _encoder.encode(_ErrorEnvelope(_ErrorBody(message, kind, param, status)))
    return _http_response(status, body, _JSON, keep_alive)


def _validation_param(exc: msgspec.ValidationError) -> str | None:
    """`max_tokens` from msgspec's `... - at `$.max_tokens``."""
    _, sep, path = str(exc).rpartition(" - at `$.")
    return path.rstrip("`") if sep else None


def _estimate_tokens(text_chars: int) -> int:
    return max(1, -(-text_chars // 4))


def _prompt_tokens(request: _CompletionRequest) -> int:
    """About one token per four characters of prompt, or the count of token ids."""
    if request.messages is not None:
        chars = 0
        for message in request.messages:
            if isinstance(message.content, str):
                chars += len(message.content)
            elif message.content is not None:
                chars += sum(len(part.text) for part in message.content)
        return _estimate_tokens(chars)
    prompt = request.prompt
    if prompt is None or isinstance(prompt, str):
        return _estimate_tokens(len(prompt or ""))
    return sum(_prompt_part_tokens(part) for part in prompt)


def _prompt_part_tokens(part: str | int | list[int]) -> int:
    """A prompt list holds strings, token ids, or lists of token ids."""
    if isinstance(part, str):
        return _estimate_tokens(len(part))
    return len(part) if isinstance(part, list) else 1


class _Plan(msgspec.Struct, frozen=True):
    """One completion to produce."""

    kind: Kind
    id: str
    created: int
    model: str
    tokens: int
    prompt_tokens: int
    finish_reason: str
    include_usage: bool

    @property
    def usage(self) -> _Usage:
        return _Usage(self.prompt_tokens, self.tokens, self.prompt_tokens + self.tokens)

    @property
    def text(self) -> str:
        return " ".join(["tok"] * self.tokens)


def _token(i: int) -> str:
    return "tok" if i == 0 else " tok"


def _plan(kind: Kind, request: _CompletionRequest, options: StubOptions, seq: int) -> _Plan:
    asked = request.max_completion_tokens if request.max_completion_tokens is not None else request.max_tokens
    tokens = options.max_tokens if asked is None else min(asked, options.max_tokens)
    return _Plan(
        kind=kind,
        id=f"{'chatcmpl' if kind == 'chat' else 'cmpl'}-stub{seq:x}",
        created=int(time.time()),
        model=options.model,
        tokens=tokens,
        prompt_tokens=_prompt_tokens(request),
        finish_reason="length" if asked is not None and tokens == asked else "stop",
        include_usage=request.stream_options is not None and request.stream_options.include_usage,
    )


def _completion_body(plan: _Plan, headers: dict[str, str] | UnsetType) -> bytes:
    choices: list[_ChatChoice] | list[_TextChoice]
    if plan.kind == "chat":
        choices = [_ChatChoice(0, _ChatMessage("assistant", plan.text), None, plan.finish_reason)]
    else:
        choices = [_TextChoice(0, plan.text, None, plan.finish_reason)]
    kind = "chat.completion" if plan.kind == "chat" else "text_completion"
    completion = _Completion(
        id=plan.id,
        object=kind,
        created=plan.created,
        model=plan.model,
        choices=choices,
        usage=plan.usage,
        received_headers=headers,
    )
    return _encoder.encode(completion)


def _sse(plan: _Plan, choices: list[_ChatChunkChoice] | list[_TextChoice], usage: _Usage | UnsetType) -> bytes:
    kind = "chat.completion.chunk" if plan.kind == "chat" else "text_completion"
    chunk = _Chunk(id=plan.id, object=kind, created=plan.created, model=plan.model, choices=choices, usage=usage)
    return _chunk(b"data: " + _encoder.encode(chunk) + b"\n\n")


def _content_chunk(plan: _Plan, i: int) -> bytes:
    """The i-th token; the chat role rides on the first, the finish reason on the last."""
    finish = plan.finish_reason if i == plan.tokens - 1 else None
    if plan.kind == "chat":
        delta = _Delta(role="assistant" if i == 0 else None, content=_token(i))
        return _sse(plan, [_ChatChunkChoice(0, delta, None, finish)], UNSET)
    return _sse(plan, [_TextChoice(0, _token(i), None, finish)], UNSET)


def _usage_chunk(plan: _Plan) -> bytes:
    return _sse(plan, [], plan.usage)


# --- the application ----------------------------------------------------------------------------


class _StubApp:
    """All the stub's behaviour: routes a parsed request to a reply, and writes only through a `_Sink`."""

    def __init__(self, options: StubOptions) -> None:
        self.options = options
        self.state = StubState()
        self._seq = itertools.count()
        self._routes: dict[tuple[bytes, bytes], Callable[[_Request], _Reply]] = {
            (b"POST", b"/v1/chat/completions"): partial(self._completion, "chat"),
            (b"POST", b"/v1/completions"): partial(self._completion, "text"),
            (b"GET", b"/v1/models"): self._models,
            (b"GET", b"/health"): self._health,
            (b"GET", b"/metrics"): self._metrics,
            (b"GET", b"/_last_request"): self._last_request,
        }
        self._paths = {path for _, path in self._routes}

    def handle(self, request: _Request) -> _Reply:
        route = self._routes.get((request.method, request.path))
        if route is not None:
            return route(request)
        if request.path in self._paths:
            return _error(405, "Method Not Allowed", request.keep_alive)
        return _error(404, f"no route for {request.path.decode('latin-1')}", request.keep_alive)

    def _completion(self, kind: Kind, request: _Request) -> _Reply:
        self.state.record(request)
        options, keep_alive = self.options, request.keep_alive
        if options.fail_status is not None:
            return _error(options.fail_status, "stub: injected failure", keep_alive)
        try:
            body = _decoder.decode(request.body)
        except msgspec.ValidationError as exc:
            return _error(400, str(exc), keep_alive, _validation_param(exc))
        except msgspec.DecodeError as exc:
            return _error(400, f"invalid JSON body: {exc}", keep_alive)
        if body.model is not None and body.model != options.model:
            return _error(404, f"The model `{body.model}` does not exist.", keep_alive, "model")
        if (kind == "chat" and not body.messages) or (kind == "text" and body.prompt is None):
            field = "messages" if kind == "chat" else "prompt"
            return _error(400, f"`{field}` is required", keep_alive, field)
        plan = _plan(kind, body, options, next(self._seq))
        self._count(plan)
        if body.stream:
            return partial(self._stream, plan)
        headers = request.header_dict() if options.echo_headers else UNSET
        response = _http_response(200, _completion_body(plan, headers), _JSON, keep_alive)
        delay_ms = options.ttft_ms + options.itl_ms * max(plan.tokens - 1, 0)
        return response if delay_ms == 0 else partial(self._delayed, response, delay_ms / 1000)

    def _count(self, plan: _Plan) -> None:
        self.state.success_total += 1
        self.state.prompt_tokens_total += plan.prompt_tokens
        self.state.generation_tokens_total += plan.tokens

    async def _delayed(self, response: bytes, delay_s: float, sink: _Sink) -> None:
        self.state.running += 1
        try:
            await asyncio.sleep(delay_s)
            sink.write(response)
        finally:
            self.state.running -= 1

    async def _stream(self, plan: _Plan, sink: _Sink) -> None:
        self.state.running += 1
        try:
            await self._write_stream(plan, sink)
        finally:
            self.state.running -= 1

    async def _write_stream(self, plan: _Plan, sink: _Sink) -> None:
        options, die_after = self.options, self.options.die_after_chunks
        sink.write(_STREAM_HEAD)
        for i in range(plan.tokens if die_after is None else min(plan.tokens, die_after)):
            delay_ms = options.ttft_ms if i == 0 else options.itl_ms
            if delay_ms:
                await asyncio.sleep(delay_ms / 1000)
            if sink.closing:
                return
            sink.write(_content_chunk(plan, i))
            await sink.drain()
        if die_after is not None and plan.tokens >= die_after:
            sink.abort()
            return
        if plan.include_usage:
            sink.write(_usage_chunk(plan))
        sink.write(_STREAM_END)

    def _models(self, request: _Request) -> _Reply:
        models = _ModelList(data=[_Model(id=self.options.model, created=int(time.time()))])
        return _http_response(200, _encoder.encode(models), _JSON, request.keep_alive)

    def _health(self, request: _Request) -> _Reply:
        return _http_response(200, b"", b"text/plain", request.keep_alive)

    def _metrics(self, request: _Request) -> _Reply:
        return _http_response(200, self._metrics_text().encode(), b"text/plain; version=0.0.4", request.keep_alive)

    def _metrics_text(self) -> str:
        label, state = f'model_name="{self.options.model}"', self.state
        rows = [
            ("num_requests_running", "gauge", float(state.running)),
            ("num_requests_waiting", "gauge", 0.0),
            ("kv_cache_usage_perc", "gauge", 0.0),
            ("prompt_tokens_total", "counter", float(state.prompt_tokens_total)),
            ("generation_tokens_total", "counter", float(state.generation_tokens_total)),
            ("request_success_total", "counter", float(state.success_total)),
        ]
        lines = [f"# TYPE vllm:{name} {kind}\nvllm:{name}{{{label}}} {value}" for name, kind, value in rows]
        return "\n".join(lines) + "\n"

    def _last_request(self, request: _Request) -> _Reply:
        body = self.state.last_body
        if body is None:
            return _error(404, "no completion request received yet", request.keep_alive)
        return _http_response(200, body, _JSON, request.keep_alive)


# --- the connection: httptools in, bytes out ----------------------------------------------------


class _HttpConnection(asyncio.Protocol):
    """One keep-alive connection; requests are answered in order, pipelined ones queue."""

    def __init__(self, app: _StubApp, live: set[_HttpConnection]) -> None:
        self._app = app
        self._live = live
        self._parser = httptools.HttpRequestParser(self)
        self._transport: asyncio.Transport | None = None
        self._url = b""
        self._headers: list[tuple[bytes, bytes]] = []
        self._body: list[bytes] = []
        self._pending: deque[_Request] = deque()
        self.task: asyncio.Task[None] | None = None
        self._writable = asyncio.Event()
        self._writable.set()

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self._live.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self._live.discard(self)
        self._writable.set()
        if self.task is not None:
            self.task.cancel()

    def pause_writing(self) -> None:
        self._writable.clear()

    def resume_writing(self) -> None:
        self._writable.set()

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self.write(_error(400, f"bad HTTP request: {exc}", keep_alive=False))
            self.close()
        except httptools.HttpParserUpgrade:
            self.write(_error(400, "protocol upgrades are not supported", keep_alive=False))
            self.close()

    # httptools callbacks

    def on_message_begin(self) -> None:
        self._url, self._headers, self._body = b"", [], []

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name, value))

    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        path = self._url.split(b"?", 1)[0]
        method = self._parser.get_method()
        body = b"".join(self._body)
        request = _Request(method, path, self._headers, body, self._parser.should_keep_alive())
        if self.task is not None or self._pending:
            self._pending.append(request)
        else:
            self._serve(request)

    # _Sink

    @property
    def closing(self) -> bool:
        return self._transport is None or self._transport.is_closing()

    def write(self, data: bytes) -> None:
        if not self.closing:
            assert self._transport is not None
            self._transport.write(data)

    def abort(self) -> None:
        if self._transport is not None:
            self._transport.abort()

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()

    async def drain(self) -> None:
        await self._writable.wait()

    # serving

    def _serve(self, request: _Request) -> None:
        reply = self._app.handle(request)
        if isinstance(reply, bytes):
            self.write(reply)
            if not request.keep_alive:
                self.close()
        else:
            self.task = asyncio.get_running_loop().create_task(self._run(reply, request.keep_alive))

    async def _run(self, job: _Job, keep_alive: bool) -> None:
        try:
            await job(self)
        except Exception:
            log.exception("stub: reply failed")
            self.abort()
        finally:
            self.task = None
        if not keep_alive:
            self.close()
            return
        while self._pending and self.task is None and not self.closing:
            self._serve(self._pending.popleft())


# --- server lifecycle ---------------------------------------------------------------------------


class StubServer:
    """A running stub: `url` is its base URL (no `/v1`), `state` what it saw."""

    def __init__(self, server: asyncio.Server, app: _StubApp, live: set[_HttpConnection]) -> None:
        host, port = server.sockets[0].getsockname()[:2]
        self.url = f"http://{host}:{port}"
        self.port: int = port
        self.options = app.options
        self.state = app.state
        self._server = server
        self._live = live

    async def close(self) -> None:
        """Stop listening, cut every open connection and wait for their jobs to end."""
        self._server.close()
        tasks = [conn.task for conn in self._live if conn.task is not None]
        for conn in list(self._live):
            conn.abort()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self._server.wait_closed()

    async def __aenter__(self) -> StubServer:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()


async def start_stub(options: StubOptions | None = None) -> StubServer:
    """Listen on `options.host:options.port` in the running loop; returns once accepting."""
    options = options or StubOptions()
    app = _StubApp(options)
    live: set[_HttpConnection] = set()
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: _HttpConnection(app, live), options.host, options.port, reuse_address=True, backlog=4096
    )
    return StubServer(server, app, live)


async def serve_forever(options: StubOptions) -> None:
    """Run until SIGINT or SIGTERM, announcing `stub listening on <url>` once ready."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    stub = await start_stub(options)
    print(f"stub listening on {stub.url}", flush=True)
    try:
        await stop.wait()
    finally:
        await stub.close()


# --- CLI ----------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m gateway.bench.stub_backend", description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9001, help="0 picks a free port")
    parser.add_argument("--model", default="stub")
    parser.add_argument("--max-tokens", type=int, default=16, help="output tokens when unasked, and the cap")
    parser.add_argument("--ttft-ms", type=float, default=0.0, help="delay before the first token")
    parser.add_argument("--itl-ms", type=float, default=0.0, help="delay between tokens")
    parser.add_argument("--fail-status", type=int, default=None, help="answer completions with this status")
    parser.add_argument("--die-after-chunks", type=int, default=None, help="cut streams after N content chunks")
    parser.add_argument("--echo-headers", action="store_true", help="echo request headers in JSON responses")
    return parser


def options_from_args(args: argparse.Namespace) -> StubOptions:
    """Checked against the struct's constraints; raises msgspec.ValidationError naming the field."""
    fields = {name: getattr(args, name) for name in StubOptions.__struct_fields__}
    return msgspec.convert(fields, StubOptions)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        options = options_from_args(args)
    except msgspec.ValidationError as exc:
        parser.error(str(exc))
    try:
        import uvloop
    except ImportError:
        asyncio.run(serve_forever(options))
    else:
        uvloop.run(serve_forever(options))
    return 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
