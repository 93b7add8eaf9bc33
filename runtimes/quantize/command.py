"""`thrifty quantize MODEL --scheme SCHEME -o DIR`: a quantized checkpoint that vLLM serves.

    thrifty quantize thrifty:tiny-py --scheme int8-w8a8 -o variants/tiny-py-int8
    python -m runtimes.quantize runtimes/model/tiny-py --scheme fp8 -o /tmp/tiny-fp8 --device cpu

Steps: check the target device's limits against the model's layer sizes (and refuse, saying
why, before any work); make sure the quantization environment exists (`environment`); draw the
calibration text (`calibration`); run the llmcompressor worker there (`runner`); copy the
tokenizer; write `variant.json`; print the sizes before and after. The checkpoint is assembled in
a temporary sibling directory and renamed into place at the end, so a failed run never leaves a
half-written checkpoint behind.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import cast

from rich.console import Console

from runtimes.config import BUNDLED_MODEL_PREFIX, resolve_weights
from runtimes.quantize.calibration import calibration_texts
from runtimes.quantize.environment import DEFAULT_VENV, VENV_ENV_VAR, QuantizeEnvError, ensure_environment
from runtimes.quantize.runner import WorkerError, WorkerRequest, WorkerResult, run_worker
from runtimes.quantize.schemes import DEVICES, SCHEMES, Device, Scheme, check_limits, unverified_note
from runtimes.variants import VariantManifest, now_iso, read_manifest, weight_bytes, write_manifest

__all__ = [
    "BUNDLED_MODEL",
    "QuantizeError",
    "QuantizeOptions",
    "QuantizeResult",
    "add_arguments",
    "quantize",
    "quantize_bundled",
    "run",
]

BUNDLED_MODEL = f"{BUNDLED_MODEL_PREFIX}tiny-py"
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "chat_template.jinja",
    "chat_template.json",
    "tokenizer.model",
    "vocab.json",
    "vocab.txt",
    "merges.txt",
)


class QuantizeError(RuntimeError):
    """Quantization was refused or failed; the message says why."""


@dataclass(frozen=True)
class QuantizeOptions:
    model: str
    """A local Hugging Face checkpoint directory, or `thrifty:<name>` for a bundled model."""
    scheme: str
    output: Path
    device: Device = "cpu"
    """The device the variant is meant for: its limits are checked before anything runs."""
    calibration: Path | None = None
    """A text file or directory; None for the stdlib training split."""
    samples: int = 256
    max_seq_len: int = 256
    seed: int = 0
    venv: Path | None = None
    log: Path | None = None
    """Where the worker's output goes (default `.thrifty/logs/quantize-<output name>.log`)."""
    force: bool = False
    """Replace an existing output directory."""


@dataclass(frozen=True)
class QuantizeResult:
    output: Path
    manifest: VariantManifest
    seconds: float
    log: Path


def quantize(options: QuantizeOptions, console: Console | None = None) -> QuantizeResult:
    """Make the variant; raises `QuantizeError` (limits, inputs, environment, worker) with the reason."""
    console = console or Console()
    started = time.monotonic()
    scheme, source = _preflight(options, console)
    output = options.output.absolute()
    log = (options.log or Path(".thrifty/logs") / f"quantize-{output.name}.log").absolute()
    console.print(f"[bold]quantize[/] {options.model} -> {scheme.name} ({scheme.summary}) for {options.device}")
    try:
        env = ensure_environment(options.venv, on_step=lambda step: console.print(f"  environment: {step}"))
    except QuantizeEnvError as exc:
        raise QuantizeError(str(exc)) from exc

    output.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{output.name}.", dir=output.parent) as tmp:
        staging, workdir = Path(tmp) / "checkpoint", Path(tmp) / "work"
        staging.mkdir()
        workdir.mkdir()
        calibration, calibration_source = _write_calibration(scheme, options, workdir)
        request = WorkerRequest(
            model=str(source),
            output=str(staging),
            recipe=scheme.recipe_json(),
            calibration=str(calibration) if calibration else None,
            max_seq_len=options.max_seq_len,
            seed=options.seed,
        )
        try:
            result = run_worker(env.python, request, workdir, log, console)
        except WorkerError as exc:
            raise QuantizeError(str(exc)) from exc
        manifest = VariantManifest(
            scheme=scheme.variant,
            reference=options.model if options.model.startswith(BUNDLED_MODEL_PREFIX) else str(source),
            size_bytes=weight_bytes(staging),
            reference_size_bytes=weight_bytes(source),
            created_at=now_iso(),
            method=_method(scheme, result, options.max_seq_len, calibration_source),
        )
        _complete(staging, source, manifest, output)

    seconds = time.monotonic() - started
    ratio = manifest.size_bytes / manifest.reference_size_bytes if manifest.reference_size_bytes else 0.0
    console.print(
        f"[bold green]done[/] in {seconds:.0f} s: {output}\n"
        f"  weights {_mb(manifest.reference_size_bytes)} -> {_mb(manifest.size_bytes)} ({ratio:.2f}x)\n"
        f"  {manifest.method}"
    )
    return QuantizeResult(output=output, manifest=manifest, seconds=seconds, log=log)


def _preflight(options: QuantizeOptions, console: Console) -> tuple[Scheme, Path]:
    """Everything that can refuse the run, checked before any time is spent."""
    scheme = SCHEMES.get(options.scheme)
    if scheme is None:
        raise QuantizeError(f"unknown scheme {options.scheme!r}; choose from {', '.join(SCHEMES)}")
    source = _model_dir(options.model)
    problems = check_limits(json.loads((source / "config.json").read_text()), scheme.name, options.device)
    if problems:
        listed = "\n".join(f"  - {problem}" for problem in problems)
        raise QuantizeError(f"{options.device} cannot run {scheme.name} of {options.model}:\n{listed}")
    if note := unverified_note(options.device):
        console.print(f"[yellow]note:[/] {note}")
    _check_output(options.output.absolute(), options.force)
    return scheme, source


def _write_calibration(scheme: Scheme, options: QuantizeOptions, workdir: Path) -> tuple[Path | None, str]:
    """The calibration texts as a JSON file for the worker, and where they came from; (None, '') if not needed."""
    if not scheme.calibrated:
        return None, ""
    try:
        calibration = calibration_texts(options.calibration, options.samples, options.seed)
    except ValueError as exc:
        raise QuantizeError(str(exc)) from exc
    path = workdir / "calibration.json"
    path.write_text(json.dumps(calibration.texts))
    return path, calibration.source


def _method(scheme: Scheme, result: WorkerResult, max_seq_len: int, calibration_source: str) -> str:
    method = f"llmcompressor {result.versions.get('llmcompressor', '?')}: {scheme.method}"
    if result.calibration_samples:
        method += (
            f", {result.calibration_samples} calibration samples ({result.calibration_tokens:,} tokens,"
            f" <= {max_seq_len} each) from {calibration_source}"
        )
    return method


def _complete(staging: Path, source: Path, manifest: VariantManifest, output: Path) -> None:
    """Tokenizer and manifest into the staged checkpoint, then move it into place."""
    _copy_tokenizer(source, staging)
    write_manifest(staging, manifest)
    for path in staging.iterdir():
        path.chmod(0o644)  # safetensors are written 0600; a checkpoint is for others to serve too
    if output.exists():  # only with --force (checked before the run)
        shutil.rmtree(output)
    staging.rename(output)


def quantize_bundled(
    scheme: str,
    out_dir: str | Path,
    *,
    samples: int = 128,
    max_seq_len: int = 256,
    venv: Path | None = None,
    console: Console | None = None,
) -> Path:
    """The bundled model (`thrifty:tiny-py`) at `scheme` in `out_dir`, for tests and fixtures.

    A checkpoint already there with the same scheme and reference is reused as it is, so callers
    that share a directory quantize once.
    """
    out = Path(out_dir)
    existing = read_manifest(out) if out.is_dir() else None
    if existing is not None and existing.scheme == SCHEMES[scheme].variant and existing.reference == BUNDLED_MODEL:
        return out
    options = QuantizeOptions(
        model=BUNDLED_MODEL,
        scheme=scheme,
        output=out,
        samples=samples,
        max_seq_len=max_seq_len,
        venv=venv,
        log=out.with_name(out.name + ".quantize.log"),
        force=True,
    )
    return quantize(options, console).output


def _model_dir(model: str) -> Path:
    path = Path(resolve_weights(model))
    if not (path / "config.json").is_file():
        raise QuantizeError(
            f"{model}: not a local Hugging Face checkpoint directory (no config.json);"
            " download hub models first, this command works offline"
        )
    return path.absolute()


def _check_output(output: Path, force: bool) -> None:
    if output.exists() and not output.is_dir():
        raise QuantizeError(f"{output} exists and is not a directory")
    if output.is_dir() and any(output.iterdir()) and not force:
        raise QuantizeError(f"{output} is not empty; pass --force to replace it")


def _copy_tokenizer(source: Path, target: Path) -> None:
    """The reference's own tokenizer files, byte for byte (a re-saved tokenizer can differ)."""
    for name in TOKENIZER_FILES:
        if (source / name).is_file():
            shutil.copy2(source / name, target / name)
    if (source / "generation_config.json").is_file() and not (target / "generation_config.json").exists():
        shutil.copy2(source / "generation_config.json", target / "generation_config.json")


def _mb(size: int) -> str:
    return f"{size / 1e6:.1f} MB"


# --- CLI ----------------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of `thrifty quantize`."""
    defaults = QuantizeOptions(model="", scheme="", output=Path())
    parser.add_argument("model", help="a local Hugging Face checkpoint directory, or thrifty:tiny-py")
    parser.add_argument("--scheme", required=True, choices=list(SCHEMES), help="what to quantize to")
    parser.add_argument("-o", "--output", required=True, type=Path, help="directory for the quantized checkpoint")
    parser.add_argument(
        "--device", choices=DEVICES, default=defaults.device, help="target device whose limits are checked"
    )
    parser.add_argument(
        "--calibration", type=Path, default=None, help="text file or directory (default: stdlib sources)"
    )
    parser.add_argument("--samples", type=int, default=defaults.samples, help="calibration samples")
    parser.add_argument("--max-seq-len", type=int, default=defaults.max_seq_len, help="tokens per sample, at most")
    parser.add_argument("--seed", type=int, default=defaults.seed, help="calibration sampling seed")
    parser.add_argument(
        "--venv",
        type=Path,
        default=None,
        help=f"the quantization environment, created on first use (default: ${VENV_ENV_VAR} or {DEFAULT_VENV})",
    )
    parser.add_argument("--log", type=Path, default=None, help="worker log file")
    parser.add_argument("--force", action="store_true", help="replace a non-empty output directory")


def run(args: argparse.Namespace) -> int:
    """`thrifty quantize`: 0 on success, 2 when refused or failed (the reason is printed)."""
    console = Console()
    options = QuantizeOptions(
        model=args.model,
        scheme=args.scheme,
        output=args.output,
        device=cast(Device, args.device),
        calibration=args.calibration,
        samples=args.samples,
        max_seq_len=args.max_seq_len,
        seed=args.seed,
        venv=args.venv,
        log=args.log,
        force=args.force,
    )
    try:
        quantize(options, console)
    except QuantizeError as exc:
        console.print(f"[bold red]quantize:[/] {exc}", highlight=False)
        return 2
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m runtimes.quantize", description=__doc__.splitlines()[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))
