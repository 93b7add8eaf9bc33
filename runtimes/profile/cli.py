"""`thrifty profile`: a load sweep of a URL (or of one instance of a configured pool) into a profile file.

    python -m runtimes.profile --url http://127.0.0.1:9001 --model tiny-py \\
        --slo-ttft-ms 2000 --slo-tpot-ms 200 --price 0.10 --concurrency 1,2,4,8 -o profile.json --plot plots/
    python -m runtimes.profile hardware --device cpu --checkpoint runtimes/model/tiny-py

`--config FILE --pool NAME` needs the config loaded and checked, which is the gateway's job:
the `thrifty` CLI passes `run` a `load_pool` callback that returns a `PoolTarget`.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import importlib.util
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

import msgspec
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from runtimes.accelerators import CATALOG
from runtimes.profile.capacity import infeasibility
from runtimes.profile.hardware_cli import add_hardware_arguments, run_hardware
from runtimes.profile.instance import PoolTarget, profile_pool
from runtimes.profile.metrics import Timing
from runtimes.profile.profile_file import SLO, Level, Profile, Workload, save_profile, validate
from runtimes.profile.sweep import ProfileError, SweepObserver, SweepPlan, Target, profile_url

__all__ = ["LoadPool", "add_arguments", "build_parser", "main", "run"]

LoadPool = Callable[[str, str], PoolTarget]
"""(config file, pool name) -> the pool with its price and its model's SLO; raises ValueError if unknown."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    target = parser.add_argument_group("what to profile: --url and --model, or --config and --pool")
    target.add_argument("--url", help="an OpenAI-compatible server's root, e.g. http://127.0.0.1:9001")
    target.add_argument("--model", help="the model name to request (with --url)")
    target.add_argument("--config", help="a thrifty config file: start one instance of --pool locally")
    target.add_argument("--pool", help="the pool to profile (with --config)")
    target.add_argument("--accelerator", help="catalog entry recorded in the profile; its price is the default")
    target.add_argument("--variant", help="precision served, recorded in the profile (with --url)")
    target.add_argument("--instances", type=int, default=1, help="instances behind --url (capacity is per instance)")
    load = parser.add_argument_group("load")
    load.add_argument("--concurrency", type=_ints, help="closed-loop levels, e.g. 1,2,4,8 (default when no --rates)")
    load.add_argument("--rates", type=_floats, help="open-loop levels in requests/s, e.g. 0.5,1,2")
    load.add_argument("--requests", type=int, help="requests per level (default 32 unless --duration)")
    load.add_argument("--duration", type=float, help="seconds per level")
    load.add_argument("--max-concurrency", type=int, default=256, help="open loop: in-flight cap")
    load.add_argument("--prompt-tokens", type=int, default=256)
    load.add_argument("--output-tokens", type=int, default=128)
    load.add_argument("--api", choices=["completions", "chat"], default="completions")
    load.add_argument("--no-ignore-eos", dest="ignore_eos", action="store_false",
                      help="servers other than vLLM may reject `ignore_eos`")  # fmt: skip
    load.add_argument("--seed", type=int, default=0)
    judge = parser.add_argument_group("judging")
    judge.add_argument("--slo-ttft-ms", type=float, help="TTFT p95 objective (default: the model's, with --config)")
    judge.add_argument("--slo-tpot-ms", type=float, help="TPOT p95 objective (default: the model's, with --config)")
    judge.add_argument("--price", type=float, help="USD per instance-hour (default: the pool's or accelerator's)")
    out = parser.add_argument_group("output")
    out.add_argument("-o", "--output", type=Path, default=Path("profile.json"))
    out.add_argument("--plot", type=Path, metavar="DIR", help="write PNG curves here")


def run(args: argparse.Namespace, load_pool: LoadPool | None = None) -> int:
    """Profile, save, print; 0 when the profile can serve as the optimizer's prior, 1 when not, 2 on bad usage."""
    console = Console(stderr=True)
    try:
        sweep = _sweep(args, load_pool)
    except ValueError as exc:  # msgspec.ValidationError is one
        console.print(f"[red]bad arguments:[/red] {exc}")
        return 2
    try:
        profile = asyncio.run(_with_progress(sweep, console))
    except (ProfileError, ValueError) as exc:
        console.print(f"[red]profile failed:[/red] {exc}")
        return 1
    save_profile(profile, args.output)
    Console(width=None if sys.stdout.isatty() else 160).print(summary_table(profile))  # files and pipes: no wrap
    if args.plot is not None:
        from runtimes.profile.plots import plot_profile

        for path in plot_profile(profile, args.plot):
            console.print(f"plot: {path}")
    problems = validate(profile)
    if problems:
        console.print(f"profile: {args.output} [red]is not usable as a prior:[/red] {'; '.join(problems)}")
        return 1
    console.print(f"profile: {args.output}")
    return 0


Sweep = Callable[[SweepObserver], Awaitable[Profile]]


def _sweep(args: argparse.Namespace, load_pool: LoadPool | None) -> Sweep:
    """The whole profile run, with every argument checked before anything starts."""
    workload = msgspec.convert(
        {"prompt_tokens": args.prompt_tokens, "output_tokens": args.output_tokens, "api": args.api,
         "ignore_eos": args.ignore_eos},
        Workload,
    )  # fmt: skip
    plan = _plan(args)
    if args.plot is not None and importlib.util.find_spec("matplotlib") is None:
        raise ValueError("--plot needs matplotlib, which is not installed")
    if args.config is None:
        target, slo = _url_target(args), _slo(args, None)
        return lambda observer: profile_url(target, workload, plan, slo, observer)
    pool = _pool_target(args, load_pool)
    pool_slo = _slo(args, pool.slo)
    if args.price is not None:
        pool = dataclasses.replace(pool, price_per_hour=args.price)
    return lambda observer: profile_pool(pool, workload, plan, pool_slo, observer)


def _plan(args: argparse.Namespace) -> SweepPlan:
    requests = args.requests if args.requests is not None or args.duration is not None else 32
    fields = {
        "concurrency": args.concurrency or ([] if args.rates else [1, 2, 4, 8]),
        "rates": args.rates or [],
        "requests": requests,
        "duration_s": args.duration,
        "max_concurrency": args.max_concurrency,
        "seed": args.seed,
    }
    return msgspec.convert(fields, SweepPlan)


def _pool_target(args: argparse.Namespace, load_pool: LoadPool | None) -> PoolTarget:
    if load_pool is None:
        raise ValueError("--config works through the `thrifty profile` command; here, profile a --url")
    if not args.pool:
        raise ValueError("--config needs --pool")
    return load_pool(args.config, args.pool)


def _url_target(args: argparse.Namespace) -> Target:
    if not args.url or not args.model:
        raise ValueError("give --url and --model, or --config and --pool")
    price = args.price
    if price is None and args.accelerator is not None:
        if args.accelerator not in CATALOG:
            raise ValueError(f"unknown accelerator {args.accelerator!r} (known: {', '.join(sorted(CATALOG))})")
        price = CATALOG[args.accelerator].price_per_hour
    return Target(
        base_url=args.url,
        model=args.model,
        accelerator=args.accelerator,
        variant=args.variant,
        price_per_hour=price,
        instances=args.instances,
    )


def _slo(args: argparse.Namespace, model_slo: SLO | None) -> SLO:
    """The flags' SLO, each objective defaulting to the model's when the config gives one."""
    ttft, tpot = args.slo_ttft_ms, args.slo_tpot_ms
    if model_slo is not None:
        ttft = model_slo.ttft_p95_ms if ttft is None else ttft
        tpot = model_slo.tpot_p95_ms if tpot is None else tpot
    if ttft is None or tpot is None:
        raise ValueError("give --slo-ttft-ms and --slo-tpot-ms (with --config they default to the model's)")
    return msgspec.convert({"ttft_p95_ms": ttft, "tpot_p95_ms": tpot}, SLO)


async def _with_progress(sweep: Sweep, console: Console) -> Profile:
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), console=console) as progress:  # fmt: skip
        return await sweep(_ProgressObserver(progress))


class _ProgressObserver:
    """One progress bar per level, completed requests counted as they finish."""

    def __init__(self, progress: Progress) -> None:
        self._progress = progress
        self._calibrating: TaskID | None = progress.add_task("starting (instance, prompt calibration)", total=None)
        self._task: TaskID | None = None

    def level_started(self, label: str, requests: int | None, duration_s: float | None) -> None:
        if self._calibrating is not None:
            self._progress.remove_task(self._calibrating)
            self._calibrating = None
        self._task = self._progress.add_task(label, total=requests if duration_s is None else None)

    def request_finished(self, timing: Timing) -> None:
        if self._task is not None:
            self._progress.advance(self._task)

    def level_finished(self, level: Level) -> None:
        if self._task is None:
            return
        m = level.metrics
        description = (
            f"{level.label}: {m.request_throughput:.2f} req/s, {m.output_throughput:.0f} tok/s, "
            f"TTFT p95 {m.p95_ttft_ms:.0f} ms, TPOT p95 {m.p95_tpot_ms:.1f} ms"
        )
        self._progress.update(self._task, description=description, total=m.completed + m.failed)


def summary_table(profile: Profile) -> Table:
    """Per level: throughput, goodput, latency percentiles, and whether it met the SLO; then the capacity."""
    slo = profile.slo
    table = Table(title=f"{profile.model} @ {profile.pool or profile.base_url}: SLO TTFT p95 {slo.ttft_p95_ms:g} ms, "
                        f"TPOT p95 {slo.tpot_p95_ms:g} ms")  # fmt: skip
    for column in ("level", "req/s", "out tok/s", "goodput", "TTFT p50", "TTFT p95", "TPOT p95", "ITL p95",
                   "E2EL p95", "failed", "SLO"):  # fmt: skip
        table.add_column(column, justify="left" if column in ("level", "SLO") else "right")
    for level in profile.levels:
        m = level.metrics
        why = infeasibility(m, slo)
        table.add_row(
            level.label, f"{m.request_throughput:.2f}", f"{m.output_throughput:.1f}", f"{m.request_goodput:.2f}",
            f"{m.p50_ttft_ms:.0f}", f"{m.p95_ttft_ms:.0f}", f"{m.p95_tpot_ms:.1f}", f"{m.p95_itl_ms:.1f}",
            f"{m.p95_e2el_ms:.0f}", str(m.failed), "[green]met[/green]" if why is None else f"[red]{why}[/red]",
        )  # fmt: skip
    capacity = profile.capacity
    if capacity is None:
        table.caption = "[red]no level met the SLO: no capacity[/red]"
    else:
        per_dollar = f", {capacity.tokens_per_dollar:,.0f} tokens/$" if capacity.tokens_per_dollar else ""
        table.caption = (
            f"capacity per instance ({capacity.level}): {capacity.request_throughput:.2f} req/s, "
            f"{capacity.output_throughput:.1f} output tok/s{per_dollar}"
        )
    return table


def build_parser(load_pool: LoadPool | None = None) -> argparse.ArgumentParser:
    """`profile [options]` and `profile hardware [options]`: the wiring `thrifty profile` uses too."""
    parser = argparse.ArgumentParser(prog="python -m runtimes.profile", description=__doc__.split("\n")[0])
    add_arguments(parser)
    parser.set_defaults(run=lambda args: run(args, load_pool))
    commands = parser.add_subparsers(title="commands")
    hardware = commands.add_parser("hardware", help="bandwidth and matmul microbenchmarks, and the decode roofline")
    add_hardware_arguments(hardware)
    hardware.set_defaults(run=run_hardware)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    code: int = args.run(args)
    return code


def _ints(text: str) -> list[int]:
    return [int(part) for part in text.split(",") if part.strip()]


def _floats(text: str) -> list[float]:
    return [float(part) for part in text.split(",") if part.strip()]


if __name__ == "__main__":
    sys.exit(main())
