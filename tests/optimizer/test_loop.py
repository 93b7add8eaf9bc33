"""The loop around the tick: applies plans through its protocols, keeps the last good plan when a tick fails,
records traces and replays them through the same tick."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

import pytest

from observability.records import RequestRecord
from optimizer import loop as loop_module
from optimizer.config import ModelConfig, SLOConfig
from optimizer.loop import OptimizerLoop
from optimizer.performance import generic_prior
from optimizer.policy import OptimizerConfig
from optimizer.replay import replay
from optimizer.signals import PoolStatus
from optimizer.tick import PoolSpec, Setup
from optimizer.traces import RecordWriter, TraceFileError, read_records

SLO = SLOConfig(ttft_p95_ms=2000, tpot_p95_ms=200)


class Sink:
    def __init__(self) -> None:
        self.applied: list[dict[str, float]] = []

    def set_weights(self, weights: Mapping[str, float], class_weights: Mapping[str, Mapping[str, float]]) -> None:
        self.applied.append(dict(weights))


class Scaler:
    def __init__(self) -> None:
        self.targets: list[tuple[str, int]] = []

    async def set_target(self, pool: str, count: int) -> int:
        self.targets.append((pool, count))
        return count


def setup(**policy: object) -> Setup:
    pools = {
        name: PoolSpec(name, "m", price, 1, 3, 60.0, generic_prior(SLO, 16))
        for name, price in (("dear", 0.10), ("cheap", 0.04))
    }
    return Setup(OptimizerConfig(**policy), {"m": ModelConfig(name="m", slo=SLO)}, pools)  # type: ignore[arg-type]


def record(n: int, pool: str, start: float, tpot: float = 0.02) -> RequestRecord:
    duration = 0.1 + 63 * tpot
    return RequestRecord(
        trace_id=f"t{n}", span_id=f"s{n}", start=start, end=start + duration, operation="text_completion",
        model="m", pool=pool, instance=f"{pool}-0", accelerator="cpu-2c", quantization="bf16", stream=True,
        status=200, input_tokens=100, output_tokens=64, duration_s=duration, queue_wait_s=None, ttft_s=0.1,
        tpot_s=tpot, attempts=1, cost_usd=0.0,
    )  # fmt: skip


def traffic(t0: float, seconds: int, rate: int = 2) -> list[RequestRecord]:
    return [record(i, ("dear", "cheap")[i % 2], t0 + i / rate) for i in range(seconds * rate)]


async def test_the_loop_applies_plans_and_keeps_the_last_good_one_when_a_tick_fails(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    now = [1000.0]
    sink, scaler = Sink(), Scaler()
    status = {"dear": PoolStatus(ready=1, target=1), "cheap": PoolStatus(ready=1, target=1)}
    loop = OptimizerLoop(setup(), status=lambda: status, sink=sink, scaler=scaler, clock=lambda: now[0])
    for r in traffic(1000.0, 60):
        loop.add(r)
    now[0] = 1060.0
    first = await loop.step()
    assert first.outcome in {"changed", "unchanged"} and loop.plan is not None
    assert sink.applied[-1] == loop.plan.weights
    good = loop.plan

    def broken(*_: object) -> None:
        raise ValueError("solver exploded")

    monkeypatch.setattr(loop_module, "tick", broken)
    now[0] = 1075.0
    failed = await loop.step()
    assert failed.outcome == "failed" and "solver exploded" in failed.summary
    assert loop.plan is good and len(sink.applied) == 1  # nothing new applied: routing keeps the last good plan
    assert loop.ticks["failed"] == 1


async def test_targets_reach_the_scaler_only_when_they_change() -> None:
    now = [0.0]
    sink, scaler = Sink(), Scaler()
    status = {"dear": PoolStatus(ready=1, target=1), "cheap": PoolStatus(ready=1, target=1)}
    loop = OptimizerLoop(setup(), status=lambda: status, sink=sink, scaler=scaler, clock=lambda: now[0])
    # 20 req/s of 64-token answers at 150 ms per token: far past one instance of each within a 200 ms TPOT.
    for i in range(600):
        loop.add(record(i, ("dear", "cheap")[i % 2], i / 20, tpot=0.15))
    now[0] = 30.0
    decision = await loop.step()
    assert scaler.targets, decision.summary
    assert all(count > 1 for _, count in scaler.targets)
    assert {c.pool for c in decision.changes if c.what == "target"} == {pool for pool, _ in scaler.targets}


def test_a_recorded_trace_replays_through_the_tick(tmp_path: Path) -> None:
    path = tmp_path / "trace.jsonl"
    writer = RecordWriter(path)
    records = traffic(1000.0, 120)
    for r in records:
        writer(r)
    writer.close()
    assert list(read_records(path)) == records

    results = replay(read_records(path), setup(), interval_s=15)
    assert len(results) >= 8
    assert results[-1].plan.weights["cheap"] > results[-1].plan.weights["dear"]
    assert [r.decision.at for r in results] == sorted(r.decision.at for r in results)


def test_a_broken_trace_line_names_its_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "trace.jsonl"
    path.write_text('{"not": "a record"}\n')
    with pytest.raises(TraceFileError, match=r"trace.jsonl:1"):
        list(read_records(path))


def test_thrifty_optimize_replay_prints_each_tick(tmp_path: Path) -> None:
    path = tmp_path / "trace.jsonl"
    writer = RecordWriter(path)
    for i, r in enumerate(traffic(1000.0, 60)):
        writer(RequestRecord(**{**{f: getattr(r, f) for f in r.__struct_fields__}, "model": "tiny-py",
                                "pool": ("cpu-a", "cpu-b-spot")[i % 2]}))  # fmt: skip
    writer.close()
    out = tmp_path / "decisions.json"
    result = subprocess.run(
        [sys.executable, "-m", "gateway", "optimize", "replay", str(path), "--json", str(out)],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "final plan" in result.stdout and "120 records" in result.stdout
    assert out.read_bytes().startswith(b"[")


def test_requests_without_span_ids_all_count() -> None:
    """With no exporter the gateway records no spans, so its records carry no span id; none is a duplicate."""
    loop = OptimizerLoop(setup(), status=dict, sink=Sink(), scaler=Scaler(), clock=lambda: 1030.0)
    for i, r in enumerate(traffic(1000.0, 30)):
        loop.add(RequestRecord(**{**{f: getattr(r, f) for f in r.__struct_fields__}, "span_id": "", "trace_id": ""}))
        assert loop.collector.seen == i + 1
    (demand,) = loop.collector.snapshot(1030.0, {}).demand.values()
    assert demand.rate == pytest.approx(2.0, rel=0.05)
