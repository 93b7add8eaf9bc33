"""Runs the quantization worker in its environment and shows its progress.

The worker (`runtimes/quantize/worker.py`) gets a request file and writes a result file; its
stdout carries progress events (one JSON object a line), its stderr (library logs, tqdm bars)
goes to a log file. Phases are printed as they start; calibration shows a progress bar over the
decoder layers.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

__all__ = ["WORKER_SCRIPT", "WorkerError", "WorkerRequest", "WorkerResult", "run_worker"]

WORKER_SCRIPT = Path(__file__).with_name("worker.py")
LOG_TAIL_LINES = 25


class WorkerRequest(msgspec.Struct, frozen=True, kw_only=True):
    """What the worker reads (see `worker.quantize`)."""

    model: str
    output: str
    recipe: list[dict[str, Any]]
    calibration: str | None
    """A JSON file holding a list of texts; None for a data-free recipe."""
    max_seq_len: int
    seed: int
    threads: int | None = None


class WorkerResult(msgspec.Struct, frozen=True, kw_only=True):
    calibration_samples: int
    calibration_tokens: int
    seconds: float
    versions: dict[str, str]


class _Event(msgspec.Struct, frozen=True, kw_only=True):
    event: str
    t: float = 0.0
    phase: str = ""
    detail: str = ""
    index: int = 0
    total: int = 0
    calls: int = 0
    layers: int = 0
    samples: int = 0
    tokens: int = 0


_event_decoder = msgspec.json.Decoder(_Event)


class WorkerError(RuntimeError):
    """The worker failed; the message carries the end of its log."""


@dataclass
class _Display:
    """Turns events into printed phases and a layer progress bar."""

    console: Console
    progress: Progress
    samples: int = 0
    task: TaskID | None = None

    def handle(self, event: _Event) -> None:
        if event.event == "phase":
            self._finish_bar()
            self.console.print(f"  [{event.t:6.1f}s] {self._describe(event)}")
            if event.phase == "quantize" and event.samples and event.layers:
                self.samples = event.samples
                self.task = self.progress.add_task("calibrating layers", total=event.layers)
        elif event.event == "layer" and self.task is not None:
            # Each layer runs twice per sample (calibrate, then propagate): count layers done.
            fraction = min(event.calls / (2 * self.samples), 1.0)
            self.progress.update(self.task, completed=event.index + fraction)
        elif event.event == "done":
            self._finish_bar()

    def _finish_bar(self) -> None:
        if self.task is not None:
            total = self.progress.tasks[self.task].total
            self.progress.update(self.task, completed=total)
            self.progress.stop_task(self.task)
            self.task = None

    @staticmethod
    def _describe(event: _Event) -> str:
        if event.phase == "load":
            return f"loading {event.detail}"
        if event.phase == "quantize":
            if event.samples:
                return (
                    f"quantizing {event.layers} layers, calibrating on {event.samples} samples"
                    f" ({event.tokens:,} tokens)"
                )
            return f"quantizing {event.layers} layers (no calibration data needed)"
        if event.phase == "save":
            return "saving the compressed checkpoint"
        return event.phase


def run_worker(python: Path, request: WorkerRequest, workdir: Path, log_path: Path, console: Console) -> WorkerResult:
    """Run one quantization in `python`'s environment; raises `WorkerError` with the log's tail on failure."""
    request_path, result_path = workdir / "request.json", workdir / "result.json"
    request_path.write_bytes(msgspec.json.encode(request))
    log_path.parent.mkdir(parents=True, exist_ok=True)
    env = {key: value for key, value in os.environ.items() if key not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env |= {"HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    # Idle OpenMP threads sleep instead of spinning: on a shared 2-core host, spinning threads made
    # GPTQ calibration 3-4x slower whenever another process wanted the cores.
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    argv = [str(python), "-I", str(WORKER_SCRIPT), str(request_path), str(result_path)]
    started = time.monotonic()
    columns = (TextColumn("  {task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with (
        log_path.open("w") as log,
        Progress(*columns, console=console, transient=True) as progress,
        subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=log, env=env, text=True
        ) as process,
    ):
        assert process.stdout is not None
        display = _Display(console, progress)
        try:
            for line in process.stdout:
                try:
                    event = _event_decoder.decode(line)
                except msgspec.DecodeError:
                    log.write(line)  # not an event: keep it with the rest of the output
                    continue
                display.handle(event)
        except BaseException:
            process.kill()
            raise
        code = process.wait()
    if code != 0 or not result_path.is_file():
        raise WorkerError(
            f"the quantization worker failed (exit {code}) after {time.monotonic() - started:.0f} s;"
            f" log: {log_path}\n{_tail(log_path)}"
        )
    return msgspec.json.decode(result_path.read_bytes(), type=WorkerResult)


def _tail(path: Path) -> str:
    with contextlib.suppress(OSError):
        text = path.read_text(errors="replace").replace("\r", "\n")
        lines = [line for line in text.splitlines() if line.strip()]
        return "\n".join(lines[-LOG_TAIL_LINES:])
    return ""
