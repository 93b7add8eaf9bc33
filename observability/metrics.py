"""Every Prometheus metric thrifty exposes, defined once: name, kind, help text and labels.

Collectors, the request-path recorder and the dashboards all take their names from here, and a
test checks that every name a dashboard queries is in this catalogue. Names follow Prometheus
conventions: base units (seconds, bytes, ratios 0-1, USD), `_total` for counters.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

__all__ = ["CATALOGUE", "DURATION_BUCKETS", "QUEUE_WAIT_BUCKETS", "TPOT_BUCKETS", "TTFT_BUCKETS", "MetricDef"]

Kind = Literal["counter", "gauge", "histogram"]

# LLM latencies span four orders of magnitude: milliseconds of gateway queueing, tens of
# milliseconds per output token, seconds to first token under load, minutes for long answers.
QUEUE_WAIT_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0)
TTFT_BUCKETS = (0.025, 0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 7.5, 10.0, 20.0, 30.0, 60.0)
TPOT_BUCKETS = (0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0, 2.5)
DURATION_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0)


@dataclass(frozen=True)
class MetricDef:
    name: str
    kind: Kind
    help: str
    labels: tuple[str, ...] = ()

    def family(self, samples: Iterable[tuple[Sequence[str], float]]) -> Metric:
        """A counter or gauge family of `(label values, value)` samples, for custom collectors."""
        family: CounterMetricFamily | GaugeMetricFamily
        if self.kind == "counter":
            family = CounterMetricFamily(self.name, self.help, labels=self.labels)
        elif self.kind == "gauge":
            family = GaugeMetricFamily(self.name, self.help, labels=self.labels)
        else:
            raise TypeError(f"{self.name} is a {self.kind}; collectors build only counters and gauges")
        for values, value in samples:
            family.add_metric(list(values), value)
        return family

    @property
    def series(self) -> tuple[str, ...]:
        """The series names Prometheus stores for this metric (a histogram has three)."""
        if self.kind == "histogram":
            return (f"{self.name}_bucket", f"{self.name}_sum", f"{self.name}_count")
        return (self.name,)


_REQUEST = ("model", "pool")

# Requests, recorded on the request path (pool is "" when the request never reached one).
REQUESTS = MetricDef(
    "thrifty_requests_total",
    "counter",
    "Requests answered, by HTTP status (499: client went away).",
    (*_REQUEST, "status"),
)
INPUT_TOKENS = MetricDef("thrifty_input_tokens_total", "counter", "Prompt tokens of answered requests.", _REQUEST)
OUTPUT_TOKENS = MetricDef("thrifty_output_tokens_total", "counter", "Generated tokens of answered requests.", _REQUEST)
TTFT = MetricDef("thrifty_time_to_first_token_seconds", "histogram", "Arrival to first token (streams).", _REQUEST)
TPOT = MetricDef(
    "thrifty_time_per_output_token_seconds",
    "histogram",
    "Time per output token after the first: (end - first token) / (output tokens - 1) (streams).",
    _REQUEST,
)
DURATION = MetricDef("thrifty_request_duration_seconds", "histogram", "Arrival to last byte.", _REQUEST)
QUEUE_WAIT = MetricDef(
    "thrifty_queue_wait_seconds", "histogram", "Arrival to the first dispatch to an instance.", _REQUEST
)
ATTEMPTS = MetricDef(
    "thrifty_upstream_attempts_total",
    "counter",
    "Attempts on instances, by outcome (ok, failed, cancelled: the client left).",
    (*_REQUEST, "outcome"),
)
REQUEST_COST = MetricDef(
    "thrifty_request_cost_usd_total", "counter", "Instance cost attributed to requests (busy time shared).", _REQUEST
)

# Pools, read from the fleet and the router at scrape time.
POOL_INFO = MetricDef(
    "thrifty_pool_info", "gauge", "One series per pool, carrying its model and hardware.",
    ("pool", "model", "accelerator", "quantization", "engine"),
)  # fmt: skip
POOL_INSTANCES = MetricDef("thrifty_pool_instances", "gauge", "Instances by state.", ("pool", "state"))
POOL_TARGET = MetricDef(
    "thrifty_pool_instances_target", "gauge", "Instance count the provider moves toward.", ("pool",)
)
POOL_WEIGHT = MetricDef("thrifty_pool_weight", "gauge", "Traffic weight of the pool within its model.", ("pool",))
POOL_IN_FLIGHT = MetricDef(
    "thrifty_pool_requests_in_flight", "gauge", "Requests on the pool's instances now.", ("pool",)
)
POOL_EXCLUDED = MetricDef(
    "thrifty_pool_excluded", "gauge", "1 when the pool gets no traffic whatever its weight (quality gate).", ("pool",)
)
POOL_PRICE = MetricDef("thrifty_pool_price_usd_per_hour", "gauge", "Price of one instance-hour.", ("pool",))

# Cost, from the ledger: instance-time x price, split into attributed and idle.
POOL_COST_RATE = MetricDef(
    "thrifty_pool_cost_usd_per_hour", "gauge", "What the pool's instances cost now (instances x price).", ("pool",)
)
POOL_COST = MetricDef(
    "thrifty_pool_cost_usd_total",
    "counter",
    "Cost accrued since the gateway started: instance-time x price.",
    ("pool",),
)
POOL_IDLE_COST = MetricDef(
    "thrifty_pool_idle_cost_usd_total", "counter", "Cost accrued while an instance had no request.", ("pool",)
)
POOL_INSTANCE_SECONDS = MetricDef(
    "thrifty_pool_instance_seconds_total", "counter", "Instance-seconds paid for, starting time included.", ("pool",)
)
POOL_TOKENS_PER_USD = MetricDef(
    "thrifty_pool_output_tokens_per_usd", "gauge", "Output tokens per dollar over the rolling cost window.", ("pool",)
)
POOL_USD_PER_MTOK = MetricDef(
    "thrifty_pool_usd_per_million_output_tokens",
    "gauge",
    "Dollars per million output tokens, rolling window.",
    ("pool",),
)
FLEET_TOKENS_PER_USD = MetricDef(
    "thrifty_fleet_output_tokens_per_usd", "gauge", "Output tokens per dollar over all pools, rolling window."
)
FLEET_USD_PER_MTOK = MetricDef(
    "thrifty_fleet_usd_per_million_output_tokens",
    "gauge",
    "Dollars per million output tokens, all pools, rolling window.",
)
COST_WINDOW = MetricDef("thrifty_cost_window_seconds", "gauge", "Length of the rolling cost window.")

# Models' objectives, so dashboards can draw latency against them.
SLO_TTFT = MetricDef("thrifty_model_slo_ttft_seconds", "gauge", "The model's TTFT p95 objective.", ("model",))
SLO_TPOT = MetricDef("thrifty_model_slo_tpot_seconds", "gauge", "The model's TPOT p95 objective.", ("model",))

# Engines, scraped from each instance's own /metrics.
_INSTANCE = ("pool", "instance")
ENGINE_UP = MetricDef("thrifty_engine_up", "gauge", "1 if the last scrape of the instance's metrics worked.", _INSTANCE)
ENGINE_RUNNING = MetricDef(
    "thrifty_engine_requests_running", "gauge", "Requests the engine is running (vllm:num_requests_running).", _INSTANCE
)
ENGINE_WAITING = MetricDef(
    "thrifty_engine_requests_waiting", "gauge", "Requests queued in the engine (vllm:num_requests_waiting).", _INSTANCE
)
ENGINE_KV_USAGE = MetricDef(
    "thrifty_engine_kv_cache_usage_ratio", "gauge", "KV-cache blocks in use, 0-1 (vllm:kv_cache_usage_perc).", _INSTANCE
)
POOL_ENGINE_RUNNING = MetricDef(
    "thrifty_pool_engine_requests_running", "gauge", "Sum over the pool's engines.", ("pool",)
)
POOL_ENGINE_WAITING = MetricDef(
    "thrifty_pool_engine_requests_waiting", "gauge", "Sum over the pool's engines.", ("pool",)
)
POOL_KV_USAGE = MetricDef("thrifty_pool_kv_cache_usage_ratio", "gauge", "Mean over the pool's engines.", ("pool",))

# The host the gateway runs on, and its accelerators where a library can read them.
HOST_CPU = MetricDef("thrifty_host_cpu_utilization_ratio", "gauge", "Busy share of all CPU cores, 0-1.")
HOST_MEMORY_USED = MetricDef("thrifty_host_memory_used_bytes", "gauge", "Memory in use (total - available).")
HOST_MEMORY_TOTAL = MetricDef("thrifty_host_memory_total_bytes", "gauge", "Physical memory.")
GPU_UTILIZATION = MetricDef("thrifty_gpu_utilization_ratio", "gauge", "GPU busy share (NVML), 0-1.", ("gpu", "name"))
GPU_MEMORY_USED = MetricDef("thrifty_gpu_memory_used_bytes", "gauge", "GPU memory in use (NVML).", ("gpu", "name"))
GPU_MEMORY_TOTAL = MetricDef("thrifty_gpu_memory_total_bytes", "gauge", "GPU memory (NVML).", ("gpu", "name"))
TPU_DUTY_CYCLE = MetricDef("thrifty_tpu_duty_cycle_ratio", "gauge", "TPU chip duty cycle (tpu-info), 0-1.", ("chip",))
TPU_MEMORY_USED = MetricDef("thrifty_tpu_memory_used_bytes", "gauge", "TPU HBM in use (tpu-info).", ("chip",))
TPU_MEMORY_TOTAL = MetricDef("thrifty_tpu_memory_total_bytes", "gauge", "TPU HBM (tpu-info).", ("chip",))

# The optimizer: its plan, the numbers behind it, and every change it makes.
OPTIMIZER_TICKS = MetricDef(
    "thrifty_optimizer_ticks_total", "counter", "Optimizer ticks by outcome (changed, unchanged, failed).", ("outcome",)
)
OPTIMIZER_CHANGES = MetricDef(
    "thrifty_optimizer_changes_total",
    "counter",
    "Changes the optimizer applied, by pool and what changed (weight, target).",
    ("pool", "what"),
)
OPTIMIZER_LAST_TICK = MetricDef(
    "thrifty_optimizer_last_tick_timestamp_seconds", "gauge", "Wall-clock time of the latest tick."
)
OPTIMIZER_PLAN_COST = MetricDef(
    "thrifty_optimizer_plan_cost_usd_per_hour", "gauge", "Cost per hour of the planned instance targets."
)
OPTIMIZER_PLAN_TOKENS_PER_USD = MetricDef(
    "thrifty_optimizer_plan_output_tokens_per_usd", "gauge", "Output tokens per USD the plan serves the demand at."
)
OPTIMIZER_DEMAND = MetricDef(
    "thrifty_optimizer_demand_requests_per_second",
    "gauge",
    "Requests per second in the optimizer's window, by model and size class.",
    ("model", "size_class"),
)
OPTIMIZER_CAPACITY = MetricDef(
    "thrifty_optimizer_pool_capacity_requests_per_second",
    "gauge",
    "Requests per second one instance serves within the SLO, as the optimizer plans it, by size class.",
    ("pool", "size_class"),
)
OPTIMIZER_CONFIDENCE = MetricDef(
    "thrifty_optimizer_pool_confidence",
    "gauge",
    "How far traces have narrowed the pool's latency model from its prior: 0 (prior only) to 1.",
    ("pool",),
)
OPTIMIZER_PROPOSED = MetricDef(
    "thrifty_optimizer_pool_proposed_instances",
    "gauge",
    "Instances the solver proposes for the pool, before the guard.",
    ("pool",),
)
OPTIMIZER_ELIGIBLE = MetricDef(
    "thrifty_optimizer_pool_eligible",
    "gauge",
    "1 when the optimizer may send the pool traffic (healthy, not failing, within its quality budget).",
    ("pool",),
)

CATALOGUE: dict[str, MetricDef] = {
    metric.name: metric for metric in list(globals().values()) if isinstance(metric, MetricDef)
}
