"""Timed streaming requests, and the two loops that send them: closed (N workers) and open (Poisson).

These follow `runtimes.loadgen` and reuse its session and arrival schedule, but every request
also keeps the arrival time of each chunk: vLLM's ITL is built from those gaps, and loadgen's
per-request records hold only the first one.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import time
from collections.abc import Callable

import aiohttp
import msgspec

from runtimes.loadgen import arrival_times
from runtimes.profile.metrics import Timing

__all__ = ["DROPPED", "LevelRun", "TimedClient", "closed_loop", "open_loop"]

DROPPED = "dropped at the in-flight cap"
"""The error of an open-loop arrival that found `max_concurrency` requests already in flight."""

OnDone = Callable[[Timing], None]


class _Usage(msgspec.Struct):
    prompt_tokens: int = 0
    completion_tokens: int = 0


class _Chunk(msgspec.Struct):
    """What a stream chunk says that timing needs; the choices themselves are not decoded."""

    choices: list[msgspec.Raw] = []
    usage: _Usage | None = None
    error: msgspec.Raw | None = None


_chunk_decoder = msgspec.json.Decoder(_Chunk)


class _ChunkClock:
    """Reads SSE bytes as they arrive and notes when each chunk with a choice came."""

    def __init__(self) -> None:
        self._buffer = b""
        self.arrivals: list[float] = []
        self.usage: _Usage | None = None
        self.done = False
        self.error: str | None = None

    def feed(self, data: bytes, now: float) -> None:
        buffer = (self._buffer + data).replace(b"\r\n", b"\n")
        *events, self._buffer = buffer.split(b"\n\n")
        for event in events:
            for line in event.split(b"\n"):
                if line.startswith(b"data:"):
                    self._data(line[5:].strip(), now)

    def _data(self, payload: bytes, now: float) -> None:
        if payload == b"[DONE]":
            self.done = True
            return
        chunk = _chunk_decoder.decode(payload)
        if chunk.error is not None:
            self.error = "stream error"
        if chunk.usage is not None:
            self.usage = chunk.usage
        if chunk.choices:  # vLLM's benchmark counts every chunk with a choice, even an empty one
            self.arrivals.append(now)

    def timing(self, t0: float, start_s: float, error: str | None) -> Timing:
        stamps = [(at - t0) * 1000 for at in self.arrivals]
        if error is None:
            error = self.error or (None if self.done else "no [DONE]")
        if error is None and not stamps:
            error = "no output"
        usage = self.usage or _Usage(completion_tokens=len(stamps))
        return Timing(
            start_s=start_s,
            ttft_ms=stamps[0] if stamps else None,
            e2el_ms=stamps[-1] if stamps else (time.perf_counter() - t0) * 1000,
            itl_ms=[later - earlier for earlier, later in itertools.pairwise(stamps)],
            prompt_tokens=usage.prompt_tokens,
            output_tokens=usage.completion_tokens,
            error=error,
        )


class TimedClient:
    """Sends streaming requests over a shared session and times them; never raises for a failure."""

    def __init__(
        self, session: aiohttp.ClientSession, url: str, headers: dict[str, str], next_body: Callable[[], bytes]
    ) -> None:
        self._session = session
        self._url = url
        self._headers = {"content-type": "application/json", **headers}
        self._next_body = next_body

    async def send(self, run_start: float) -> Timing:
        """One request with the next body; `run_start` is the level's `perf_counter` origin."""
        body = self._next_body()
        t0 = time.perf_counter()
        clock = _ChunkClock()
        error = None
        try:
            async with self._session.post(self._url, data=body, headers=self._headers) as response:
                if response.status != 200:
                    await response.read()
                    error = f"HTTP {response.status}"
                else:
                    async for data in response.content.iter_any():
                        clock.feed(data, time.perf_counter())
        except (aiohttp.ClientError, TimeoutError, msgspec.DecodeError) as exc:
            error = type(exc).__name__
        return clock.timing(t0, t0 - run_start, error)


class LevelRun(msgspec.Struct, frozen=True, kw_only=True):
    timings: list[Timing]
    """In send order."""
    duration_s: float
    """From the level's start until its last request ended."""


async def closed_loop(
    client: TimedClient,
    concurrency: int,
    *,
    count: int | None = None,
    duration_s: float | None = None,
    on_done: OnDone | None = None,
) -> LevelRun:
    """`concurrency` workers send back to back until `count` requests were sent or `duration_s` passed."""
    if count is None and duration_s is None:
        raise ValueError("a closed loop needs a request count or a duration")
    limit = count if count is not None else math.inf
    run_start = time.perf_counter()
    deadline = run_start + (duration_s if duration_s is not None else math.inf)
    sent = itertools.count()
    timings: list[Timing] = []

    async def worker() -> None:
        while time.perf_counter() < deadline and next(sent) < limit:
            timing = await client.send(run_start)
            timings.append(timing)
            if on_done is not None:
                on_done(timing)

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    duration = time.perf_counter() - run_start
    return LevelRun(timings=sorted(timings, key=lambda t: t.start_s), duration_s=duration)


async def open_loop(
    client: TimedClient,
    rate: float,
    *,
    count: int | None = None,
    duration_s: float | None = None,
    seed: int = 0,
    max_concurrency: int = 256,
    on_done: OnDone | None = None,
) -> LevelRun:
    """Poisson arrivals at `rate` per second, never waiting for responses; over-cap arrivals are dropped."""
    arrivals = arrival_times(rate, seed, duration_s, count)
    run_start = time.perf_counter()
    tasks: list[asyncio.Task[Timing]] = []
    in_flight: set[asyncio.Task[Timing]] = set()
    timings: list[Timing] = []

    async def send() -> Timing:
        timing = await client.send(run_start)
        if on_done is not None:
            on_done(timing)
        return timing

    for at in arrivals:
        wait_s = at - (time.perf_counter() - run_start)
        if wait_s > 0:
            await asyncio.sleep(wait_s)
        if len(in_flight) >= max_concurrency:
            dropped = Timing(
                start_s=at, ttft_ms=None, e2el_ms=0.0, itl_ms=[], prompt_tokens=0, output_tokens=0, error=DROPPED
            )
            timings.append(dropped)
            if on_done is not None:
                on_done(dropped)
            continue
        task = asyncio.create_task(send())
        tasks.append(task)
        in_flight.add(task)
        task.add_done_callback(in_flight.discard)
    timings += await asyncio.gather(*tasks)
    duration = time.perf_counter() - run_start
    return LevelRun(timings=sorted(timings, key=lambda t: t.start_s), duration_s=duration)


def _dropped(at: float, on_done: OnDone | None) -> Timing:
    timing = Timing(start_s=at, ttft_ms=None, e2el_ms=0.0, itl_ms=[], prompt_tokens=0, output_tokens=0, error=DROPPED)
    if on_done is not None:
        on_done(timing)
    return timing
