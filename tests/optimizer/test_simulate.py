"""`thrifty simulate`: the engine model, workloads, scenarios, the fleet's cost, baselines, and a short run of
every policy through the CLI."""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import pytest

from optimizer.config import SLOConfig
from optimizer.simulate import cli
from optimizer.simulate.baselines import mix_capacity
from optimizer.simulate.capacity import CapacitySearch, true_capacity
from optimizer.simulate.engine import EngineSpec, InstanceEngine, _steps_within, _stretch_s
from optimizer.simulate.fleet import SimPool
from optimizer.simulate.metrics import direction_changes, summarize
from optimizer.simulate.policies import POLICIES
from optimizer.simulate.profiling import profile_engine
from optimizer.simulate.runner import run_scenario
from optimizer.simulate.scenario import (
    LengthSpec,
    PoolScenario,
    ScenarioError,
    WorkloadSpec,
    load_scenario,
    parse_scenario,
    shipped_scenarios,
)
from optimizer.simulate.simulation import ScaleAction, simulate
from optimizer.simulate.truth import engine_spec
from optimizer.simulate.workloads import draw_lengths, generate
from optimizer.simulate.world import build_world
from runtimes.accelerators import CATALOG
from runtimes.profile.capacity import is_feasible
from runtimes.profile.profile_file import SLO, accepts
from runtimes.profile.roofline import PRESETS, decode_point
from runtimes.profile.sweep import Target

LLAMA = PRESETS["llama-3.1-8b"]

TINY = """
description: a short test run
model: llama-3.1-8b
slo: {ttft_p95_ms: 1500, tpot_p95_ms: 80}
seed: 7
interval_s: 15
workload: {kind: poisson, rate: 3, duration_s: 240, mix: chat}
pools:
  - {name: h100-fp8, accelerator: nvidia-h100-80gb, variant: fp8, max_instances: 2, initial: 1, cold_start_s: 60}
  - {name: l4-fp8, accelerator: nvidia-l4, variant: fp8, max_instances: 4, cold_start_s: 45}
  - {name: tpu-int8, accelerator: tpu-v5e, variant: int8, max_instances: 4, cold_start_s: 90}
"""


def spec(**changes: float) -> EngineSpec:
    """An H100 fp8 engine at the default truth, with fields changed."""
    pool = PoolScenario(name="p", accelerator="nvidia-h100-80gb", variant="fp8")
    return dataclasses.replace(engine_spec(LLAMA, CATALOG["nvidia-h100-80gb"], pool), **changes)


def ideal(accelerator: str = "nvidia-h100-80gb", variant: str = "bf16") -> EngineSpec:
    """Catalog peaks, no overhead: the roofline itself."""
    pool = PoolScenario(name="p", accelerator=accelerator, variant=variant)
    peaks = CATALOG[accelerator]
    return dataclasses.replace(
        engine_spec(LLAMA, peaks, pool),
        bandwidth=peaks.bandwidth_gbs * 1e9,
        compute=peaks.peak_tflops["bf16"] * 1e12,
        step_overhead_s=0.0,
    )


def batch_tpot(engine_spec_: EngineSpec, batch: int, prompt: int = 512, output: int = 200) -> float:
    """Mean TPOT of `batch` identical requests all arriving at 0."""
    engine = InstanceEngine(engine_spec_)
    for rid in range(batch):
        engine.submit(rid, 0.0, prompt, output)
    engine.advance(math.inf)
    return float(np.mean([(c.end - c.first_token) / (output - 1) for c in engine.finished]))


# -- engine model ------------------------------------------------------------------------------------


def test_a_decode_step_matches_the_roofline() -> None:
    s = ideal()
    for batch, context in ((1, 512), (64, 1024), (512, 2048)):
        point = decode_point(LLAMA, s.weight_bytes, batch, context, s.bandwidth / 1e9, s.compute / 1e12)
        assert s.step_s(batch, batch * context, batch * context) == pytest.approx(point.step_ms / 1000, rel=1e-9)


def test_decode_slows_with_the_batch_past_the_knee() -> None:
    s = spec(max_num_seqs=1024, max_num_batched_tokens=200_000)
    single, small, large = batch_tpot(s, 1), batch_tpot(s, 16), batch_tpot(s, 1024)
    assert small < single * 1.3  # bandwidth-bound: the weights' read is shared
    assert large > single * 3  # past the knee compute (and the KV read) grows with every sequence
    throughput = [batch / batch_tpot(s, batch) for batch in (1, 16, 1024)]
    assert throughput[0] < throughput[1] < throughput[2]


def test_prefill_time_scales_with_the_prompt() -> None:
    s = spec(max_num_batched_tokens=16384)
    times = []
    for prompt in (1000, 4000, 8000):
        engine = InstanceEngine(s)
        engine.submit(0, 0.0, prompt, 2)
        engine.advance(math.inf)
        times.append(engine.finished[0].first_token - s.step_overhead_s)
    assert times[1] / times[0] == pytest.approx(4, rel=0.2)
    assert times[2] / times[1] == pytest.approx(2, rel=0.2)


def test_a_full_kv_cache_makes_requests_queue() -> None:
    s = spec(kv_capacity_tokens=2 * 600)  # room for two sequences of 500 + 100
    engine = InstanceEngine(s)
    for rid in range(4):
        engine.submit(rid, 0.0, 500, 100)
    engine.advance(math.inf)
    done = {c.rid: c for c in engine.finished}
    first_two_end = max(done[0].end, done[1].end)
    assert done[0].first_token < first_two_end and done[1].first_token < first_two_end
    assert min(done[2].first_token, done[3].first_token) > min(done[0].end, done[1].end)
    with pytest.raises(ValueError, match="KV cache"):
        engine.submit(9, engine.clock, 1000, 1000)


def test_a_cache_that_fills_while_decoding_preempts_the_sequence_admitted_last() -> None:
    """The cache is taken as vLLM takes it: prompts at admission, answers a token a step. Two 400-token
    prompts fit a 1200-token cache, their answers of 400 do not: the second is preempted, recomputes
    its prompt and what it had generated once the first is done, and still gives every token."""
    s = spec(kv_capacity_tokens=1200)
    engine = InstanceEngine(s)
    engine.submit(0, 0.0, 400, 400)
    engine.submit(1, 0.0, 400, 400)
    engine.advance(math.inf)
    done = {c.rid: c for c in engine.finished}
    assert engine.preemptions == 1
    assert done[1].first_token < done[0].end  # it had started answering before it was preempted
    assert done[1].end > done[0].end
    alone = InstanceEngine(s)
    alone.submit(0, 0.0, 400, 400)
    alone.advance(math.inf)
    # Its stall covers the rest of the first answer and a recompute of ~600 tokens, not a restart from scratch.
    stall = done[1].end - done[0].end
    assert stall < alone.finished[0].end - alone.finished[0].first_token
    assert engine.steps < 2 * alone.steps


def test_a_full_cache_admits_no_prompt_until_a_sequence_leaves() -> None:
    s = spec(kv_capacity_tokens=1000)  # two 400-token prompts fit, a third does not
    engine = InstanceEngine(s)
    for rid in range(3):
        engine.submit(rid, 0.0, 400, 50)
    engine.advance(math.inf)
    done = {c.rid: c for c in engine.finished}
    assert engine.preemptions == 0
    assert done[2].first_token > min(done[0].end, done[1].end)


def test_chunked_prefill_spreads_a_long_prompt_over_steps() -> None:
    s = spec(max_num_batched_tokens=512)
    engine = InstanceEngine(s)
    engine.submit(0, 0.0, 2048, 2)
    engine.advance(math.inf)
    assert engine.steps == 4 + 1  # four prompt chunks, then the last token


@pytest.mark.parametrize("kv_capacity_tokens", [None, 12_000])  # a small cache preempts often
def test_lazy_advances_give_the_same_answer_as_one(kv_capacity_tokens: int | None) -> None:
    rng = np.random.default_rng(3)
    arrivals = np.cumsum(rng.exponential(0.05, 300))
    sizes = [(int(p), int(o)) for p, o in zip(rng.integers(50, 3000, 300), rng.integers(2, 400, 300), strict=True)]
    s = spec() if kv_capacity_tokens is None else spec(kv_capacity_tokens=kv_capacity_tokens)
    once, stepwise = InstanceEngine(s), InstanceEngine(s)
    for rid, (t, (p, o)) in enumerate(zip(arrivals, sizes, strict=True)):
        once.submit(rid, float(t), p, o)
    once.advance(math.inf)
    for rid, (t, (p, o)) in enumerate(zip(arrivals, sizes, strict=True)):
        stepwise.advance(float(t))
        stepwise.submit(rid, float(t), p, o)
        following = float(arrivals[rid + 1]) if rid + 1 < len(arrivals) else math.inf
        stepwise.advance(min(float(t) + 0.013, following))  # never past the next arrival: submits come in time order
    stepwise.advance(math.inf)
    assert len(once.finished) == len(stepwise.finished) == 300
    assert np.allclose(np.array(sorted(once.finished)), np.array(sorted(stepwise.finished)), rtol=1e-12)
    assert (once.preemptions > 0) == (kv_capacity_tokens is not None)


def test_the_closed_form_stretch_equals_step_by_step() -> None:
    lines = (0.002, 0.004, 1e-6, 0.001, 3e-6)  # the compute line overtakes memory within the stretch
    steps = [0.002 + max(0.004 + 1e-6 * k, 0.001 + 3e-6 * k) for k in range(10, 3010)]
    assert _stretch_s(lines, 10, 3000) == pytest.approx(sum(steps), rel=1e-12)
    for budget in (0.0001, 0.05, 3.0, 17.0, 100.0):
        count = _steps_within(lines, 10, budget, 3000, strict=False)
        assert sum(steps[:count]) <= budget + 1e-12
        assert count == 3000 or sum(steps[: count + 1]) > budget


def test_processor_sharing_splits_the_busy_time() -> None:
    engine = InstanceEngine(spec())
    for rid in range(5):
        engine.submit(rid, rid * 0.01, 300, 50)
    engine.advance(math.inf)
    busy = max(c.end for c in engine.finished) - 0.0
    assert sum(c.shared_s for c in engine.finished) == pytest.approx(busy, rel=1e-9)


def test_true_capacity_is_measured_and_zero_when_the_slo_is_out_of_reach() -> None:
    prompts, outputs = np.full(50, 400, dtype=np.int64), np.full(50, 150, dtype=np.int64)
    search = CapacitySearch(requests=200)
    loose = true_capacity(spec(), prompts, outputs, SLOConfig(ttft_p95_ms=2000, tpot_p95_ms=100), search)
    tight = true_capacity(spec(), prompts, outputs, SLOConfig(ttft_p95_ms=2000, tpot_p95_ms=10), search)
    assert loose > tight > 0
    assert true_capacity(spec(), prompts, outputs, SLOConfig(ttft_p95_ms=2000, tpot_p95_ms=1), search) == 0.0


def test_a_simulated_profile_measures_the_capacity_within_its_sweep_step() -> None:
    """The profiler's sweep on one simulated instance: levels double until one misses the SLO, and the
    capacity it reports is the last feasible level, so within a factor of two below the true one."""
    slo = SLOConfig(ttft_p95_ms=1000, tpot_p95_ms=40)
    target = Target(base_url="sim://p", model="m", pool="p", price_per_hour=3.9)
    profile = profile_engine(spec(), slo, target, prompt_tokens=400, output_tokens=150)
    assert accepts(profile, SLO(ttft_p95_ms=1000, tpot_p95_ms=40))
    assert [level.mode for level in profile.levels] == ["open"] * len(profile.levels)
    assert not is_feasible(profile.levels[-1].metrics, profile.slo)
    assert all(is_feasible(level.metrics, profile.slo) for level in profile.levels[:-1])
    sizes = np.full(50, 400, dtype=np.int64), np.full(50, 150, dtype=np.int64)
    true = true_capacity(spec(), *sizes, slo, CapacitySearch(requests=400))
    assert profile.capacity is not None
    assert true / 2.2 <= profile.capacity.request_throughput <= true * 1.1


def test_the_profiled_policy_seeds_the_optimizer_from_measured_profiles() -> None:
    world = build_world(parse_scenario(TINY), duration_s=60)
    profiled, roofline = POLICIES["thrifty-profiled"](world), POLICIES["thrifty"](world)
    for name in world.pools:
        assert profiled.setup.pools[name].prior.source == "profile: simulated sim://" + name
        assert roofline.setup.pools[name].prior.source.startswith("roofline:")


# -- workloads ---------------------------------------------------------------------------------------


def test_poisson_arrivals_are_seeded_and_at_the_rate() -> None:
    workload = WorkloadSpec(kind="poisson", rate=20, duration_s=600)
    first, again, other = generate(workload, 1), generate(workload, 1), generate(workload, 2)
    assert np.array_equal(first.time, again.time) and np.array_equal(first.prompt, again.prompt)
    assert not np.array_equal(first.time[:100], other.time[:100])
    assert len(first) / 600 == pytest.approx(20, rel=0.05)
    assert np.all(np.diff(first.time) >= 0)


def test_diurnal_and_bursty_rates() -> None:
    diurnal = generate(WorkloadSpec(kind="diurnal", rate=2, peak_rate=22, duration_s=2000), 4)
    assert len(diurnal) / 2000 == pytest.approx(12, rel=0.06)  # the cosine's mean
    middle = np.sum((diurnal.time > 900) & (diurnal.time < 1100)) / 200
    edge = np.sum(diurnal.time < 200) / 200
    assert middle > 18 and edge < 5
    bursty = generate(WorkloadSpec(kind="bursty", rate=5, peak_rate=50, burst_s=60, calm_s=300, duration_s=3000), 4)
    expected = bursty.curve.mean(0, 3000)
    assert 5 < expected < 50
    assert len(bursty) / 3000 == pytest.approx(expected, rel=0.08)


def test_lengths_follow_the_mix() -> None:
    rng = np.random.default_rng(0)
    drawn = draw_lengths(LengthSpec(median=300, sigma=0.5, min=20, max=2000), 20_000, rng)
    assert np.median(drawn) == pytest.approx(300, rel=0.03)
    assert drawn.min() >= 20 and drawn.max() <= 2000
    mixed = generate(WorkloadSpec(rate=30, duration_s=600, mix="mixed"), 5)
    documents = mixed.component == mixed.components.index("document")
    assert documents.mean() == pytest.approx(0.2, abs=0.03)
    assert np.median(mixed.prompt[documents]) > 10 * np.median(mixed.prompt[~documents])


# -- scenarios ---------------------------------------------------------------------------------------


def test_shipped_scenarios_load() -> None:
    names = shipped_scenarios()
    assert {"steady-chat", "steady-mixed", "diurnal-mixed", "bursty-chat", "long-docs"} <= set(names)
    for name in names:
        scenario = load_scenario(name)
        assert scenario.name == name and scenario.pools


def test_scenario_errors_name_their_path() -> None:
    with pytest.raises(ScenarioError, match=r"\$\.pools\[0\]") as unknown:
        parse_scenario(TINY.replace("max_instances: 2,", "max_instances: 2, colour: red,"))
    assert "colour" in str(unknown.value)
    with pytest.raises(ScenarioError, match=r"tpu-bf16.*cannot exist.*16\.1 GB"):
        parse_scenario(TINY.replace("{name: tpu-int8, accelerator: tpu-v5e, variant: int8",
                                    "{name: tpu-bf16, accelerator: tpu-v5e, variant: bf16"))  # fmt: skip
    with pytest.raises(ScenarioError, match=r"\$\.workload\.peak_rate"):
        parse_scenario(TINY.replace("kind: poisson", "kind: diurnal"))


# -- fleet and cost ----------------------------------------------------------------------------------


def test_cost_is_instance_time_times_price() -> None:
    pool = SimPool("p", spec(), price_per_hour=3.6, cold_start_s=100, min_instances=0, max_instances=4)
    started, _ = pool.scale_to(2, 0.0)
    assert [start.ready_at for start in started] == [100.0, 100.0]
    for start in started:
        pool.make_routable(start.instance)
    busy = pool.routable[0]
    busy.engine.submit(0, 199.0, 500, 400)
    _, drained = pool.scale_to(1, 200.0)  # drains the instance with fewer requests in flight: the idle one
    assert drained and drained[0] is not busy and drained[0].removed_at == 200.0
    _, drained = pool.scale_to(0, 200.5)
    last_end = drained[0].engine.finished[-1].end
    assert drained[0] is busy and drained[0].removed_at == last_end > 200.5
    # paid from the request (0 s, the cold start included) to removal, at $0.001 per second
    assert pool.cost_usd(1000.0) == pytest.approx((200.0 + last_end) * 0.001)
    assert pool.cost_usd(150.0) == pytest.approx(2 * 150.0 * 0.001)


def test_a_fixed_fleet_costs_its_size_for_the_run() -> None:
    world = build_world(parse_scenario(TINY), duration_s=120)
    output = simulate(world, POLICIES["best-single"](world))
    result = summarize(world, output)
    expected = sum(hours * world.pools[name].price_per_hour for name, hours in output.instance_hours.items())
    assert result.cost_usd == pytest.approx(expected)
    best = max(output.instance_hours, key=lambda name: output.instance_hours[name])
    count = round(output.instance_hours[best] / (120 / 3600))
    assert result.cost_usd == pytest.approx(count * world.pools[best].price_per_hour * 120 / 3600)
    assert result.scale_actions_per_hour == 0 and result.served == result.requests
    # The second half pays half of a fixed fleet, for the tokens of the requests that arrived in it.
    assert output.second_half_cost_usd == pytest.approx(result.cost_usd / 2)
    late = world.arrivals.time >= 60
    assert 0 < late.sum() < len(late)
    assert result.slo_both == 1.0  # sized for the peak on true capacities: every request's tokens count
    assert result.second_half_goodput_tokens_per_dollar == pytest.approx(
        world.arrivals.output[late].sum() / (result.cost_usd / 2)
    )


def test_direction_changes_count_turns() -> None:
    actions = [ScaleAction(0, "a", 1, 2), ScaleAction(1, "a", 2, 3), ScaleAction(2, "a", 3, 2),
               ScaleAction(3, "b", 0, 1), ScaleAction(4, "a", 2, 3)]  # fmt: skip
    assert direction_changes(actions) == 2


# -- policies ----------------------------------------------------------------------------------------


def test_baselines_on_a_tiny_scenario() -> None:
    world = build_world(parse_scenario(TINY), duration_s=120, capacity_search=CapacitySearch(requests=200))
    capacities = world.capacities
    assert set(capacities) == {"h100-fp8", "l4-fp8", "tpu-int8"}
    assert all(value >= 0 for table in capacities.values() for value in table.values())
    assert mix_capacity(capacities["h100-fp8"], world.peak) > mix_capacity(capacities["l4-fp8"], world.peak)
    single = POLICIES["best-single"](world).start()
    assert sum(1 for count in single.targets.values() if count) == 1
    melange = POLICIES["melange"](world).start()
    assert sum(melange.weights.values()) == pytest.approx(sum(d.rate for d in world.peak))
    served = sum(mix_capacity(capacities[n], world.peak) * c for n, c in melange.targets.items())
    assert served * world.optimizer.utilization >= sum(d.rate for d in world.peak) * 0.99
    robin = POLICIES["round-robin"](world).start()
    assert len(set(robin.weights.values())) == 1
    proportional = POLICIES["capacity-proportional"](world).start()
    assert set(proportional.weights) == set(robin.weights)


def test_the_clairvoyant_moves_from_the_initial_fleet_at_the_pace_of_cold_starts() -> None:
    """It knows what the oracle knows, but its fleet starts where the scenario's does and every
    instance it adds serves only once its cold start is over."""
    run = run_scenario(parse_scenario(TINY), policies=["clairvoyant", "oracle"], duration_s=240)
    clairvoyant, oracle = run.outputs["clairvoyant"], run.outputs["oracle"]
    series = clairvoyant.series
    assert {name: ready[0] for name, ready in series.ready.items()} == {"h100-fp8": 1, "l4-fp8": 0, "tpu-int8": 0}
    cold_start = {pool.name: pool.cold_start_s for pool in run.world.scenario.pools}
    for name, ready in series.ready.items():
        added = [action.at for action in clairvoyant.actions if action.pool == name and action.after > action.before]
        for time, count in zip(series.times, ready, strict=True):
            if count > series.ready[name][0]:
                assert added and time >= min(added) + cold_start[name]
    results = {r.policy: r for r in run.results}
    # The oracle's fleet for 3 chat requests/s is not the incumbent H100: the clairvoyant moves to it, paying the move.
    final = {name: count[-1] for name, count in series.instances.items() if count[-1] > 0}
    assert final == {name: count[-1] for name, count in oracle.series.instances.items() if count[-1] > 0}
    assert results["clairvoyant"].cost_usd > results["oracle"].cost_usd
    assert results["clairvoyant"].slo_both >= 0.95


def test_every_policy_through_the_cli(tmp_path: Path) -> None:
    scenario = tmp_path / "tiny.yaml"
    scenario.write_text(TINY)
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    out = tmp_path / "out" / "run.json"
    args = parser.parse_args([str(scenario), "--json", str(out), "--plots", str(tmp_path / "plots")])
    assert cli.run(args) == 0
    report = json.loads(out.read_text())
    results = {r["policy"]: r for r in report["results"]}
    assert list(results) == ["thrifty", "best-single", "round-robin", "capacity-proportional", "melange",
                             "clairvoyant", "oracle"]  # fmt: skip
    for r in results.values():
        assert r["requests"] == report["requests"] > 0
        assert r["served"] + r["failed"] == r["requests"]
        assert r["cost_usd"] > 0 and r["tokens_per_dollar"] > 0
        assert 0 <= r["slo_both"] <= min(r["slo_ttft"], r["slo_tpot"]) <= 1
        assert r["goodput_tokens_per_dollar"] <= r["tokens_per_dollar"]
        assert r["cost_per_hour"] == pytest.approx(r["cost_usd"] / (240 / 3600))
    for fixed in ("best-single", "round-robin", "capacity-proportional", "melange"):
        assert results[fixed]["scale_actions_per_hour"] == 0
    assert results["oracle"]["tokens_per_dollar_vs_oracle"] == pytest.approx(1.0)
    assert results["oracle"]["second_half_vs_oracle"] == pytest.approx(1.0)
    for r in results.values():
        assert r["second_half_goodput_tokens_per_dollar"] > 0
    assert len(report["series"]["thrifty"]["times"]) == 240 // 15 + 1
    for name in ("weights", "instances", "demand", "cost-rate"):
        assert (tmp_path / "plots" / f"tiny-{name}.png").stat().st_size > 1000


def test_the_cli_refuses_a_bad_scenario(tmp_path: Path) -> None:
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    assert cli.run(parser.parse_args([str(tmp_path / "missing.yaml")])) == 2
    assert cli.run(parser.parse_args(["steady-chat", "--policies", "nonsense"])) == 2


def test_same_arrivals_for_every_policy() -> None:
    run = run_scenario(parse_scenario(TINY), policies=["best-single", "oracle"], duration_s=60)
    assert run.results[0].requests == run.results[1].requests == len(run.world.arrivals)
    assert all(r.output_tokens <= int(run.world.arrivals.output.sum()) for r in run.results)
