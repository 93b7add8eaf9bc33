"""A vLLM server started for one evaluation, on a free local port, and always stopped afterwards.

The server runs in a session of its own, so that it and the EngineCore process it spawns form
one process group: stopping signals the whole group, and nothing is left behind.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Self

from runtimes.config import VllmEngineConfig
from runtimes.engines.vllm import build_vllm_launch
from runtimes.process_group import group_alive, signal_group
from runtimes.providers.local import free_port

__all__ = ["EngineStartError", "LocalEngine", "split_cores"]

log = logging.getLogger(__name__)

_HOST = "127.0.0.1"
_POLL_S = 0.5
_LOG_TAIL_BYTES = 3000


class EngineStartError(RuntimeError):
    """The engine exited or did not answer /health in time; the message ends with its log."""


class LocalEngine:
    """`with LocalEngine(config, "reference", log_dir) as engine: engine.wait_ready(); use(engine.url)`.

    Entering starts the process and returns at once, so that several engines start side by side;
    `wait_ready` then blocks until /health answers.
    """

    def __init__(self, engine: VllmEngineConfig, name: str, log_dir: Path, python: str = sys.executable) -> None:
        self.engine = engine
        self.name = name
        self.port = free_port(_HOST)
        self.url = f"http://{_HOST}:{self.port}"
        self.log_path = log_dir / f"eval-{name}.log"
        self._python = python
        self._process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()

    @property
    def pgid(self) -> int:
        """The process group of the server and its workers (the server leads it)."""
        assert self._process is not None, "not started"
        return self._process.pid

    def start(self) -> None:
        spec = build_vllm_launch(self.engine, self.name, _HOST, self.port, self._python)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("wb") as output:
            self._process = subprocess.Popen(
                spec.argv, env=os.environ | spec.env, stdin=subprocess.DEVNULL, stdout=output,
                stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        log.info("%s: starting on port %d (pid %d, log %s)", self.name, self.port, self.pgid, self.log_path)

    def wait_ready(self) -> None:
        """Block until /health answers 200; raise if the server exits or the startup deadline passes."""
        assert self._process is not None, "not started"
        started = time.monotonic()
        deadline = started + self.engine.startup_timeout_s
        while not self._healthy():
            if self._process.poll() is not None:
                raise EngineStartError(f"{self.name} exited with code {self._process.returncode}{self._log_tail()}")
            if time.monotonic() > deadline:
                raise EngineStartError(
                    f"{self.name} not ready within {self.engine.startup_timeout_s:.0f} s{self._log_tail()}"
                )
            time.sleep(_POLL_S)
        log.info("%s: ready at %s after %.0f s", self.name, self.url, time.monotonic() - started)

    def stop(self, grace_s: float = 15.0) -> None:
        """SIGTERM the process group, SIGKILL what is left after `grace_s`, and reap the server."""
        if self._process is None:
            return
        signal_group(self.pgid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self._process.wait(grace_s)
        deadline = time.monotonic() + grace_s
        while group_alive(self.pgid) and time.monotonic() < deadline:
            time.sleep(0.1)
        signal_group(self.pgid, signal.SIGKILL)
        self._process.wait()
        log.info("%s: stopped", self.name)

    def _healthy(self) -> bool:
        try:
            with urllib.request.urlopen(self.url + "/health", timeout=2) as response:
                return bool(response.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def _log_tail(self) -> str:
        with self.log_path.open("rb") as output:
            output.seek(max(output.seek(0, os.SEEK_END) - _LOG_TAIL_BYTES, 0))
            return f"; the end of {self.log_path}:\n" + output.read().decode(errors="replace")


def split_cores(parts: int) -> list[str | None]:
    """This process's cores split into `parts` lists (e.g. `0,1` and `2,3`) so engines do not contend.

    None for every part when there are fewer cores than parts: each engine then uses them all.
    """
    cores = sorted(os.sched_getaffinity(0))
    if parts < 2 or len(cores) < parts:
        return [None] * parts
    share = len(cores) // parts
    return [",".join(str(core) for core in cores[i * share : (i + 1) * share]) for i in range(parts)]
