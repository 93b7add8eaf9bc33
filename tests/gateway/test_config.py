"""The config file: the default is valid, and every bad value is reported at its path."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from gateway.config import ConfigError, load_config, parse_config

VALID = """
models:
  - name: m
pools:
  - name: a
    model: m
    engine: {kind: vllm, weights: "thrifty:tiny-py"}
    accelerator: cpu-2c
    instances: {min: 1, max: 2}
  - name: b
    model: m
    engine: {kind: openai}
    provider: static
    urls: ["http://127.0.0.1:9000"]
    accelerator: nvidia-l4
"""


def test_default_config_is_valid_and_prices_differ() -> None:
    config = load_config()
    assert config.gateway.listen == "127.0.0.1:8000"
    assert [p.model for p in config.pools] == ["tiny-py", "tiny-py"]
    prices = {config.price_per_hour(p) for p in config.pools}
    assert len(prices) == 2


def test_price_comes_from_the_catalog_unless_overridden() -> None:
    config = parse_config(VALID + "accelerators: {nvidia-l4: {price_per_hour: 0.5}}\n")
    assert config.price_per_hour(config.pools[0]) == pytest.approx(0.10)
    assert config.price_per_hour(config.pools[1]) == pytest.approx(0.5)


BAD = [
    ("surprise: 1", "$", "unknown field `surprise`"),
    ("observability: {otlp_endpoint: collector:4318}", "$.observability.otlp_endpoint", "http"),
    ("observability: {cost_window_s: 1}", "$.observability.cost_window_s", ">= 10"),
    ("observability: {tracing: on}", "$.observability", "unknown field `tracing`"),
    ("gateway: {listen: nowhere}", "$.gateway.listen", "host:port"),
    ("gateway: {max_attempts: 0}", "$.gateway.max_attempts", ">= 1"),
    ("pools: [{name: a, model: m, engine: {kind: vllm, weights: w}, accelerator: cpu-2c, instances: {min: 3, max: 2}}]",
     "$.pools[0].instances.max", "below min"),
    ("pools: [{name: a, model: m, engine: {kind: vllm, weights: w}, accelerator: cpu-2c, instances: {max: 0}}]",
     "$.pools[0].instances.max", ">= 1"),
    ("pools: [{name: a, model: x, engine: {kind: vllm, weights: w}, accelerator: cpu-2c}]",
     "$.pools[0].model", "unknown model"),
    ("pools: [{name: a, model: m, engine: {kind: vllm, weights: w}, accelerator: tpu-v99}]",
     "$.pools[0].accelerator", "unknown accelerator"),
    ("pools: [{name: a, model: m, engine: {kind: tgi}, accelerator: cpu-2c}]", "$.pools[0].engine.kind", "Invalid"),
    ("pools: [{name: a, model: m, engine: {kind: vllm, weights: w, dtype: int3}, accelerator: cpu-2c}]",
     "$.pools[0].engine.dtype", "Invalid"),
    ("pools: [{name: a, model: m, engine: {kind: vllm, weights: w, colour: red}, accelerator: cpu-2c}]",
     "$.pools[0].engine", "unknown field `colour`"),
    ("pools: [{name: a, model: m, engine: {kind: openai}, accelerator: cpu-2c}]",
     "$.pools[0].provider", "static"),
    ("pools: [{name: a, model: m, engine: {kind: openai}, provider: static, accelerator: cpu-2c}]",
     "$.pools[0].urls", "at least one"),
    ("pools: [{name: a, model: m, engine: {kind: openai}, provider: static, urls: [ftp://x], accelerator: cpu-2c}]",
     "$.pools[0].urls[0]", "http"),
    ("pools: [{name: a, model: m, engine: {kind: vllm, weights: w, device: cuda, cpus: '0'}, accelerator: cpu-2c}]",
     "$.pools[0].engine.cpus", "cpu"),
    ("pools: [{name: 'bad name', model: m, engine: {kind: vllm, weights: w}, accelerator: cpu-2c}]",
     "$.pools[0].name", "matching regex"),
    ("pools: [{name: a, model: m, engine: {kind: vllm, weights: w}, accelerator: cpu-2c, price_per_hour: -1}]",
     "$.pools[0].price_per_hour", ">= 0"),
    ("accelerators: {my-gpu: {price_per_hour: 1}}", "$.accelerators", "needs"),
]  # fmt: skip


@pytest.mark.parametrize(("change", "path", "message"), BAD)
def test_bad_values_name_their_path(change: str, path: str, message: str) -> None:
    sections = {"models": "models: [{name: m}]", "pools": "pools:" + VALID.split("pools:")[1]}
    sections[change.split(":")[0]] = change  # the change replaces its section or adds one
    with pytest.raises(ConfigError) as caught:
        parse_config("\n".join(sections.values()))
    assert any(p == path and message in m for p, m in caught.value.problems), caught.value.problems


def test_all_problems_are_reported_at_once() -> None:
    text = """
models: [{name: m}, {name: m}]
pools:
  - {name: a, model: x, engine: {kind: vllm, weights: w}, accelerator: nope, instances: {min: 2, max: 1}}
  - {name: a, model: m, engine: {kind: vllm, weights: w}, accelerator: cpu-2c}
"""
    with pytest.raises(ConfigError) as caught:
        parse_config(text)
    paths = {path for path, _ in caught.value.problems}
    assert paths == {
        "$.models[1].name", "$.pools[0].model", "$.pools[0].accelerator", "$.pools[0].instances.max", "$.pools[1].name"
    }  # fmt: skip


def test_invalid_yaml_is_an_error_not_a_crash() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config("models: [")
    assert caught.value.problems[0][0] == "$"


def test_config_check_command_prints_paths(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(VALID.replace("max: 2", "max: 0"))
    result = subprocess.run(
        [sys.executable, "-m", "gateway", "config", "check", str(bad)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 1
    assert "$.pools[0].instances.max" in result.stderr

    good = tmp_path / "good.yaml"
    good.write_text(VALID)
    result = subprocess.run(
        [sys.executable, "-m", "gateway", "config", "check", str(good)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert "ok" in result.stdout


@pytest.mark.parametrize("example", sorted((Path(__file__).parents[2] / "deploy" / "examples").glob("*.yaml")))
def test_shipped_example_configs_are_valid(example: Path) -> None:
    load_config(example)
