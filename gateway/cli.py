"""The `thrifty` command."""

from __future__ import annotations

import argparse
import functools
import sys
from pathlib import Path

import msgspec

from gateway.bench import overhead as overhead_bench
from gateway.config import ConfigError, default_config_text, load_config
from observability.logs import configure_logging
from optimizer.simulate import cli as simulate_cli
from runtimes.profile import cli as profile_cli
from runtimes.profile import hardware_cli
from runtimes.profile.instance import PoolTarget
from runtimes.profile.profile_file import SLO
from runtimes.quality import command as eval_command
from runtimes.quantize import bench as quantize_bench
from runtimes.quantize import command as quantize_command

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "run"):
        parser.print_help()
        return 2
    code: int = args.run(args)
    return code


def _serve(args: argparse.Namespace) -> int:
    configure_logging(args.log_level)
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    from gateway.server import serve  # imported late: `config check` needs no server stack

    serve(config, log_level=args.log_level.lower(), config_path=args.config)
    return 0


def _config_check(args: argparse.Namespace) -> int:
    try:
        config = load_config(args.file)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 1
    print(f"{args.file or '<default>'}: ok ({len(config.models)} models, {len(config.pools)} pools)")
    return 0


def _config_show_default(_: argparse.Namespace) -> int:
    print(default_config_text(), end="")
    return 0


def _profile_target(path: str, name: str) -> PoolTarget:
    """What `thrifty profile --config FILE --pool NAME` needs of the config."""
    try:
        config = load_config(path)
    except ConfigError as exc:
        raise ValueError(str(exc)) from exc
    pool = next((p for p in config.pools if p.name == name), None)
    if pool is None:
        raise ValueError(f"no pool {name!r} in {path}")
    slo = next(m for m in config.models if m.name == pool.model).slo
    return PoolTarget(
        pool=pool,
        price_per_hour=config.price_per_hour(pool),
        slo=SLO(ttft_p95_ms=slo.ttft_p95_ms, tpot_p95_ms=slo.tpot_p95_ms),
        local=config.providers.local,
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="thrifty", description="An inference gateway for the most tokens per dollar.")
    commands = parser.add_subparsers(title="commands")

    serve = commands.add_parser("serve", help="run the gateway")
    serve.add_argument("--config", help="YAML config file (default: the embedded default)")
    serve.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    serve.set_defaults(run=_serve)

    config = commands.add_parser("config", help="check or show config files").add_subparsers(title="config commands")
    check = config.add_parser("check", help="validate a config file and print every problem with its path")
    check.add_argument("file", nargs="?", help="YAML config file (default: the embedded default)")
    check.set_defaults(run=_config_check)
    show = config.add_parser("default", help="print the embedded default config")
    show.set_defaults(run=_config_show_default)

    bench = commands.add_parser("bench", help="benchmarks").add_subparsers(title="benchmarks")
    overhead = bench.add_parser("overhead", help="gateway overhead against a stub backend, direct vs through")
    overhead_bench.add_arguments(overhead)
    overhead.set_defaults(run=overhead_bench.run)
    quantized = bench.add_parser("quantize", help="decode speed of each quantization scheme against bf16 on vllm")
    quantize_bench.add_arguments(quantized)
    quantized.set_defaults(run=quantize_bench.run)

    quantize = commands.add_parser("quantize", help="an INT8, INT4 or FP8 variant of a checkpoint that vLLM serves")
    quantize_command.add_arguments(quantize)
    quantize.set_defaults(run=quantize_command.run)

    evaluate = commands.add_parser("eval", help="a variant's quality loss against its reference, through vLLM")
    eval_command.add_arguments(evaluate)
    evaluate.set_defaults(run=eval_command.run)

    profile = commands.add_parser("profile", help="load sweep of a URL or a pool into a profile file")
    profile_cli.add_arguments(profile)
    profile.set_defaults(run=functools.partial(profile_cli.run, load_pool=_profile_target))
    hardware = profile.add_subparsers(title="profile commands").add_parser(
        "hardware", help="memory bandwidth and matmul microbenchmarks, and the decode roofline"
    )
    hardware_cli.add_hardware_arguments(hardware)
    hardware.set_defaults(run=hardware_cli.run_hardware)

    optimize = commands.add_parser("optimize", help="the optimizer offline").add_subparsers(title="optimize commands")
    replay_command = optimize.add_parser("replay", help="replay a recorded trace through the optimizer's tick")
    replay_command.add_argument("trace", help="JSON lines of request records (optimizer.record_path) or OTLP exports")
    replay_command.add_argument("--config", help="YAML config file (default: the embedded default)")
    replay_command.add_argument("--interval", type=float, help="seconds of trace time between ticks (default: policy)")
    replay_command.add_argument("--json", help="write every decision to this file as JSON")
    replay_command.set_defaults(run=_replay)

    simulate = commands.add_parser("simulate", help="the optimizer against baselines on a simulated GPU/TPU/CPU fleet")
    simulate_cli.add_arguments(simulate)
    simulate.set_defaults(run=simulate_cli.run)
    return parser


def _replay(args: argparse.Namespace) -> int:
    from optimizer.replay import replay  # imported late: the other commands need no solver
    from optimizer.setup import build_setup
    from optimizer.traces import TraceFileError, read_records

    try:
        config = load_config(args.config)
        records = list(read_records(args.trace))
    except (ConfigError, TraceFileError, OSError) as exc:
        print(exc, file=sys.stderr)
        return 2
    setup = build_setup(config.optimizer, config.models, config.pools, config.catalog(), config.price_per_hour)
    results = replay(records, setup, args.interval)
    start = results[0].decision.at if results else 0.0
    for result in results:
        decision = result.decision
        print(f"+{decision.at - start:7.1f}s  {decision.summary}")
    if results:
        final = results[-1].plan
        print(f"final plan: weights {_rounded(final.weights)}, targets {final.targets}, ${final.cost_per_hour:.2f}/h")
    if args.json:
        Path(args.json).write_bytes(msgspec.json.encode([result.decision for result in results]))
    print(f"{len(records)} records, {len(results)} ticks")
    return 0


def _rounded(weights: dict[str, float]) -> dict[str, float]:
    return {name: round(value, 3) for name, value in weights.items()}
