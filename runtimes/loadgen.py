"""Load generation against an OpenAI-compatible server: open loop (Poisson) and closed loop (max rate).

Open loop (`run_open_loop`): arrivals follow a Poisson process at a fixed rate, from a seeded
generator so two runs send the same schedule; an arrival never waits for a response. In-flight
requests are capped (`max_concurrency`); arrivals over the cap are dropped and counted, so an
overloaded server shows up as drops and latency rather than as a slower schedule. Each request
also records how late it left against its schedule (`lag_ms`): a high p99 lag means the load
generator itself could not keep up.

Closed loop (`run_closed_loop`): N workers each send the next request as soon as the last one
finished, for a duration: the server's maximum throughput at that concurrency.

Every request records its start, TTFT (first non-empty content chunk of a stream; the whole
response for a non-streaming request), end-to-end latency, output tokens and status; a `Summary`
gives throughput, errors and percentiles with vLLM's names (`p99_ttft_ms`, `p50_e2el_ms`, ...).
All requests of a run share one aiohttp session (unlimited keep-alive connections).

    python -m runtimes.loadgen http://127.0.0.1:9001 --rate 200 --duration 5 --stream
    python -m runtimes.loadgen http://127.0.0.1:9001 --closed 64 --duration 5
"""

from __future__ import annotations

import argparse
import asyncio
import math
import random
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Literal

import aiohttp
import msgspec
from msgspec import Meta

__all__ = [
    "DEFAULT_PROMPT",
    "Api",
    "ClosedLoop",
    "LoadClient",
    "OpenLoop",
    "RequestResult",
    "RequestSpec",
    "RunResult",
    "Summary",
    "arrival_times",
    "main",
    "make_session",
    "percentile",
    "run_closed_loop",
    "run_open_loop",
    "summarize",
]

Api = Literal["chat", "completions"]
Positive = Annotated[float, Meta(gt=0)]
DEFAULT_PROMPT = "Say hello to the benchmark."


class RequestSpec(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """What every request of a run looks like."""

    base_url: str
    """The server's root, e.g. `http://127.0.0.1:9001` (the `/v1/...` path is added)."""
    api: Api = "chat"
    model: str = "stub"
    stream: bool = False
    max_tokens: Annotated[int, Meta(ge=1)] = 16
    prompt: str = DEFAULT_PROMPT
    include_usage: bool = True
    """Streams: ask for the final usage chunk (`stream_options.include_usage`)."""
    headers: dict[str, str] = {}
    """Extra request headers, e.g. `authorization`."""
    timeout_s: Positive = 60.0
    """Limit on each whole request."""

    @property
    def url(self) -> str:
        path = "/v1/chat/completions" if self.api == "chat" else "/v1/completions"
        return self.base_url.rstrip("/") + path

    def body(self) -> bytes:
        """The request body, encoded once per run."""
        payload: dict[str, object] = {"model": self.model, "max_tokens": self.max_tokens}
        if self.api == "chat":
            payload["messages"] = [{"role": "user", "content": self.prompt}]
        else:
            payload["prompt"] = self.prompt
        if self.stream:
            payload["stream"] = True
            if self.include_usage:
                payload["stream_options"] = {"include_usage": True}
        return msgspec.json.encode(payload)


class OpenLoop(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Poisson arrivals at `rate` for `duration_s` seconds or `count` requests (whichever ends first)."""

    rate: Positive
    """Mean arrivals per second."""
    duration_s: Positive | None = None
    count: Annotated[int, Meta(ge=1)] | None = None
    seed: int = 0
    """Same seed, same schedule."""
    max_concurrency: Annotated[int, Meta(ge=1)] = 1024
    """Arrivals beyond this many in-flight requests are dropped (and counted)."""


class ClosedLoop(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """`concurrency` workers, each sending back to back, for `duration_s` seconds."""

    concurrency: Annotated[int, Meta(ge=1)] = 64
    duration_s: Positive = 5.0


class RequestResult(msgspec.Struct, frozen=True, kw_only=True):
    """One request, times in milliseconds relative to its own send unless noted."""

    start_s: float
    """When it was sent, in seconds since the run started."""
    lag_ms: float
    """How late it was sent against its scheduled arrival (open loop; 0 in a closed loop)."""
    ttft_ms: float | None
    """First content chunk of a stream, or the whole response; None when it failed before."""
    e2el_ms: float
    output_tokens: int
    status: int
    """HTTP status; 0 when no response arrived."""
    error: str | None = None
    """A short kind (`HTTP 502`, `ClientPayloadError`, `no [DONE]`), None on success."""

    @property
    def ok(self) -> bool:
        return self.error is None


class Summary(msgspec.Struct, frozen=True, kw_only=True):
    """A run's totals; percentiles are over successful requests (0.0 when there were none)."""

    mode: Literal["open", "closed"]
    offered_rate: float | None
    """Requests per second asked for (open loop)."""
    concurrency: int | None
    """Workers (closed loop) or the in-flight cap (open loop)."""
    duration_s: float
    """From the run's start to its last response."""
    sent: int
    completed: int
    errors: int
    dropped: int
    max_in_flight: int
    request_throughput: float
    """Completed requests per second."""
    output_throughput: float
    """Output tokens per second."""
    mean_ttft_ms: float
    p50_ttft_ms: float
    p90_ttft_ms: float
    p99_ttft_ms: float
    mean_e2el_ms: float
    p50_e2el_ms: float
    p90_e2el_ms: float
    p99_e2el_ms: float
    p99_lag_ms: float
    error_kinds: dict[str, int]


class RunResult(msgspec.Struct, frozen=True, kw_only=True):
    summary: Summary
    requests: list[RequestResult]


# --- pure helpers -------------------------------------------------------------------------------


def arrival_times(rate: float, seed: int = 0, duration_s: float | None = None, count: int | None = None) -> list[float]:
    """Poisson arrival offsets in seconds from 0, until `duration_s` or `count` (at least one is needed)."""
    if duration_s is None and count is None:
        raise ValueError("an open loop needs a duration or a count")
    rng = random.Random(seed)
    limit_s = math.inf if duration_s is None else duration_s
    limit_n = sys.maxsize if count is None else count
    times: list[float] = []
    at = rng.expovariate(rate)
    while at < limit_s and len(times) < limit_n:
        times.append(at)
        at += rng.expovariate(rate)
    return times


def percentile(sorted_values: list[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default); 0.0 for no values."""
    if not sorted_values:
        return 0.0
    rank = (len(sorted_values) - 1) * q / 100
    low = math.floor(rank)
    high = min(low + 1, len(sorted_values) - 1)
    return sorted_values[low] + (sorted_values[high] - sorted_values[low]) * (rank - low)


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else 0.0


def summarize(
    results: list[RequestResult],
    *,
    mode: Literal["open", "closed"],
    dropped: int = 0,
    offered_rate: float | None = None,
    concurrency: int | None = None,
    max_in_flight: int = 0,
    duration_s: float | None = None,
) -> Summary:
    """Totals and percentiles of a run; its duration runs from 0 to the last response unless given."""
    ok = [r for r in results if r.ok]
    ttft = sorted(r.ttft_ms for r in ok if r.ttft_ms is not None)
    e2el = sorted(r.e2el_ms for r in ok)
    lag = sorted(r.lag_ms for r in results)
    if duration_s is None:
        duration_s = max((r.start_s + r.e2el_ms / 1000 for r in results), default=0.0)
    per_s = 1 / duration_s if duration_s > 0 else 0.0
    return Summary(
        mode=mode,
        offered_rate=offered_rate,
        concurrency=concurrency,
        duration_s=duration_s,
        sent=len(results),
        completed=len(ok),
        errors=len(results) - len(ok),
        dropped=dropped,
        max_in_flight=max_in_flight,
        request_throughput=len(ok) * per_s,
        output_throughput=sum(r.output_tokens for r in ok) * per_s,
        mean_ttft_ms=_mean(ttft),
        p50_ttft_ms=percentile(ttft, 50),
        p90_ttft_ms=percentile(ttft, 90),
        p99_ttft_ms=percentile(ttft, 99),
        mean_e2el_ms=_mean(e2el),
        p50_e2el_ms=percentile(e2el, 50),
        p90_e2el_ms=percentile(e2el, 90),
        p99_e2el_ms=percentile(e2el, 99),
        p99_lag_ms=percentile(lag, 99),
        error_kinds=dict(Counter(r.error for r in results if r.error is not None)),
    )


# --- response parsing ---------------------------------------------------------------------------


class _Usage(msgspec.Struct):
    completion_tokens: int = 0


class _Delta(msgspec.Struct):
    content: str | None = None


class _StreamChoice(msgspec.Struct):
    delta: _Delta | None = None
    text: str | None = None

    @property
    def content(self) -> str | None:
        return self.delta.content if self.delta is not None else self.text


class _Error(msgspec.Struct):
    message: str = ""


class _Chunk(msgspec.Struct):
    """A stream chunk, or a non-streaming body: only what the load generator reads."""

    choices: list[_StreamChoice] = []
    usage: _Usage | None = None
    error: _Error | None = None


_chunk_decoder = msgspec.json.Decoder(_Chunk)


class _StreamTally:
    """Reads SSE bytes as they arrive: when the first content came, how many tokens, and `[DONE]`."""

    def __init__(self, t0: float) -> None:
        self._t0 = t0
        self._buffer = b""
        self.ttft_ms: float | None = None
        self.content_chunks = 0
        self.usage_tokens: int | None = None
        self.done = False
        self.error: str | None = None

    @property
    def output_tokens(self) -> int:
        return self.content_chunks if self.usage_tokens is None else self.usage_tokens

    def feed(self, data: bytes) -> None:
        buffer = self._buffer + data if self._buffer else data
        if b"\r" in buffer:
            buffer = buffer.replace(b"\r\n", b"\n")
        *events, self._buffer = buffer.split(b"\n\n")
        for event in events:
            for line in event.split(b"\n") if b"\n" in event else (event,):
                if line.startswith(b"data:"):
                    self._data(line[5:].strip())

    def _data(self, payload: bytes) -> None:
        if payload == b"[DONE]":
            self.done = True
            return
        chunk = _chunk_decoder.decode(payload)
        if chunk.error is not None:
            self.error = "stream error"
        if chunk.usage is not None:
            self.usage_tokens = chunk.usage.completion_tokens
        if any(choice.content for choice in chunk.choices):
            self.content_chunks += 1
            if self.ttft_ms is None:
                self.ttft_ms = (time.perf_counter() - self._t0) * 1000


# --- sending ------------------------------------------------------------------------------------


def make_session(timeout_s: float = 60.0) -> aiohttp.ClientSession:
    """One session for a whole run: unlimited keep-alive connections, no decompression."""
    connector = aiohttp.TCPConnector(limit=0, limit_per_host=0, keepalive_timeout=60, ttl_dns_cache=None)
    timeout = aiohttp.ClientTimeout(total=timeout_s, sock_connect=10)
    return aiohttp.ClientSession(connector=connector, timeout=timeout, auto_decompress=False)


@asynccontextmanager
async def _session_scope(
    session: aiohttp.ClientSession | None, timeout_s: float
) -> AsyncIterator[aiohttp.ClientSession]:
    """The caller's session, or a new one closed at the end."""
    if session is not None:
        yield session
        return
    async with make_session(timeout_s) as own:
        yield own


class LoadClient:
    """Sends the run's one request over a shared session and times it; never raises for a failure."""

    def __init__(self, session: aiohttp.ClientSession, spec: RequestSpec, run_start: float) -> None:
        self._session = session
        self._url = spec.url
        self._body = spec.body()
        self._headers = {"content-type": "application/json", **spec.headers}
        self._stream = spec.stream
        self._run_start = run_start

    async def send(self, scheduled_s: float | None = None) -> RequestResult:
        """One request; `scheduled_s` (seconds since the run start) is when it should have left."""
        t0 = time.perf_counter()
        start_s = t0 - self._run_start
        tally = _StreamTally(t0) if self._stream else None
        status, tokens, error = 0, 0, None
        try:
            async with self._session.post(self._url, data=self._body, headers=self._headers) as response:
                status = response.status
                if status != 200:
                    await response.read()
                    error = f"HTTP {status}"
                elif tally is not None:
                    async for data in response.content.iter_any():
                        tally.feed(data)
                else:
                    tokens = self._usage_tokens(await response.read())
        except (aiohttp.ClientError, TimeoutError, msgspec.DecodeError) as exc:
            error = type(exc).__name__
        e2el_ms = (time.perf_counter() - t0) * 1000
        ttft_ms = e2el_ms if error is None else None
        if tally is not None:
            ttft_ms, tokens = tally.ttft_ms, tally.output_tokens
            error = error or tally.error or (None if tally.done else "no [DONE]")
        lag_ms = 0.0 if scheduled_s is None else max(0.0, (start_s - scheduled_s) * 1000)
        return RequestResult(
            start_s=start_s,
            lag_ms=lag_ms,
            ttft_ms=ttft_ms,
            e2el_ms=e2el_ms,
            output_tokens=tokens,
            status=status,
            error=error,
        )

    @staticmethod
    def _usage_tokens(body: bytes) -> int:
        usage = _chunk_decoder.decode(body).usage
        return 0 if usage is None else usage.completion_tokens


# --- the two loops ------------------------------------------------------------------------------


async def run_open_loop(spec: RequestSpec, load: OpenLoop, session: aiohttp.ClientSession | None = None) -> RunResult:
    """Send `load`'s Poisson schedule without waiting for responses; wait for the last one at the end."""
    arrivals = arrival_times(load.rate, load.seed, load.duration_s, load.count)
    async with _session_scope(session, spec.timeout_s) as live:
        run_start = time.perf_counter()
        client = LoadClient(live, spec, run_start)
        tasks: list[asyncio.Task[RequestResult]] = []
        in_flight: set[asyncio.Task[RequestResult]] = set()
        dropped = max_in_flight = 0
        for at in arrivals:
            wait_s = at - (time.perf_counter() - run_start)
            if wait_s > 0:
                await asyncio.sleep(wait_s)
            if len(in_flight) >= load.max_concurrency:
                dropped += 1
                continue
            task = asyncio.create_task(client.send(at))
            tasks.append(task)
            in_flight.add(task)
            task.add_done_callback(in_flight.discard)
            max_in_flight = max(max_in_flight, len(in_flight))
        results = await asyncio.gather(*tasks)
    summary = summarize(
        results,
        mode="open",
        dropped=dropped,
        offered_rate=load.rate,
        concurrency=load.max_concurrency,
        max_in_flight=max_in_flight,
    )
    return RunResult(summary=summary, requests=results)


async def run_closed_loop(
    spec: RequestSpec, load: ClosedLoop, session: aiohttp.ClientSession | None = None
) -> RunResult:
    """`load.concurrency` workers send back to back until `load.duration_s` has passed."""
    async with _session_scope(session, spec.timeout_s) as live:
        run_start = time.perf_counter()
        deadline = run_start + load.duration_s
        client = LoadClient(live, spec, run_start)
        results: list[RequestResult] = []

        async def worker() -> None:
            while time.perf_counter() < deadline:
                results.append(await client.send())

        await asyncio.gather(*(worker() for _ in range(load.concurrency)))
    summary = summarize(results, mode="closed", concurrency=load.concurrency, max_in_flight=load.concurrency)
    return RunResult(summary=summary, requests=sorted(results, key=lambda r: r.start_s))


# --- CLI ----------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m runtimes.loadgen", description=__doc__.split("\n")[0])
    parser.add_argument("base_url", help="server root, e.g. http://127.0.0.1:9001")
    parser.add_argument("--api", choices=["chat", "completions"], default="chat")
    parser.add_argument("--model", default="stub")
    parser.add_argument("--stream", action="store_true")
    parser.add_argument("--max-tokens", type=int, default=16)
    parser.add_argument("--prompt", default=DEFAULT_PROMPT)
    parser.add_argument("--rate", type=float, default=100.0, help="open loop: mean requests per second")
    parser.add_argument("--duration", type=float, default=5.0, help="seconds")
    parser.add_argument("--count", type=int, default=None, help="open loop: stop after this many arrivals")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-concurrency", type=int, default=1024, help="open loop: in-flight cap")
    parser.add_argument("--closed", type=int, default=None, metavar="N", help="closed loop with N workers instead")
    parser.add_argument("--json", type=Path, default=None, help="write every request and the summary here")
    return parser


async def _run(args: argparse.Namespace) -> RunResult:
    spec = RequestSpec(
        base_url=args.base_url,
        api=args.api,
        model=args.model,
        stream=args.stream,
        max_tokens=args.max_tokens,
        prompt=args.prompt,
    )
    if args.closed is not None:
        return await run_closed_loop(spec, ClosedLoop(concurrency=args.closed, duration_s=args.duration))
    load = OpenLoop(
        rate=args.rate, duration_s=args.duration, count=args.count, seed=args.seed, max_concurrency=args.max_concurrency
    )
    return await run_open_loop(spec, load)


def main(argv: list[str] | None = None) -> int:
    """Run one load and print its summary as JSON."""
    args = build_parser().parse_args(argv)
    try:
        import uvloop
    except ImportError:
        result = asyncio.run(_run(args))
    else:
        result = uvloop.run(_run(args))
    if args.json is not None:
        args.json.write_bytes(msgspec.json.encode(result))
    print(msgspec.json.format(msgspec.json.encode(result.summary)).decode())
    return 0 if result.summary.errors == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
