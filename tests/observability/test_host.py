from __future__ import annotations

import importlib
import sys
from collections.abc import Iterator
from types import ModuleType, SimpleNamespace
from typing import NamedTuple

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from observability.host import HostCollector

GIB = 1024**3


def registry_of(collector: HostCollector) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=True)
    registry.register(collector)
    return registry


@pytest.fixture
def collector() -> Iterator[HostCollector]:
    collector = HostCollector()
    yield collector
    collector.close()


def gpu(registry: CollectorRegistry, metric: str) -> float | None:
    return registry.get_sample_value(metric, {"gpu": "0", "name": "NVIDIA H100 80GB HBM3"})


def tpu(registry: CollectorRegistry, metric: str, chip: str) -> float | None:
    return registry.get_sample_value(metric, {"chip": chip})


def test_host_series_are_sane(collector: HostCollector) -> None:
    registry = registry_of(collector)

    cpu = registry.get_sample_value("thrifty_host_cpu_utilization_ratio")
    used = registry.get_sample_value("thrifty_host_memory_used_bytes")
    total = registry.get_sample_value("thrifty_host_memory_total_bytes")

    assert cpu is not None and 0.0 <= cpu <= 1.0
    assert used is not None and total is not None
    assert 0 < used <= total


def test_no_accelerator_series_without_accelerators(collector: HostCollector) -> None:
    try:
        nvml = importlib.import_module("pynvml")
        nvml.nvmlInit()
    except Exception:
        pass  # no driver or GPU, as on the dev box
    else:
        nvml.nvmlShutdown()
        pytest.skip("this machine has an NVIDIA GPU")

    text = generate_latest(registry_of(collector)).decode()

    assert "thrifty_host_cpu_utilization_ratio " in text
    assert "thrifty_gpu_" not in text
    assert "thrifty_tpu_" not in text


def test_close_twice_is_harmless(collector: HostCollector) -> None:
    collector.close()
    collector.close()


# --- NVML, faked at the module boundary ---------------------------------------------------------


class FakeNVMLError(Exception):
    pass


def fake_pynvml(calls: list[str], fail_at_collect: bool = False) -> ModuleType:
    """One H100, 37% busy, 20 of 80 GiB used; or a driver that breaks after nvmlInit."""
    nvml = ModuleType("pynvml")

    def device_count() -> int:
        if fail_at_collect:
            raise FakeNVMLError("GPU is lost")
        return 1

    nvml.NVMLError = FakeNVMLError  # type: ignore[attr-defined]
    nvml.nvmlInit = lambda: calls.append("init")  # type: ignore[attr-defined]
    nvml.nvmlShutdown = lambda: calls.append("shutdown")  # type: ignore[attr-defined]
    nvml.nvmlDeviceGetCount = device_count  # type: ignore[attr-defined]
    nvml.nvmlDeviceGetHandleByIndex = lambda index: f"handle-{index}"  # type: ignore[attr-defined]
    nvml.nvmlDeviceGetName = lambda handle: b"NVIDIA H100 80GB HBM3"  # type: ignore[attr-defined]
    nvml.nvmlDeviceGetUtilizationRates = lambda handle: SimpleNamespace(gpu=37, memory=12)  # type: ignore[attr-defined]
    nvml.nvmlDeviceGetMemoryInfo = lambda handle: SimpleNamespace(  # type: ignore[attr-defined]
        total=80 * GIB, used=20 * GIB, free=60 * GIB
    )
    return nvml


def test_gpu_series_from_nvml(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    monkeypatch.setitem(sys.modules, "pynvml", fake_pynvml(calls))
    collector = HostCollector()

    registry = registry_of(collector)

    assert gpu(registry, "thrifty_gpu_utilization_ratio") == pytest.approx(0.37)
    assert gpu(registry, "thrifty_gpu_memory_used_bytes") == 20 * GIB
    assert gpu(registry, "thrifty_gpu_memory_total_bytes") == 80 * GIB
    collector.close()
    assert calls == ["init", "shutdown"]
    assert gpu(registry, "thrifty_gpu_utilization_ratio") is None


def test_nvml_failing_at_collect_costs_only_the_gpu_series(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", fake_pynvml([], fail_at_collect=True))
    registry = registry_of(HostCollector())

    text = generate_latest(registry).decode()

    assert registry.get_sample_value("thrifty_host_memory_total_bytes")
    assert "thrifty_gpu_utilization_ratio{" not in text


# --- tpu-info, faked at the module boundary -----------------------------------------------------


class Usage(NamedTuple):
    """tpu_info.metrics.Usage"""

    device_id: int
    memory_usage: int
    total_memory: int
    duty_cycle_pct: float


def install_fake_tpu_info(
    monkeypatch: pytest.MonkeyPatch, chips: tuple[str | None, int], usage: list[Usage] | Exception
) -> list[str]:
    """`tpu_info.device.get_local_chips` and `tpu_info.metrics.get_chip_usage`; returns the chip types asked."""
    asked: list[str] = []

    def get_chip_usage(chip_type: str, addr: str = "localhost:8431") -> list[Usage]:
        asked.append(chip_type)
        if isinstance(usage, Exception):
            raise usage
        return usage

    package, device, metrics = ModuleType("tpu_info"), ModuleType("tpu_info.device"), ModuleType("tpu_info.metrics")
    device.get_local_chips = lambda: chips  # type: ignore[attr-defined]
    metrics.get_chip_usage = get_chip_usage  # type: ignore[attr-defined]
    package.device, package.metrics = device, metrics  # type: ignore[attr-defined]
    for module in (package, device, metrics):
        monkeypatch.setitem(sys.modules, module.__name__, module)
    return asked


def test_tpu_series_from_tpu_info(monkeypatch: pytest.MonkeyPatch) -> None:
    usage = [Usage(0, 4 * GIB, 16 * GIB, 55.0), Usage(1, 0, 16 * GIB, 0.0)]
    asked = install_fake_tpu_info(monkeypatch, ("v5e", 2), usage)

    registry = registry_of(HostCollector())

    assert tpu(registry, "thrifty_tpu_duty_cycle_ratio", "0") == pytest.approx(0.55)
    assert tpu(registry, "thrifty_tpu_memory_used_bytes", "0") == 4 * GIB
    assert tpu(registry, "thrifty_tpu_memory_total_bytes", "1") == 16 * GIB
    assert set(asked) == {"v5e"}  # the chip type found at start, asked on each collect


def test_tpu_info_failing_at_collect_costs_only_the_tpu_series(monkeypatch: pytest.MonkeyPatch) -> None:
    install_fake_tpu_info(monkeypatch, ("v5e", 1), RuntimeError("libtpu metrics server unavailable"))

    registry = registry_of(HostCollector())

    assert registry.get_sample_value("thrifty_host_cpu_utilization_ratio") is not None
    assert "thrifty_tpu_duty_cycle_ratio{" not in generate_latest(registry).decode()


def test_no_tpu_chips_means_no_tpu_queries(monkeypatch: pytest.MonkeyPatch) -> None:
    asked = install_fake_tpu_info(monkeypatch, (None, 0), [])

    generate_latest(registry_of(HostCollector()))

    assert asked == []
