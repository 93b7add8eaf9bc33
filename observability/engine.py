"""Engine load scraped from each instance's own Prometheus page (vLLM's `/metrics`).

`EngineScraper` polls the instances the gateway names, keeps the latest `EngineLoad` of each for
the router and the optimizer (`load(instance)`), and is a prometheus_client custom collector that
re-exposes those readings under the catalogue's `thrifty_engine_*` names, per instance and per pool.
"""

from __future__ import annotations

import asyncio
import logging
import math
import statistics
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import aiohttp
from prometheus_client.core import Metric
from prometheus_client.parser import text_string_to_metric_families

from observability.metrics import (
    ENGINE_KV_USAGE,
    ENGINE_RUNNING,
    ENGINE_UP,
    ENGINE_WAITING,
    POOL_ENGINE_RUNNING,
    POOL_ENGINE_WAITING,
    POOL_KV_USAGE,
    MetricDef,
)

__all__ = ["EngineLoad", "EngineScraper", "ScrapeTarget", "parse_engine_load"]

log = logging.getLogger(__name__)

RUNNING = "vllm:num_requests_running"
WAITING = "vllm:num_requests_waiting"
KV_USAGE = "vllm:kv_cache_usage_perc"
"""A 0-1 ratio despite its name."""
KV_USAGE_OLD = "vllm:gpu_cache_usage_perc"
"""What vLLM called `KV_USAGE` before its V1 engine."""
_WANTED = frozenset({RUNNING, WAITING, KV_USAGE, KV_USAGE_OLD})

_STALE_AFTER_INTERVALS = 3
"""A reading older than this many scrape intervals is no longer served (the scrape loop stalled)."""

_FAMILIES = (
    ENGINE_UP,
    ENGINE_RUNNING,
    ENGINE_WAITING,
    ENGINE_KV_USAGE,
    POOL_ENGINE_RUNNING,
    POOL_ENGINE_WAITING,
    POOL_KV_USAGE,
)


@dataclass(frozen=True, slots=True)
class EngineLoad:
    """An engine's queue and memory pressure, summed over its engines and served models."""

    running: float
    waiting: float
    kv_cache_usage: float
    """Share of KV-cache blocks in use, 0-1 (the fullest engine's)."""


@dataclass(frozen=True, slots=True)
class ScrapeTarget:
    pool: str
    instance: str
    url: str
    """The instance's base URL (`http://127.0.0.1:1234`); its page is at `url + "/metrics"`."""


# --- parsing ------------------------------------------------------------------------------------


def parse_engine_load(text: str) -> EngineLoad | None:
    """The load on a vLLM Prometheus page; None when the page has none of the engine metrics."""
    values = _sample_values(_wanted_lines(text))
    if not values:
        return None
    kv_usage = values.get(KV_USAGE) or values.get(KV_USAGE_OLD, [])
    return EngineLoad(
        running=sum(values.get(RUNNING, [])),
        waiting=sum(values.get(WAITING, [])),
        kv_cache_usage=max(kv_usage, default=0.0),
    )


def _wanted_lines(text: str) -> str:
    """Only the wanted metrics' samples and `# TYPE`/`# HELP` lines: vLLM's page is mostly histograms."""
    return "\n".join(line for line in text.splitlines() if _line_metric(line) in _WANTED) + "\n"


def _line_metric(line: str) -> str:
    """The metric a line is about: `name{labels} value`, `# TYPE name kind`, `# HELP name text`."""
    if line.startswith("#"):
        words = line.split(maxsplit=3)
        return words[2] if len(words) > 2 and words[1] in ("TYPE", "HELP") else ""
    name = line.partition("{")[0].split(maxsplit=1)
    return name[0] if name else ""


def _sample_values(exposition: str) -> dict[str, list[float]]:
    """Finite sample values by metric name; nothing when the exposition breaks the grammar."""
    values: defaultdict[str, list[float]] = defaultdict(list)
    try:
        for family in text_string_to_metric_families(exposition):
            for sample in family.samples:
                if math.isfinite(sample.value):
                    values[sample.name].append(sample.value)
    except ValueError as exc:
        log.debug("unparseable engine metrics: %s", exc)
        return {}
    return values


# --- scraping -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Reading:
    target: ScrapeTarget
    load: EngineLoad | None
    """None when the last scrape failed."""
    at: float


class EngineScraper:
    """Scrapes every target's engine metrics each interval; a prometheus_client custom collector."""

    def __init__(
        self,
        targets: Callable[[], Iterable[ScrapeTarget]],
        interval_s: float,
        timeout_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._targets = targets
        self._interval_s = interval_s
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._clock = clock
        self._max_age_s = _STALE_AFTER_INTERVALS * interval_s
        # Replaced whole each round, never mutated: `collect` may run on another thread.
        self._readings: dict[str, _Reading] = {}

    async def run(self, session: aiohttp.ClientSession) -> None:
        """Scrape, then sleep an interval, until cancelled."""
        while True:
            try:
                await self.scrape_once(session)
            except Exception:
                log.exception("engine scrape round failed")
            await asyncio.sleep(self._interval_s)

    async def scrape_once(self, session: aiohttp.ClientSession) -> None:
        """Scrape the current targets concurrently; instances no longer targeted are forgotten."""
        targets = list({target.instance: target for target in self._targets()}.values())
        loads = await asyncio.gather(*(self._fetch(session, target) for target in targets))
        now = self._clock()
        self._readings = {
            target.instance: _Reading(target, load, now) for target, load in zip(targets, loads, strict=True)
        }

    def load(self, instance: str) -> EngineLoad | None:
        """The instance's latest load; None when unknown, down or stale."""
        reading = self._readings.get(instance)
        return None if reading is None else self._fresh_load(reading)

    async def _fetch(self, session: aiohttp.ClientSession, target: ScrapeTarget) -> EngineLoad | None:
        """The target's load, or None when its page cannot be had or holds no engine metrics."""
        url = f"{target.url.rstrip('/')}/metrics"
        try:
            async with session.get(url, timeout=self._timeout) as response:
                if response.status != 200:
                    log.debug("engine scrape of %s: HTTP %d", url, response.status)
                    return None
                # The exposition format is UTF-8; a broken byte must not fail the whole page.
                text = (await response.read()).decode("utf-8", errors="replace")
        except (aiohttp.ClientError, TimeoutError) as exc:
            log.debug("engine scrape of %s failed: %r", url, exc)
            return None
        load = parse_engine_load(text)
        if load is None:
            log.debug("engine scrape of %s: no engine metrics on the page", url)
        return load

    def _fresh_load(self, reading: _Reading) -> EngineLoad | None:
        if reading.load is None or self._clock() - reading.at > self._max_age_s:
            return None
        return reading.load

    # --- prometheus_client collector protocol ---

    def describe(self) -> list[Metric]:
        """The families without samples, so registering does not scrape (or collect) anything."""
        return [metric.family(()) for metric in _FAMILIES]

    def collect(self) -> Iterator[Metric]:
        readings = list(self._readings.values())
        yield ENGINE_UP.family(((r.target.pool, r.target.instance), float(r.load is not None)) for r in readings)
        fresh = [(r.target, load) for r in readings if (load := self._fresh_load(r)) is not None]
        yield _per_instance(ENGINE_RUNNING, ((target, load.running) for target, load in fresh))
        yield _per_instance(ENGINE_WAITING, ((target, load.waiting) for target, load in fresh))
        yield _per_instance(ENGINE_KV_USAGE, ((target, load.kv_cache_usage) for target, load in fresh))
        by_pool: defaultdict[str, list[EngineLoad]] = defaultdict(list)
        for target, load in fresh:
            by_pool[target.pool].append(load)
        yield _per_pool(POOL_ENGINE_RUNNING, {pool: sum(x.running for x in loads) for pool, loads in by_pool.items()})
        yield _per_pool(POOL_ENGINE_WAITING, {pool: sum(x.waiting for x in loads) for pool, loads in by_pool.items()})
        yield _per_pool(
            POOL_KV_USAGE, {pool: statistics.fmean(x.kv_cache_usage for x in loads) for pool, loads in by_pool.items()}
        )


def _per_instance(metric: MetricDef, values: Iterable[tuple[ScrapeTarget, float]]) -> Metric:
    return metric.family(((target.pool, target.instance), value) for target, value in values)


def _per_pool(metric: MetricDef, values: dict[str, float]) -> Metric:
    return metric.family(((pool,), value) for pool, value in values.items())
