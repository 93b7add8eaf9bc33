"""The pools and instances board: instances, load and engine state per pool; the gateway host's devices."""

from __future__ import annotations

from observability import metrics as m
from observability.dashboards.model import Board, Chart, Query, Section
from observability.dashboards.promql import POOL, of_selected_pools, pool_gauge
from observability.metrics import MetricDef

__all__ = ["board"]


def board() -> Board:
    return Board(
        "thrifty-pools",
        "thrifty: Pools & instances",
        "Instances, load and engine state per pool; the gateway host's CPU, GPU and TPU use.",
        (_instances(), _engines_by_pool(), _host(), _engines_by_instance()),
    )


def _instances() -> Section:
    instances = m.POOL_INSTANCES.name
    return Section(
        "Instances",
        (
            Chart(
                "Instances by state",
                "Instances of each pool by state (starting, ready, draining, failed), stacked.",
                "short",
                (Query(of_selected_pools(f"sum by (pool, state) ({instances}{POOL})"), "{{pool}} {{state}}"),),
                width=8,
                stacked=True,
            ),
            Chart(
                "Target vs actual instances",
                "The instance count the provider moves toward (dashed) against the instances starting or "
                "ready; draining instances are on their way out and do not count toward the target.",
                "short",
                (
                    Query(pool_gauge(m.POOL_TARGET), "{{pool}} target", reference=True),
                    Query(
                        of_selected_pools(f'sum by (pool) ({instances}{{pool=~"$pool", state=~"starting|ready"}})'),
                        "{{pool}} starting+ready",
                    ),
                ),
                width=8,
            ),
            Chart(
                "Requests in flight by pool",
                "Requests on the pool's instances now, as the gateway counts them.",
                "short",
                (Query(pool_gauge(m.POOL_IN_FLIGHT), "{{pool}}"),),
                width=8,
            ),
        ),
    )


def _engines_by_pool() -> Section:
    up = f"{m.ENGINE_UP.name}{POOL}"
    return Section(
        "Engines by pool",
        (
            Chart(
                "Engine queue depth by pool",
                "Requests queued inside the engines (vllm:num_requests_waiting), summed over the pool.",
                "short",
                (Query(pool_gauge(m.POOL_ENGINE_WAITING), "{{pool}}"),),
                width=6,
            ),
            Chart(
                "Engine requests running by pool",
                "Requests the engines are running (vllm:num_requests_running), summed over the pool.",
                "short",
                (Query(pool_gauge(m.POOL_ENGINE_RUNNING), "{{pool}}"),),
                width=6,
            ),
            Chart(
                "KV-cache use by pool",
                "KV-cache blocks in use, mean over the pool's engines (vllm:kv_cache_usage_perc).",
                "percentunit",
                (Query(pool_gauge(m.POOL_KV_USAGE), "{{pool}}"),),
                width=6,
                max=1,
            ),
            Chart(
                "Engines up by pool",
                "Engines whose last metrics scrape worked, against the engines scraped (dashed).",
                "short",
                (
                    Query(of_selected_pools(f"sum by (pool) ({up})"), "{{pool}} up"),
                    Query(of_selected_pools(f"count by (pool) ({up})"), "{{pool}} scraped", reference=True),
                ),
                width=6,
            ),
        ),
    )


def _host() -> Section:
    return Section(
        "Host",
        (
            Chart(
                "Device utilization",
                "Busy share of the gateway host's CPU cores, GPUs (NVML) and TPU chips (tpu-info). The GPU "
                "and TPU series exist only on hosts that have them, so they share this panel with the CPU.",
                "percentunit",
                (
                    Query(m.HOST_CPU.name, "CPU"),
                    Query(m.GPU_UTILIZATION.name, "GPU {{gpu}} {{name}}"),
                    Query(m.TPU_DUTY_CYCLE.name, "TPU {{chip}}"),
                ),
                max=1,
            ),
            Chart(
                "Device memory",
                "Memory in use against the total (dashed): host RAM, GPU memory (NVML), TPU HBM (tpu-info). "
                "The GPU and TPU series exist only on hosts that have them.",
                "bytes",
                (
                    Query(m.HOST_MEMORY_USED.name, "host used"),
                    Query(m.HOST_MEMORY_TOTAL.name, "host total", reference=True),
                    Query(m.GPU_MEMORY_USED.name, "GPU {{gpu}} used"),
                    Query(m.GPU_MEMORY_TOTAL.name, "GPU {{gpu}} total", reference=True),
                    Query(m.TPU_MEMORY_USED.name, "TPU {{chip}} used"),
                    Query(m.TPU_MEMORY_TOTAL.name, "TPU {{chip}} total", reference=True),
                ),
            ),
        ),
    )


def _instance_chart(title: str, metric: MetricDef, unit: str, max_value: float | None = None) -> Chart:
    return Chart(
        title,
        f"{metric.help} One line per engine instance.",
        unit,
        (Query(pool_gauge(metric), "{{pool}} / {{instance}}"),),
        width=6,
        max=max_value,
    )


def _engines_by_instance() -> Section:
    # Collapsed: one line per instance is detail, and it is only queried when opened.
    return Section(
        "Engines by instance",
        (
            _instance_chart("Engine queue depth by instance", m.ENGINE_WAITING, "short"),
            _instance_chart("Engine requests running by instance", m.ENGINE_RUNNING, "short"),
            _instance_chart("KV-cache use by instance", m.ENGINE_KV_USAGE, "percentunit", max_value=1),
            _instance_chart("Engine up by instance", m.ENGINE_UP, "short", max_value=1),
        ),
        collapsed=True,
    )
