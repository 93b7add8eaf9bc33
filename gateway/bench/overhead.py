"""`thrifty bench overhead`: the latency the gateway adds and the throughput it keeps.

One run starts the stub backend (`gateway.bench.stub_backend`) pinned to core 1 and the gateway
pinned to core 0, with a temporary config whose one static pool points at the stub; the load
generator (`runtimes.loadgen`) runs in this process, pinned to core 1 as well, so the gateway has
a core to itself. For each rate, non-streaming then streaming, the same seeded Poisson load goes
directly to the stub and through the gateway, in alternating rounds so that machine noise hits
both alike; the difference is what the gateway adds (TTFT for streams, end-to-end latency
otherwise). A closed-loop stage then finds the maximum non-streaming throughput of each path.

Targets are printed next to the numbers, not asserted: on one core the gateway adds p50 <= 0.5 ms
and p99 <= 3 ms at 400 req/s non-streaming, and sustains >= 2,000 req/s without errors.

    thrifty bench overhead --rates 100,400,1000 --duration 5 --json overhead.json
    python -m gateway.bench.overhead --gateway-url http://127.0.0.1:8000   # an already running gateway
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from types import FrameType
from typing import Literal

import aiohttp
import msgspec
from rich.console import Console
from rich.table import Table

from runtimes.loadgen import (
    ClosedLoop,
    OpenLoop,
    RequestResult,
    RequestSpec,
    Summary,
    make_session,
    run_closed_loop,
    run_open_loop,
    summarize,
)
from runtimes.providers.local import free_port

__all__ = [
    "BenchPlan",
    "MaxThroughput",
    "OverheadReport",
    "RateResult",
    "add_arguments",
    "gateway_config_text",
    "main",
    "run",
]

TARGET_RATE = 400.0
TARGET_ADDED_P50_MS = 0.5
TARGET_ADDED_P99_MS = 3.0
TARGET_MAX_RPS = 2000.0
READY_TIMEOUT_S = 30.0
GATEWAY_CORE, LOAD_CORE = 0, 1

Mode = Literal["non-stream", "stream"]


class BenchPlan(msgspec.Struct, frozen=True, kw_only=True):
    """What to measure; built from the CLI flags."""

    rates: list[float]
    duration_s: float
    """Per rate, mode and path, split over `rounds`."""
    rounds: int
    tokens: int
    api: Literal["chat", "completions"]
    warmup_s: float
    max_concurrency: int
    max_duration_s: float
    """0 skips the closed-loop stage."""
    seed: int


class RateResult(msgspec.Struct, frozen=True, kw_only=True):
    """One mode at one rate, direct and through the gateway."""

    mode: Mode
    rate: float
    direct: Summary
    gateway: Summary

    def p50(self, s: Summary) -> float:
        return s.p50_ttft_ms if self.mode == "stream" else s.p50_e2el_ms

    def p99(self, s: Summary) -> float:
        return s.p99_ttft_ms if self.mode == "stream" else s.p99_e2el_ms

    @property
    def added_p50_ms(self) -> float:
        return self.p50(self.gateway) - self.p50(self.direct)

    @property
    def added_p99_ms(self) -> float:
        return self.p99(self.gateway) - self.p99(self.direct)

    @property
    def throughput_ratio(self) -> float:
        return _ratio(self.gateway.request_throughput, self.direct.request_throughput)


class MaxThroughput(msgspec.Struct, frozen=True, kw_only=True):
    """Closed loop, non-streaming, direct and through the gateway."""

    concurrency: int
    direct: Summary
    gateway: Summary

    @property
    def ratio(self) -> float:
        return _ratio(self.gateway.request_throughput, self.direct.request_throughput)


class OverheadReport(msgspec.Struct, frozen=True, kw_only=True):
    """Everything `--json` writes."""

    plan: BenchPlan
    direct_url: str
    gateway_url: str
    pinned: bool
    """Whether the gateway and the load had cores of their own."""
    rates: list[RateResult]
    max_throughput: MaxThroughput | None


def _ratio(a: float, b: float) -> float:
    return a / b if b > 0 else 0.0


# --- child processes ----------------------------------------------------------------------------


def _child_setup(core: int | None) -> Callable[[], None]:
    """Runs in the child before exec: pin to `core`, and die with the parent (Linux)."""

    def setup() -> None:
        if core is not None:
            os.sched_setaffinity(0, {core})
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG

    return setup


def _can_pin() -> bool:
    return hasattr(os, "sched_setaffinity") and {GATEWAY_CORE, LOAD_CORE} <= os.sched_getaffinity(0)


class ServiceError(RuntimeError):
    """A child process that died or never became ready; the message ends with its log's tail."""


class _Service:
    """A child process in its own session (so its whole group can be stopped), logging to a file."""

    def __init__(self, name: str, argv: list[str], log_path: Path, core: int | None) -> None:
        self.name = name
        self.log_path = log_path
        with log_path.open("wb") as log:
            self.process = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=_child_setup(core),  # no threads are running yet
                start_new_session=True,
            )

    def log_tail(self, lines: int = 30) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return ""

    def wait_ready(self, url: str, timeout_s: float = READY_TIMEOUT_S) -> None:
        """Poll `url` until it answers 200; fail early if the process exits."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise ServiceError(f"{self.name} exited with {self.process.returncode}:\n{self.log_tail()}")
            if _answers_200(url):
                return
            time.sleep(0.05)
        raise ServiceError(f"{self.name} not ready at {url} after {timeout_s:.0f} s:\n{self.log_tail()}")

    def stop(self, grace_s: float = 5.0) -> None:
        """SIGTERM the process group, SIGKILL it after `grace_s`."""
        if self.process.poll() is None:
            self._signal_group(signal.SIGTERM)
            try:
                self.process.wait(grace_s)
            except subprocess.TimeoutExpired:
                self._signal_group(signal.SIGKILL)
                self.process.wait()
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGKILL)  # stragglers the leader left behind

    def _signal_group(self, sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, sig)


_no_proxy = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _answers_200(url: str) -> bool:
    try:
        with _no_proxy.open(url, timeout=1.0) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def gateway_config_text(listen_port: int, stub_url: str) -> str:
    """The temporary config: one model, one static pool on the stub."""
    return f"""\
gateway: {{listen: "127.0.0.1:{listen_port}"}}
models:
  - name: stub
pools:
  - name: stub-pool
    model: stub
    engine: {{kind: openai}}
    provider: static
    urls: ["{stub_url}"]
    accelerator: cpu-2c
"""


@contextlib.contextmanager
def _services(args: argparse.Namespace, plan: BenchPlan, pin: bool) -> Iterator[tuple[str, str]]:
    """Start what the flags do not name (stub, gateway), yield (direct URL, gateway URL), stop them all."""
    with tempfile.TemporaryDirectory(prefix="thrifty-bench-") as tmp, contextlib.ExitStack() as stack:
        direct_url, gateway_url = args.stub_url, args.gateway_url
        if direct_url is None:
            port = free_port()
            argv = [sys.executable, "-m", "gateway.bench.stub_backend", "--port", str(port), "--model", "stub"]
            stub = _Service(
                "stub", [*argv, "--max-tokens", str(plan.tokens)], Path(tmp, "stub.log"), _core(pin, LOAD_CORE)
            )
            stack.callback(stub.stop)
            direct_url = f"http://127.0.0.1:{port}"
            stub.wait_ready(f"{direct_url}/health")
        elif not _answers_200(f"{direct_url.rstrip('/')}/health"):
            raise ServiceError(f"the backend at {direct_url} does not answer GET /health with 200")
        if gateway_url is None:
            port = free_port()
            config = Path(tmp, "gateway.yaml")
            config.write_text(gateway_config_text(port, direct_url))
            argv = [sys.executable, "-m", "gateway", "serve", "--config", str(config)]
            gateway = _Service("gateway", argv, Path(tmp, "gateway.log"), _core(pin, GATEWAY_CORE))
            stack.callback(gateway.stop)
            gateway_url = f"http://127.0.0.1:{port}"
            gateway.wait_ready(f"{gateway_url}/ready")
        yield direct_url.rstrip("/"), gateway_url.rstrip("/")


def _core(pin: bool, core: int) -> int | None:
    return core if pin else None


@contextlib.contextmanager
def _pinned_to(core: int | None) -> Iterator[None]:
    """Run this process on `core` (the load generator's), then restore its affinity."""
    if core is None:
        yield
        return
    previous = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {core})
    try:
        yield
    finally:
        os.sched_setaffinity(0, previous)


@contextlib.contextmanager
def _sigterm_as_exit() -> Iterator[None]:
    """SIGTERM unwinds like Ctrl-C, so the `finally`s that stop the children run."""

    def handler(signum: int, frame: FrameType | None) -> None:
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


# --- measuring ----------------------------------------------------------------------------------


class _Bench:
    """Runs the plan's loads over one session; `say` reports progress."""

    def __init__(self, plan: BenchPlan, direct_url: str, gateway_url: str, say: Callable[[str], None]) -> None:
        self.plan = plan
        self.urls = {"direct": direct_url, "gateway": gateway_url}
        self.say = say

    def spec(self, path: str, mode: Mode) -> RequestSpec:
        return RequestSpec(
            base_url=self.urls[path],
            api=self.plan.api,
            model="stub",
            stream=mode == "stream",
            max_tokens=self.plan.tokens,
        )

    async def measure(self) -> tuple[list[RateResult], MaxThroughput | None]:
        async with make_session() as session:
            await self._warm_up(session)
            rates = [
                await self._rate(session, mode, rate) for mode in ("non-stream", "stream") for rate in self.plan.rates
            ]
            peak = await self._max_throughput(session) if self.plan.max_duration_s > 0 else None
        return rates, peak

    async def _warm_up(self, session: aiohttp.ClientSession) -> None:
        if self.plan.warmup_s <= 0:
            return
        self.say(f"warming up ({self.plan.warmup_s:g} s per path)")
        for path in self.urls:
            for mode in ("non-stream", "stream"):
                load = ClosedLoop(concurrency=32, duration_s=self.plan.warmup_s / 2)
                await run_closed_loop(self.spec(path, mode), load, session)

    async def _rate(self, session: aiohttp.ClientSession, mode: Mode, rate: float) -> RateResult:
        """Alternate direct and gateway rounds of the same seeded schedule; merge each path's rounds."""
        self.say(f"{mode} at {rate:g} req/s")
        per_round_s = self.plan.duration_s / self.plan.rounds
        runs: dict[str, list[tuple[list[RequestResult], Summary]]] = {"direct": [], "gateway": []}
        for i in range(self.plan.rounds):
            load = OpenLoop(rate=rate, duration_s=per_round_s, seed=self.plan.seed + i, max_concurrency=4096)
            for path in self.urls:
                result = await run_open_loop(self.spec(path, mode), load, session)
                runs[path].append((result.requests, result.summary))
        return RateResult(
            mode=mode, rate=rate, direct=_merge(runs["direct"], rate), gateway=_merge(runs["gateway"], rate)
        )

    async def _max_throughput(self, session: aiohttp.ClientSession) -> MaxThroughput:
        n = self.plan.max_concurrency
        self.say(f"max throughput: closed loop, {n} workers, {self.plan.max_duration_s:g} s per path")
        load = ClosedLoop(concurrency=n, duration_s=self.plan.max_duration_s)
        direct = await run_closed_loop(self.spec("direct", "non-stream"), load, session)
        gateway = await run_closed_loop(self.spec("gateway", "non-stream"), load, session)
        return MaxThroughput(concurrency=n, direct=direct.summary, gateway=gateway.summary)


def _merge(rounds: list[tuple[list[RequestResult], Summary]], rate: float) -> Summary:
    """One summary over several rounds of the same load: durations and drops add up."""
    results = [r for requests, _ in rounds for r in requests]
    return summarize(
        results,
        mode="open",
        offered_rate=rate,
        concurrency=rounds[0][1].concurrency,
        dropped=sum(s.dropped for _, s in rounds),
        max_in_flight=max(s.max_in_flight for _, s in rounds),
        duration_s=sum(s.duration_s for _, s in rounds),
    )


# --- reporting ----------------------------------------------------------------------------------


def _ms(value: float) -> str:
    return f"{value:.2f}"


def _verdict(ok: bool) -> str:
    return "[green]met[/green]" if ok else "[red]missed[/red]"


def _pair(a: float, b: float) -> str:
    return f"{a:.2f} / {b:.2f}"


def _rates_table(rows: list[RateResult]) -> Table:
    table = Table(title="Open loop (Poisson): direct vs through the gateway; ms, TTFT for streams")
    for name in ("mode", "req/s", "direct p50/p99", "gateway p50/p99", "added p50/p99", "thr gw/d", "err d/gw"):
        table.add_column(name, justify="right")
    table.add_column("drop d/gw", justify="right")
    for row in rows:
        d, g = row.direct, row.gateway
        table.add_row(
            row.mode,
            f"{row.rate:g}",
            _pair(row.p50(d), row.p99(d)),
            _pair(row.p50(g), row.p99(g)),
            _pair(row.added_p50_ms, row.added_p99_ms),
            f"{row.throughput_ratio:.3f}",
            f"{d.errors}/{g.errors}",
            f"{d.dropped}/{g.dropped}",
        )
    return table


def _max_table(peak: MaxThroughput) -> Table:
    table = Table(title=f"Closed loop, {peak.concurrency} workers, non-streaming: max throughput")
    for name in ("path", "req/s", "p50 ms", "p99 ms", "errors"):
        table.add_column(name, justify="right")
    for name, s in (("direct", peak.direct), ("gateway", peak.gateway)):
        table.add_row(name, f"{s.request_throughput:.0f}", _ms(s.p50_e2el_ms), _ms(s.p99_e2el_ms), str(s.errors))
    table.add_row("gw/direct", f"{peak.ratio:.3f}", "", "", "")
    return table


def _target_lines(report: OverheadReport) -> list[str]:
    lines: list[str] = []
    at = next((r for r in report.rates if r.mode == "non-stream" and r.rate == TARGET_RATE), None)
    if at is None:
        lines.append(f"added latency at {TARGET_RATE:g} req/s: not measured (add it to --rates)")
    elif at.gateway.errors or at.direct.errors or not at.gateway.completed:
        lines.append(f"added latency at {TARGET_RATE:g} req/s: [red]not valid, requests failed[/red]")
    else:
        ok50, ok99 = at.added_p50_ms <= TARGET_ADDED_P50_MS, at.added_p99_ms <= TARGET_ADDED_P99_MS
        lines.append(
            f"added p50 at {TARGET_RATE:g} req/s non-streaming: {at.added_p50_ms:.2f} ms "
            f"(target <= {TARGET_ADDED_P50_MS} ms) {_verdict(ok50)}"
        )
        lines.append(
            f"added p99 at {TARGET_RATE:g} req/s non-streaming: {at.added_p99_ms:.2f} ms "
            f"(target <= {TARGET_ADDED_P99_MS} ms) {_verdict(ok99)}"
        )
    peak = report.max_throughput
    if peak is not None:
        rps, errors = peak.gateway.request_throughput, peak.gateway.errors
        ok = rps >= TARGET_MAX_RPS and errors == 0
        lines.append(
            f"gateway max throughput: {rps:.0f} req/s, {errors} errors "
            f"(target >= {TARGET_MAX_RPS:.0f} req/s, no errors) {_verdict(ok)}"
        )
        if peak.direct.request_throughput < TARGET_MAX_RPS * 1.2:
            lines.append(
                "[yellow]note: the direct path barely beats the target; the load generator may be the limit[/yellow]"
            )
    if not report.pinned:
        lines.append("[yellow]note: fewer than 2 cores available; nothing was pinned[/yellow]")
    return lines


def render(report: OverheadReport, console: Console) -> None:
    """The tables and the targets."""
    console.print(f"direct: {report.direct_url}   gateway: {report.gateway_url}   pinned: {report.pinned}")
    console.print(_rates_table(report.rates))
    if report.max_throughput is not None:
        console.print(_max_table(report.max_throughput))
    for line in _target_lines(report):
        console.print(line)


# --- CLI ----------------------------------------------------------------------------------------


def _rates(text: str) -> list[float]:
    try:
        rates = [float(part) for part in text.split(",") if part.strip()]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from exc
    if not rates or any(rate <= 0 for rate in rates):
        raise argparse.ArgumentTypeError("rates must be positive")
    return rates


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of `thrifty bench overhead`."""
    parser.add_argument("--rates", type=_rates, default=[100.0, 400.0, 1000.0], help="req/s, comma-separated")
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per rate, mode and path")
    parser.add_argument("--rounds", type=int, default=2, help="alternating direct/gateway slices per rate")
    parser.add_argument("--tokens", type=int, default=8, help="output tokens per request")
    parser.add_argument("--api", choices=["chat", "completions"], default="chat")
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds of warm-up per path")
    parser.add_argument("--max-concurrency", type=int, default=64, help="workers of the max-throughput stage")
    parser.add_argument("--max-duration", type=float, default=3.0, help="seconds per path; 0 skips the stage")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--stub-url", default=None, help="use this backend instead of starting the stub")
    parser.add_argument(
        "--gateway-url",
        default=None,
        help="use this running gateway (routing model `stub` to --stub-url) instead of starting one; "
        "or a second stub, to check the bench itself (direct vs direct)",
    )
    parser.add_argument("--json", type=Path, default=None, help="write the results here")


def _plan(args: argparse.Namespace) -> BenchPlan:
    return BenchPlan(
        rates=args.rates,
        duration_s=args.duration,
        rounds=max(1, args.rounds),
        tokens=args.tokens,
        api=args.api,
        warmup_s=args.warmup,
        max_concurrency=args.max_concurrency,
        max_duration_s=args.max_duration,
        seed=args.seed,
    )


def _run_loop(bench: _Bench) -> tuple[list[RateResult], MaxThroughput | None]:
    try:
        import uvloop
    except ImportError:
        return asyncio.run(bench.measure())
    return uvloop.run(bench.measure())


def run(args: argparse.Namespace) -> int:
    """Start the stub and the gateway, measure, print, clean up; 0 when the run completed."""
    console = Console(width=None if sys.stdout.isatty() else 120)
    try:
        report = _measure(args, console)
    except ServiceError as exc:
        console.print(f"[red]{exc}[/red]")
        return 1
    except KeyboardInterrupt:
        console.print("[yellow]interrupted; the stub and the gateway were stopped[/yellow]")
        return 130
    render(report, console)
    if args.json is not None:
        args.json.write_bytes(msgspec.json.format(msgspec.json.encode(report)))
    return 0


def _measure(args: argparse.Namespace, console: Console) -> OverheadReport:
    plan, pin = _plan(args), _can_pin()
    with (
        _sigterm_as_exit(),
        _pinned_to(LOAD_CORE if pin else None),
        _services(args, plan, pin) as (direct_url, gateway_url),
    ):
        bench = _Bench(plan, direct_url, gateway_url, lambda text: console.print(f"[dim]{text}[/dim]"))
        rates, peak = _run_loop(bench)
    return OverheadReport(
        plan=plan, direct_url=direct_url, gateway_url=gateway_url, pinned=pin, rates=rates, max_throughput=peak
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gateway.bench.overhead", description=__doc__.split("\n")[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
