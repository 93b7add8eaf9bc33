"""`thrifty simulate SCENARIO`: every policy on the same simulated traffic, as a table, JSON and plots.

    python -m optimizer.simulate steady-chat --duration 900 --plots plots/ --json run.json
    python -m optimizer.simulate my-scenario.yaml --policies thrifty,melange,oracle

SCENARIO is a shipped scenario's name (`--list` shows them) or a YAML file.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from rich.console import Console

from optimizer.simulate.scenario import ScenarioError, load_scenario, shipped_scenarios

__all__ = ["add_arguments", "main", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("scenario", nargs="?", help="a shipped scenario's name or a scenario YAML file")
    parser.add_argument("--list", action="store_true", help="list the shipped scenarios and exit")
    parser.add_argument("--duration", type=float, help="seconds of arrivals (default: the scenario's)")
    parser.add_argument("--seed", type=int, help="seed of arrivals, lengths and routing (default: the scenario's)")
    parser.add_argument("--policies", type=_names, help="comma-separated subset, e.g. thrifty,melange,oracle")
    parser.add_argument("--plots", type=Path, metavar="DIR", help="write PNG plots here")
    parser.add_argument("--json", type=Path, metavar="PATH", help="write the results and time series here")


def run(args: argparse.Namespace) -> int:
    """Simulate, print, write; 0 on success, 2 on a bad scenario or arguments."""
    from optimizer.simulate.plots import plot_report
    from optimizer.simulate.report import build_report, results_table, write_json
    from optimizer.simulate.runner import DEFAULT_POLICIES, run_scenario

    console = Console(stderr=True)
    if args.list:
        Console().print("\n".join(shipped_scenarios()))
        return 0
    if not args.scenario:
        console.print("[red]bad arguments:[/red] name a scenario (or --list)")
        return 2
    if args.duration is not None and args.duration <= 0:
        console.print("[red]bad arguments:[/red] --duration must be positive")
        return 2
    started = time.perf_counter()
    try:
        scenario = load_scenario(args.scenario)
        result = run_scenario(
            scenario,
            policies=args.policies or DEFAULT_POLICIES,
            duration_s=args.duration,
            seed=args.seed,
            progress=lambda line: console.print(f"[dim]{line}[/dim]"),
        )
    except (ScenarioError, ValueError) as exc:
        console.print(f"[red]cannot simulate:[/red] {exc}")
        return 2
    report = build_report(result)
    Console(width=None if sys.stdout.isatty() else 160).print(results_table(report))
    for r in report.results:
        for note in r.notes[:5]:
            console.print(f"[yellow]{r.policy}:[/yellow] {note}")
        if len(r.notes) > 5:
            console.print(f"[yellow]{r.policy}:[/yellow] ... {len(r.notes) - 5} more")
    if args.json is not None:
        console.print(f"json: {write_json(report, args.json)}")
    if args.plots is not None:
        for path in plot_report(report, args.plots):
            console.print(f"plot: {path}")
    console.print(f"wall time: {time.perf_counter() - started:.1f}s")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="thrifty simulate", description=__doc__.splitlines()[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


def _names(text: str) -> list[str]:
    names = [part.strip() for part in text.split(",") if part.strip()]
    if not names:
        raise argparse.ArgumentTypeError("name at least one policy")
    return names
