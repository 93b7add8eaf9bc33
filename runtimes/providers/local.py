"""The local provider: instances as child processes of the gateway on this host.

Each instance runs under `runtimes.guard`, which leads its own process group and takes the
whole group down when the gateway stops or dies, so no engine worker is ever left behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import signal
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from runtimes.config import PoolConfig, ProvidersConfig, VllmEngineConfig
from runtimes.engines.vllm import build_vllm_launch
from runtimes.instance import Instance, InstanceState
from runtimes.process_group import group_alive, signal_group
from runtimes.providers.base import Provider

__all__ = ["LocalProvider", "free_port"]

log = logging.getLogger(__name__)

_HOST = "127.0.0.1"
_POLL_S = 0.5
_STABLE_S = 60.0
"""An instance that stayed up this long resets its restart backoff."""


@dataclass(eq=False)
class _Slot:
    instance: Instance
    task: asyncio.Task[None] | None = None
    process: asyncio.subprocess.Process | None = None
    retiring: bool = False


class LocalProvider(Provider, name="local"):
    def __init__(self, pool: PoolConfig, settings: ProvidersConfig) -> None:
        super().__init__(pool, settings)
        if not isinstance(pool.engine, VllmEngineConfig):
            raise ValueError(f"pool {pool.name!r}: the local provider runs vllm engines only")
        self.engine: VllmEngineConfig = pool.engine
        self.local = settings.local
        self.python = self.local.python or sys.executable
        self._slots: list[_Slot] = []
        self._background: set[asyncio.Task[None]] = set()
        self._ids = itertools.count()
        self._target = 0
        self._session: aiohttp.ClientSession | None = None

    @property
    def instances(self) -> list[Instance]:
        return [slot.instance for slot in self._slots]

    @property
    def target(self) -> int:
        return self._target

    async def start(self) -> None:
        Path(self.local.log_dir).mkdir(parents=True, exist_ok=True)
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5))
        bounds = self.pool.instances
        await self.set_target(bounds.initial if bounds.initial is not None else bounds.min)

    async def set_target(self, count: int) -> int:
        self._target = self.clamp(count)
        active = [slot for slot in self._slots if not slot.retiring]
        for _ in range(self._target - len(active)):
            self._add_slot()
        surplus = len(active) - self._target
        for slot in sorted(active, key=_retire_order)[: max(surplus, 0)]:
            self._retire(slot)
        return self._target

    async def close(self) -> None:
        for task in self._background:
            task.cancel()
        slots = list(self._slots)
        await asyncio.gather(*(self._stop(slot) for slot in slots), return_exceptions=True)
        if self._session is not None:
            await self._session.close()

    def _add_slot(self) -> None:
        instance = Instance(id=f"{self.pool.name}-{next(self._ids)}", pool=self.pool.name)
        slot = _Slot(instance)
        slot.task = asyncio.create_task(self._supervise(slot), name=f"supervise {instance.id}")
        self._slots.append(slot)
        self.announce_started(instance)

    def _retire(self, slot: _Slot) -> None:
        slot.retiring = True
        slot.instance.state = InstanceState.DRAINING  # the router stops sending it new requests
        task = asyncio.create_task(self._drain_and_stop(slot), name=f"retire {slot.instance.id}")
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _drain_and_stop(self, slot: _Slot) -> None:
        deadline = time.monotonic() + self.local.drain_timeout_s
        while slot.instance.in_flight > 0 and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        if slot.instance.in_flight:
            log.warning("%s: stopping with %d requests still in flight", slot.instance.id, slot.instance.in_flight)
        await self._stop(slot)

    async def _stop(self, slot: _Slot) -> None:
        if slot.task is not None:
            slot.task.cancel()
            await asyncio.gather(slot.task, return_exceptions=True)
        slot.instance.state = InstanceState.STOPPED
        if slot in self._slots:
            self._slots.remove(slot)
            self.announce_stopped(slot.instance)
        log.info("%s: stopped", slot.instance.id)

    async def _supervise(self, slot: _Slot) -> None:
        """Run the instance, and restart it with exponential backoff whenever it exits."""
        backoff = self.local.restart_backoff_s
        while True:
            started = time.monotonic()
            code = await self._run_once(slot)
            if time.monotonic() - started > _STABLE_S:
                backoff = self.local.restart_backoff_s
            slot.instance.state = InstanceState.FAILED
            log.warning("%s: exited with code %s; restarting in %.1f s", slot.instance.id, code, backoff)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, self.local.restart_backoff_max_s)

    async def _run_once(self, slot: _Slot) -> int | None:
        """Start the process, mark it ready once it answers, and return its exit code."""
        instance = slot.instance
        port = free_port()
        instance.url = f"http://{_HOST}:{port}"
        instance.state = InstanceState.STARTING
        instance.started_at = time.monotonic()
        instance.failures, instance.ejected_until = 0, 0.0
        process = await self._spawn(instance, port)
        slot.process = process
        try:
            if await self._wait_ready(instance, process):
                if not slot.retiring:
                    instance.state = InstanceState.READY
                took = time.monotonic() - instance.started_at
                log.info("%s: ready at %s after %.1f s", instance.id, instance.url, took)
                return await process.wait()
            if process.returncode is None:
                log.error("%s: not ready within %.0f s; see its log", instance.id, self.engine.startup_timeout_s)
            return process.returncode
        finally:
            await self._terminate(process)
            slot.process = None

    async def _spawn(self, instance: Instance, port: int) -> asyncio.subprocess.Process:
        spec = build_vllm_launch(self.engine, self.pool.model, _HOST, port, self.python)
        log_path = Path(self.local.log_dir) / f"{instance.id}.log"
        with log_path.open("ab") as log_file:
            log_file.write(f"\n=== {time.strftime('%Y-%m-%dT%H:%M:%S')} starting on port {port}\n".encode())
            log_file.flush()
            process = await asyncio.create_subprocess_exec(
                self.python, "-m", "runtimes.guard",
                "--parent", str(os.getpid()), "--grace", str(self.local.stop_grace_s), "--",
                *spec.argv,
                stdin=asyncio.subprocess.DEVNULL, stdout=log_file, stderr=asyncio.subprocess.STDOUT,
                env=os.environ | spec.env, start_new_session=True,
            )  # fmt: skip
        log.info("%s: starting (pid %d, port %d, log %s)", instance.id, process.pid, port, log_path)
        return process

    async def _wait_ready(self, instance: Instance, process: asyncio.subprocess.Process) -> bool:
        """Poll health and the model list until both answer, the process exits, or the deadline."""
        deadline = time.monotonic() + self.engine.startup_timeout_s
        while time.monotonic() < deadline:
            if await self._answers(instance):
                return True
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(process.wait(), _POLL_S)
            if process.returncode is not None:
                return False
        return False

    async def _answers(self, instance: Instance) -> bool:
        assert self._session is not None
        try:
            async with self._session.get(instance.url + "/health") as health:
                if health.status != 200:
                    return False
            async with self._session.get(instance.url + "/v1/models") as models:
                listed = await models.json() if models.status == 200 else {}
        except (aiohttp.ClientError, TimeoutError, ValueError):
            return False
        return any(entry.get("id") == self.pool.model for entry in listed.get("data", []))

    async def _terminate(self, process: asyncio.subprocess.Process) -> None:
        """SIGTERM the guard (it stops its group), then make sure the whole group is gone.

        The guard leads the instance's process group. If the guard itself was killed, its
        instance is orphaned but still in that group, so the group is signalled directly.
        """
        if process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(process.wait(), self.local.stop_grace_s + 5)
        group = process.pid
        if group_alive(group):
            log.warning("processes of group %d outlived their guard; terminating them", group)
            signal_group(group, signal.SIGTERM)
            deadline = time.monotonic() + self.local.stop_grace_s
            while group_alive(group) and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
            signal_group(group, signal.SIGKILL)
        if process.returncode is None:
            await process.wait()


def _retire_order(slot: _Slot) -> tuple[bool, int, float]:
    """Retire instances that serve nothing yet first, then the least busy, then the newest."""
    instance = slot.instance
    return (instance.state is InstanceState.READY, instance.in_flight, -instance.started_at)


def free_port(host: str = _HOST) -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port
