"""The load generator: pure schedule and statistics helpers, then real loads against the stub backend."""

from __future__ import annotations

import itertools
import statistics
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import msgspec
import pytest

from gateway.bench.stub_backend import StubOptions, StubServer, start_stub
from runtimes.loadgen import (
    ClosedLoop,
    OpenLoop,
    RequestResult,
    RequestSpec,
    arrival_times,
    make_session,
    percentile,
    run_closed_loop,
    run_open_loop,
    summarize,
)


def result(e2el_ms: float, *, ttft_ms: float | None = None, error: str | None = None, tokens: int = 8) -> RequestResult:
    return RequestResult(
        start_s=0.0,
        lag_ms=0.0,
        ttft_ms=e2el_ms if ttft_ms is None and error is None else ttft_ms,
        e2el_ms=e2el_ms,
        output_tokens=tokens,
        status=200 if error is None else 500,
        error=error,
    )


# --- pure helpers -------------------------------------------------------------------------------


def test_arrivals_are_seeded_and_bounded() -> None:
    first = arrival_times(100, seed=7, duration_s=2)
    assert first == arrival_times(100, seed=7, duration_s=2)
    assert first != arrival_times(100, seed=8, duration_s=2)
    assert all(0 < a < b < 2 for a, b in itertools.pairwise(first))
    assert len(arrival_times(100, seed=7, duration_s=2, count=10)) == 10


def test_arrivals_have_the_asked_mean_rate() -> None:
    times = arrival_times(1000, seed=1, count=20_000)
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert statistics.fmean(gaps) == pytest.approx(0.001, rel=0.03)
    assert statistics.stdev(gaps) == pytest.approx(0.001, rel=0.05)  # exponential: stdev == mean


def test_arrivals_need_an_end() -> None:
    with pytest.raises(ValueError, match="duration or a count"):
        arrival_times(10)


def test_percentile_interpolates_like_numpy() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == pytest.approx(50.5)
    assert percentile(values, 99) == pytest.approx(99.01)
    assert percentile(values, 0) == 1.0
    assert percentile(values, 100) == 100.0
    assert percentile([3.0], 99) == 3.0
    assert percentile([], 50) == 0.0


def test_summary_counts_and_percentiles_cover_successes_only() -> None:
    results = [result(float(ms)) for ms in range(1, 11)] + [result(500.0, error="HTTP 502")] * 2
    summary = summarize(results, mode="closed", duration_s=2.0)
    assert (summary.sent, summary.completed, summary.errors) == (12, 10, 2)
    assert summary.error_kinds == {"HTTP 502": 2}
    assert summary.request_throughput == pytest.approx(5.0)
    assert summary.output_throughput == pytest.approx(40.0)
    assert summary.p50_e2el_ms == pytest.approx(5.5)
    assert summary.p99_e2el_ms == pytest.approx(9.91)
    assert summary.mean_ttft_ms == pytest.approx(5.5)


def test_request_bodies() -> None:
    chat = msgspec.json.decode(RequestSpec(base_url="http://h:1/", stream=True, max_tokens=3).body())
    assert chat["messages"][0]["role"] == "user"
    assert chat["stream_options"] == {"include_usage": True}
    text_spec = RequestSpec(base_url="http://h:1", api="completions", include_usage=False, stream=True)
    text = msgspec.json.decode(text_spec.body())
    assert "stream_options" not in text and isinstance(text["prompt"], str)
    assert text_spec.url == "http://h:1/v1/completions"


# --- against the stub ---------------------------------------------------------------------------


@pytest.fixture
async def stub8() -> AsyncIterator[StubServer]:
    async with await start_stub(StubOptions(max_tokens=8)) as server:
        yield server


@pytest.mark.parametrize("api", ["chat", "completions"])
async def test_open_loop_non_stream(stub8: StubServer, api: str) -> None:
    spec = RequestSpec(base_url=stub8.url, api=api, max_tokens=8)  # type: ignore[arg-type]
    run = await run_open_loop(spec, OpenLoop(rate=2000, count=60, seed=3))
    s = run.summary
    assert (s.sent, s.completed, s.errors, s.dropped) == (60, 60, 0, 0)
    assert stub8.state.requests_total == 60
    assert all(r.output_tokens == 8 and r.status == 200 for r in run.requests)
    assert 0 < s.p50_e2el_ms <= s.p90_e2el_ms <= s.p99_e2el_ms
    assert s.p50_ttft_ms == pytest.approx(s.p50_e2el_ms)
    assert s.request_throughput > 0 and s.output_throughput == pytest.approx(8 * s.request_throughput)
    assert [r.start_s for r in run.requests] == sorted(r.start_s for r in run.requests)


@pytest.mark.parametrize("include_usage", [True, False])
async def test_open_loop_stream(stub8: StubServer, include_usage: bool) -> None:
    spec = RequestSpec(base_url=stub8.url, stream=True, max_tokens=5, include_usage=include_usage)
    run = await run_open_loop(spec, OpenLoop(rate=1000, count=30))
    assert (run.summary.completed, run.summary.errors) == (30, 0)
    for r in run.requests:
        assert r.output_tokens == 5
        assert r.ttft_ms is not None and 0 < r.ttft_ms <= r.e2el_ms


async def test_closed_loop_keeps_its_workers_busy(stub8: StubServer) -> None:
    async with make_session() as session:
        run = await run_closed_loop(RequestSpec(base_url=stub8.url), ClosedLoop(concurrency=4, duration_s=0.3), session)
    s = run.summary
    assert s.mode == "closed" and s.concurrency == 4
    assert s.completed >= 4 and s.errors == 0
    assert s.duration_s >= 0.3
    assert s.request_throughput == pytest.approx(s.completed / s.duration_s)


async def test_failures_are_counted_by_kind() -> None:
    async with await start_stub(StubOptions(fail_status=502)) as broken:
        run = await run_open_loop(RequestSpec(base_url=broken.url), OpenLoop(rate=1000, count=10))
    assert (run.summary.completed, run.summary.errors) == (0, 10)
    assert run.summary.error_kinds == {"HTTP 502": 10}
    assert run.summary.p99_e2el_ms == 0.0
    assert all(r.status == 502 and r.ttft_ms is None for r in run.requests)


async def test_cut_streams_are_errors() -> None:
    async with await start_stub(StubOptions(die_after_chunks=2)) as dying:
        spec = RequestSpec(base_url=dying.url, stream=True, max_tokens=6)
        run = await run_open_loop(spec, OpenLoop(rate=1000, count=5))
    assert run.summary.errors == 5
    assert set(run.summary.error_kinds) == {"ClientPayloadError"}
    assert all(r.ttft_ms is not None for r in run.requests)  # the first chunks did arrive


async def test_unreachable_server_is_an_error_not_an_exception() -> None:
    async with await start_stub() as gone:
        url = gone.url
    run = await run_open_loop(RequestSpec(base_url=url), OpenLoop(rate=1000, count=3))
    assert run.summary.errors == 3
    assert all(r.status == 0 for r in run.requests)


async def test_arrivals_over_the_cap_are_dropped() -> None:
    async with await start_stub(StubOptions(ttft_ms=200)) as slow:
        spec = RequestSpec(base_url=slow.url)
        run = await run_open_loop(spec, OpenLoop(rate=2000, count=20, max_concurrency=2))
    s = run.summary
    assert s.max_in_flight == 2
    assert s.sent == 2 and s.dropped == 18 and s.completed == 2


@pytest.fixture
def stub_process_url() -> Iterator[str]:
    """A stub in its own process, for the CLI."""
    argv = [sys.executable, "-m", "gateway.bench.stub_backend", "--port", "0"]
    with subprocess.Popen(argv, stdout=subprocess.PIPE, text=True) as process:
        assert process.stdout is not None
        line = process.stdout.readline()  # printed once it accepts connections
        try:
            yield line.split()[-1]
        finally:
            process.terminate()
            process.wait(timeout=10)


@pytest.mark.timeout(60)
def test_cli_prints_a_summary(stub_process_url: str, tmp_path: Path) -> None:
    out = tmp_path / "run.json"
    argv = [sys.executable, "-m", "runtimes.loadgen", stub_process_url, "--count", "20", "--rate", "500"]
    done = subprocess.run([*argv, "--stream", "--json", str(out)], capture_output=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    summary = msgspec.json.decode(done.stdout)
    assert (summary["sent"], summary["completed"], summary["errors"]) == (20, 20, 0)
    assert summary["p99_ttft_ms"] >= summary["p50_ttft_ms"] > 0
    assert len(msgspec.json.decode(out.read_bytes())["requests"]) == 20
