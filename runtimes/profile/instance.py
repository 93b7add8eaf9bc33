"""One instance of a configured pool on this host, started as the local provider starts one, for a profile.

The instance runs under `runtimes.guard` in a session of its own (`start_new_session`), so the
engine and its EngineCore child share one process group: the guard takes the group down if this
process dies, and `running_instance` signals the whole group when it stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

from runtimes.config import LocalProviderConfig, PoolConfig, VllmEngineConfig
from runtimes.engines.vllm import build_vllm_launch
from runtimes.process_group import group_alive, signal_group
from runtimes.profile.profile_file import SLO, Profile, Workload
from runtimes.profile.sweep import ProfileError, SweepObserver, SweepPlan, Target, profile_url
from runtimes.providers.local import free_port

__all__ = ["PoolTarget", "profile_pool", "running_instance"]

_HOST = "127.0.0.1"
_POLL_S = 0.5


@dataclass(frozen=True)
class PoolTarget:
    """A pool as the config defines it, with what the config says about its price and model's SLO."""

    pool: PoolConfig
    price_per_hour: float
    slo: SLO
    local: LocalProviderConfig = field(default_factory=LocalProviderConfig)
    """Where instance logs go, which interpreter runs vLLM, the stop grace period."""


async def profile_pool(
    target: PoolTarget,
    workload: Workload,
    plan: SweepPlan,
    slo: SLO | None = None,
    observer: SweepObserver | None = None,
) -> Profile:
    """Start one instance of the pool, profile it (against the model's SLO unless `slo` is given), stop it."""
    pool = target.pool
    async with running_instance(pool, target.local) as base_url:
        subject = Target(
            base_url=base_url,
            model=pool.model,
            pool=pool.name,
            accelerator=pool.accelerator,
            variant=pool.engine.variant,
            price_per_hour=target.price_per_hour,
        )
        return await profile_url(subject, workload, plan, slo or target.slo, observer)


@contextlib.asynccontextmanager
async def running_instance(pool: PoolConfig, local: LocalProviderConfig) -> AsyncIterator[str]:
    """A ready instance of a vllm pool on a free port; yields its base URL and stops its process group after."""
    engine = pool.engine
    if not isinstance(engine, VllmEngineConfig):
        raise ProfileError(f"pool {pool.name!r}: only vllm pools can be started here; profile an openai pool by URL")
    port = free_port(_HOST)
    log_path = Path(local.log_dir) / f"profile-{pool.name}.log"
    process = await _spawn(pool, engine, local, port, log_path)
    url = f"http://{_HOST}:{port}"
    try:
        await _wait_ready(url, pool.model, process, engine.startup_timeout_s, log_path)
        yield url
    finally:
        await _stop(process, local.stop_grace_s)


async def _spawn(
    pool: PoolConfig, engine: VllmEngineConfig, local: LocalProviderConfig, port: int, log_path: Path
) -> asyncio.subprocess.Process:
    python = local.python or sys.executable
    spec = build_vllm_launch(engine, pool.model, _HOST, port, python)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log_file:
        return await asyncio.create_subprocess_exec(
            python, "-m", "runtimes.guard", "--parent", str(os.getpid()), "--grace", str(local.stop_grace_s), "--",
            *spec.argv,
            stdin=asyncio.subprocess.DEVNULL, stdout=log_file, stderr=asyncio.subprocess.STDOUT,
            env=os.environ | spec.env, start_new_session=True,
        )  # fmt: skip


async def _wait_ready(
    url: str, model: str, process: asyncio.subprocess.Process, timeout_s: float, log_path: Path
) -> None:
    """Poll health and the model list until both answer; raise if the process exits or the deadline passes."""
    deadline = time.monotonic() + timeout_s
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
        while not await _answers(session, url, model):
            if process.returncode is not None:
                raise ProfileError(f"the instance exited with {process.returncode}:\n{_tail(log_path)}")
            if time.monotonic() > deadline:
                raise ProfileError(f"the instance was not ready within {timeout_s:.0f} s:\n{_tail(log_path)}")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(process.wait(), _POLL_S)


async def _answers(session: aiohttp.ClientSession, url: str, model: str) -> bool:
    try:
        async with session.get(url + "/health") as health:
            if health.status != 200:
                return False
        async with session.get(url + "/v1/models") as models:
            listed = await models.json() if models.status == 200 else {}
    except (aiohttp.ClientError, TimeoutError, ValueError):
        return False  # not listening yet
    return any(entry.get("id") == model for entry in listed.get("data", []))


async def _stop(process: asyncio.subprocess.Process, grace_s: float) -> None:
    """SIGTERM the guard (it stops its group); then SIGTERM and SIGKILL whatever of the group is left."""
    if process.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGTERM)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(process.wait(), grace_s + 5)
    group = process.pid  # the guard leads the group: its pid is the group id
    for signum in (signal.SIGTERM, signal.SIGKILL):
        if not group_alive(group):
            break
        signal_group(group, signum)
        deadline = time.monotonic() + grace_s
        while group_alive(group) and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
    if process.returncode is None:
        await process.wait()


def _tail(path: Path, chars: int = 3000) -> str:
    return path.read_text(errors="replace")[-chars:] if path.exists() else "(no log)"
