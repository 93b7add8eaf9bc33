"""Utilization of the host the gateway runs on: CPU and memory, and its accelerators where a library
can read them (NVIDIA GPUs through NVML, Cloud TPU chips through tpu-info).

`HostCollector` is a prometheus_client custom collector; both accelerator libraries are optional
and imported only here, guarded: without them (or without the hardware) their series are absent.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable, Iterable, Iterator
from functools import partial
from types import ModuleType
from typing import Protocol

import psutil
from prometheus_client.core import Metric

from observability.metrics import (
    GPU_MEMORY_TOTAL,
    GPU_MEMORY_USED,
    GPU_UTILIZATION,
    HOST_CPU,
    HOST_MEMORY_TOTAL,
    HOST_MEMORY_USED,
    TPU_DUTY_CYCLE,
    TPU_MEMORY_TOTAL,
    TPU_MEMORY_USED,
)

__all__ = ["HostCollector"]

log = logging.getLogger(__name__)

_FAMILIES = (
    HOST_CPU,
    HOST_MEMORY_USED,
    HOST_MEMORY_TOTAL,
    GPU_UTILIZATION,
    GPU_MEMORY_USED,
    GPU_MEMORY_TOTAL,
    TPU_DUTY_CYCLE,
    TPU_MEMORY_USED,
    TPU_MEMORY_TOTAL,
)


class _TpuUsage(Protocol):
    """`tpu_info.metrics.Usage`: one TPU device (a chip, or one core of a two-core chip)."""

    @property
    def device_id(self) -> int: ...

    @property
    def memory_usage(self) -> int: ...

    @property
    def total_memory(self) -> int: ...

    @property
    def duty_cycle_pct(self) -> float: ...


_TpuUsageReader = Callable[[], Iterable[_TpuUsage]]


class HostCollector:
    """Host CPU and memory, plus GPU (NVML) and TPU (tpu-info) series where those can be read."""

    def __init__(self) -> None:
        # cpu_percent(None) measures since its previous call; the first call only starts the clock.
        psutil.cpu_percent(interval=None)
        self._nvml = _init_nvml()
        self._tpu_usage = _tpu_usage_reader()

    def describe(self) -> list[Metric]:
        """Every family this collector may yield, without samples: registering reads no hardware."""
        return [metric.family(()) for metric in _FAMILIES]

    def collect(self) -> Iterator[Metric]:
        yield from _host_families()
        if self._nvml is not None:
            yield from _read_or_skip("NVML", partial(_gpu_families, self._nvml))
        if self._tpu_usage is not None:
            yield from _read_or_skip("tpu-info", partial(_tpu_families, self._tpu_usage))

    def close(self) -> None:
        """Shut NVML down; GPU series stop."""
        nvml, self._nvml = self._nvml, None
        if nvml is None:
            return
        try:
            nvml.nvmlShutdown()
        except nvml.NVMLError as exc:
            log.debug("NVML shutdown failed: %s", exc)


def _host_families() -> list[Metric]:
    memory = psutil.virtual_memory()
    return [
        HOST_CPU.family([((), psutil.cpu_percent(interval=None) / 100)]),
        HOST_MEMORY_USED.family([((), float(memory.total - memory.available))]),
        HOST_MEMORY_TOTAL.family([((), float(memory.total))]),
    ]


def _read_or_skip(source: str, read: Callable[[], list[Metric]]) -> list[Metric]:
    """The families `read` builds, or none: a hardware library's failure costs its series, not the scrape."""
    try:
        return read()
    except Exception as exc:  # NVMLError, grpc.RpcError, ... : each library raises its own kinds
        log.debug("%s metrics skipped: %r", source, exc)
        return []


# --- NVIDIA GPUs --------------------------------------------------------------------------------


def _init_nvml() -> ModuleType | None:
    """The initialised `pynvml` module; None without the package, a driver or a GPU."""
    try:
        nvml = importlib.import_module("pynvml")
        nvml.nvmlInit()
    except Exception as exc:  # ImportError, or an NVMLError such as "NVML Shared Library Not Found"
        log.debug("no GPU metrics: %s", exc)
        return None
    return nvml


def _gpu_families(nvml: ModuleType) -> list[Metric]:
    utilization, used, total = [], [], []
    for index in range(nvml.nvmlDeviceGetCount()):
        handle = nvml.nvmlDeviceGetHandleByIndex(index)
        labels = (str(index), _text(nvml.nvmlDeviceGetName(handle)))
        memory = nvml.nvmlDeviceGetMemoryInfo(handle)
        utilization.append((labels, nvml.nvmlDeviceGetUtilizationRates(handle).gpu / 100))
        used.append((labels, float(memory.used)))
        total.append((labels, float(memory.total)))
    return [GPU_UTILIZATION.family(utilization), GPU_MEMORY_USED.family(used), GPU_MEMORY_TOTAL.family(total)]


def _text(name: str | bytes) -> str:
    """Device names are `str` in current nvidia-ml-py, `bytes` in older releases."""
    return name.decode(errors="replace") if isinstance(name, bytes) else name


# --- Cloud TPUs ---------------------------------------------------------------------------------


def _tpu_usage_reader() -> _TpuUsageReader | None:
    """tpu-info's usage query for this host's chips; None without the package or TPU chips."""
    try:
        from tpu_info import device, metrics

        chip_type, _ = device.get_local_chips()
    except Exception as exc:  # ImportError off TPU hosts; reading the PCI devices in /sys may fail
        log.debug("no TPU metrics: %s", exc)
        return None
    if chip_type is None:
        log.debug("no TPU metrics: no TPU chips on this host")
        return None
    # Asks libtpu's metrics server (localhost:8431), which runs inside a TPU workload such as vLLM.
    return partial(metrics.get_chip_usage, chip_type)


def _tpu_families(read_usage: _TpuUsageReader) -> list[Metric]:
    usages = [((str(usage.device_id),), usage) for usage in read_usage()]
    return [
        TPU_DUTY_CYCLE.family((chip, usage.duty_cycle_pct / 100) for chip, usage in usages),
        TPU_MEMORY_USED.family((chip, float(usage.memory_usage)) for chip, usage in usages),
        TPU_MEMORY_TOTAL.family((chip, float(usage.total_memory)) for chip, usage in usages),
    ]
