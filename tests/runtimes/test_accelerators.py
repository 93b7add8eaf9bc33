"""The accelerator catalog: every required entry, sourced and dated, with plausible numbers."""

from __future__ import annotations

import re

import pytest

from runtimes.accelerators import CATALOG, Accelerator, AcceleratorOverride, resolve_catalog

REQUIRED = {
    "nvidia-h100-80gb", "nvidia-h200-141gb", "nvidia-a100-80gb", "nvidia-l4", "nvidia-l40s", "nvidia-a10g",
    "tpu-v5e", "tpu-v5p", "tpu-v6e", "aws-inferentia2", "cpu-2c", "cpu-32c", "cpu-64c",
}  # fmt: skip
KNOWN_DTYPES = {"bf16", "fp8", "int8", "fp32"}


def test_every_required_entry_is_present() -> None:
    assert CATALOG.keys() >= REQUIRED


@pytest.mark.parametrize("name", sorted(CATALOG))
def test_entry_has_a_dated_source_and_positive_numbers(name: str) -> None:
    entry = CATALOG[name]
    assert re.search(r"\b2026-11\b", entry.source), entry.source
    assert len(entry.source) > 20
    assert entry.memory_gib > 0 and entry.bandwidth_gbs > 0 and entry.price_per_hour > 0
    assert "bf16" in entry.peak_tflops
    assert set(entry.peak_tflops) <= KNOWN_DTYPES
    assert all(value > 0 for value in entry.peak_tflops.values())


@pytest.mark.parametrize("name", sorted(CATALOG))
def test_numbers_are_plausible_for_the_kind(name: str) -> None:
    entry = CATALOG[name]
    bandwidth, bf16, price = {
        "gpu": ((200, 10_000), (50, 2_500), (0.3, 15)),
        "tpu": ((500, 10_000), (100, 2_500), (0.5, 15)),
        "inferentia": ((500, 2_000), (100, 500), (0.3, 5)),
        "cpu": ((5, 1_000), (0.05, 500), (0.02, 10)),
    }[entry.kind]
    assert bandwidth[0] <= entry.bandwidth_gbs <= bandwidth[1]
    assert bf16[0] <= entry.peak_tflops["bf16"] <= bf16[1]
    assert price[0] <= entry.price_per_hour <= price[1]
    # Narrower types never have a lower peak than bf16 on the same hardware.
    for dtype in ("fp8", "int8"):
        assert entry.peak_tflops.get(dtype, entry.peak_tflops["bf16"]) >= entry.peak_tflops["bf16"]


def test_datasheet_figures_that_decode_speed_hinges_on() -> None:
    assert CATALOG["nvidia-h100-80gb"].bandwidth_gbs == 3350
    assert CATALOG["nvidia-h200-141gb"].bandwidth_gbs == 4800
    assert CATALOG["nvidia-h200-141gb"].peak_tflops == CATALOG["nvidia-h100-80gb"].peak_tflops
    assert "fp8" not in CATALOG["nvidia-a100-80gb"].peak_tflops  # Ampere has no fp8 tensor cores
    assert CATALOG["tpu-v6e"].peak_tflops["bf16"] == 918


def test_the_default_config_price_of_cpu_2c_is_kept() -> None:
    assert CATALOG["cpu-2c"].price_per_hour == pytest.approx(0.10)


def test_overrides_change_fields_and_add_entries() -> None:
    catalog = resolve_catalog({
        "nvidia-l4": AcceleratorOverride(price_per_hour=0.5),
        "my-box": AcceleratorOverride(kind="cpu", memory_gib=64, bandwidth_gbs=50, peak_tflops={"bf16": 2},
                                      price_per_hour=0.3, source="ours, 2026-11"),
    })  # fmt: skip
    assert catalog["nvidia-l4"].price_per_hour == 0.5
    assert catalog["nvidia-l4"].bandwidth_gbs == CATALOG["nvidia-l4"].bandwidth_gbs
    assert isinstance(catalog["my-box"], Accelerator)
    with pytest.raises(ValueError, match="needs"):
        resolve_catalog({"half": AcceleratorOverride(price_per_hour=1.0)})
