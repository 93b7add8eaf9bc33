"""A load sweep against an OpenAI-compatible server, and the profile it makes.

Every request streams, with `stream_options.include_usage` so token counts come from the server,
and (by default) vLLM's `ignore_eos` so each output is exactly `output_tokens` long. Prompts are
seeded random words, each request its own, so the engine's prefix cache cannot serve one
request's prompt from another's. The number of words per prompt is calibrated once, against the
server's own count of prompt tokens, to land near `prompt_tokens`.
"""

from __future__ import annotations

import datetime
import random
from collections.abc import Callable
from typing import Annotated, Protocol

import aiohttp
import msgspec
from msgspec import Meta

from runtimes.loadgen import make_session
from runtimes.profile.capacity import select_capacity
from runtimes.profile.metrics import Timing, level_metrics
from runtimes.profile.profile_file import SLO, Level, LevelMetrics, Profile, Workload, level_label
from runtimes.profile.stream import LevelRun, TimedClient, closed_loop, open_loop

__all__ = [
    "ProfileError",
    "PromptBuilder",
    "SweepObserver",
    "SweepPlan",
    "Target",
    "calibrate_prompt_words",
    "profile_url",
    "recorded_profile",
    "request_body",
    "run_sweep",
]

_VOCABULARY = (
    "the of and to in is for on with as by at from that this data value list key item node tree "
    "graph path file line word text name time rate load cost token model cache batch queue server "
    "client request answer stream chunk table index range count total state event error result"
)
_WORDS = _VOCABULARY.split()
_CALIBRATION_PROBES = 3


class ProfileError(Exception):
    """The target cannot be profiled (unreachable, wrong model name, no usage in its answers...)."""


class Target(msgspec.Struct, frozen=True, kw_only=True):
    """What is profiled, and what the profile records about it."""

    base_url: str
    """The server's root, e.g. `http://127.0.0.1:9001` (the `/v1/...` path is added)."""
    model: str
    headers: dict[str, str] = {}
    """Extra request headers, e.g. `authorization`."""
    timeout_s: Annotated[float, Meta(gt=0)] = 600.0
    """Limit on each whole request."""
    pool: str | None = None
    accelerator: str | None = None
    variant: str | None = None
    price_per_hour: Annotated[float, Meta(ge=0)] | None = None
    instances: Annotated[int, Meta(ge=1)] = 1
    """Instances behind `base_url`: the capacity is divided among them."""


class SweepPlan(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The load levels, and how long each one lasts: `requests` sent, or `duration_s` (whichever ends first)."""

    concurrency: list[Annotated[int, Meta(ge=1)]] = []
    """Closed-loop levels: this many workers sending back to back."""
    rates: list[Annotated[float, Meta(gt=0)]] = []
    """Open-loop levels: Poisson arrivals per second."""
    requests: Annotated[int, Meta(ge=1)] | None = 32
    duration_s: Annotated[float, Meta(gt=0)] | None = None
    max_concurrency: Annotated[int, Meta(ge=1)] = 256
    """Open loop: arrivals beyond this many in-flight requests are dropped and count as failed."""
    seed: int = 0


class SweepObserver(Protocol):
    """Follows a sweep as it runs, e.g. to draw progress."""

    def level_started(self, label: str, requests: int | None, duration_s: float | None) -> None: ...

    def request_finished(self, timing: Timing) -> None: ...

    def level_finished(self, level: Level) -> None: ...


class PromptBuilder:
    """Seeded random prompts of `words` words; every call gives a new one."""

    def __init__(self, words: int, seed: int = 0) -> None:
        self.words = words
        self._rng = random.Random(seed)

    def next(self) -> str:
        return " ".join(self._rng.choices(_WORDS, k=self.words))


def request_body(target: Target, workload: Workload, prompt: str, max_tokens: int, stream: bool = True) -> bytes:
    payload: dict[str, object] = {"model": target.model, "max_tokens": max_tokens, "temperature": 0.0}
    if workload.api == "chat":
        payload["messages"] = [{"role": "user", "content": prompt}]
    else:
        payload["prompt"] = prompt
    if workload.ignore_eos:
        payload["ignore_eos"] = True
    if stream:
        payload |= {"stream": True, "stream_options": {"include_usage": True}}
    return msgspec.json.encode(payload)


def _url(target: Target, workload: Workload) -> str:
    path = "/v1/chat/completions" if workload.api == "chat" else "/v1/completions"
    return target.base_url.rstrip("/") + path


class _Usage(msgspec.Struct):
    prompt_tokens: int


class _Answer(msgspec.Struct):
    usage: _Usage | None = None


async def _count_prompt_tokens(session: aiohttp.ClientSession, target: Target, workload: Workload, prompt: str) -> int:
    """The server's own count of a prompt's tokens, from a one-token, non-streaming request."""
    body = request_body(target, workload, prompt, max_tokens=1, stream=False)
    headers = {"content-type": "application/json", **target.headers}
    try:
        async with session.post(_url(target, workload), data=body, headers=headers) as response:
            data = await response.read()
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise ProfileError(f"{target.base_url}: {type(exc).__name__}: {exc}") from exc
    if response.status != 200:
        raise ProfileError(f"{target.base_url} answered HTTP {response.status}: {data[:300].decode(errors='replace')}")
    try:
        usage = msgspec.json.decode(data, type=_Answer).usage
    except msgspec.DecodeError as exc:
        raise ProfileError(f"{target.base_url} answered something other than a completion: {exc}") from exc
    if usage is None:
        raise ProfileError(f"{target.base_url} reports no token usage: prompt lengths cannot be calibrated")
    return usage.prompt_tokens


async def calibrate_prompt_words(
    session: aiohttp.ClientSession, target: Target, workload: Workload, seed: int = 0
) -> int:
    """Words per prompt that make about `workload.prompt_tokens` tokens (chat template included)."""
    wanted = workload.prompt_tokens
    words = wanted
    for _ in range(_CALIBRATION_PROBES):
        tokens = await _count_prompt_tokens(session, target, workload, PromptBuilder(words, seed).next())
        if abs(tokens - wanted) <= max(1, wanted // 50):
            break
        words = max(1, round(words * wanted / max(tokens, 1)))
    return words


async def run_sweep(
    target: Target, workload: Workload, plan: SweepPlan, slo: SLO, observer: SweepObserver | None = None
) -> list[Level]:
    """Every closed-loop level, then every open-loop level, one after the other."""
    if plan.requests is None and plan.duration_s is None:
        raise ValueError("each level needs a request count or a duration")
    async with make_session(target.timeout_s) as session:
        words = await calibrate_prompt_words(session, target, workload, plan.seed)
        prompts = PromptBuilder(words, plan.seed + 1)
        client = TimedClient(
            session,
            _url(target, workload),
            target.headers,
            lambda: request_body(target, workload, prompts.next(), workload.output_tokens),
        )
        levels = []
        for concurrency in plan.concurrency:
            on_done = _level_started(observer, level_label("closed", concurrency, None), plan)
            run = await closed_loop(
                client, concurrency, count=plan.requests, duration_s=plan.duration_s, on_done=on_done
            )
            level = Level(mode="closed", concurrency=concurrency, metrics=_metrics(run, slo))
            levels.append(_level_finished(observer, level))
        for rate in plan.rates:
            on_done = _level_started(observer, level_label("open", None, rate), plan)
            run = await open_loop(
                client, rate, count=plan.requests, duration_s=plan.duration_s, seed=plan.seed,
                max_concurrency=plan.max_concurrency, on_done=on_done,
            )  # fmt: skip
            level = Level(mode="open", concurrency=plan.max_concurrency, request_rate=rate, metrics=_metrics(run, slo))
            levels.append(_level_finished(observer, level))
    return levels


async def profile_url(
    target: Target, workload: Workload, plan: SweepPlan, slo: SLO, observer: SweepObserver | None = None
) -> Profile:
    """Sweep the target and record the levels with the capacity they show."""
    levels = await run_sweep(target, workload, plan, slo, observer)
    return recorded_profile(target, workload, slo, levels)


def recorded_profile(
    target: Target, workload: Workload, slo: SLO, levels: list[Level], created_at: str | None = None
) -> Profile:
    """The profile of measured levels: what they were measured on, and the capacity they show."""
    return Profile(
        created_at=created_at or datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        base_url=target.base_url,
        model=target.model,
        pool=target.pool,
        accelerator=target.accelerator,
        variant=target.variant,
        price_per_hour=target.price_per_hour,
        instances=target.instances,
        workload=workload,
        slo=slo,
        levels=levels,
        capacity=select_capacity(levels, slo, target.price_per_hour, target.instances),
    )


def _metrics(run: LevelRun, slo: SLO) -> LevelMetrics:
    return level_metrics(run.timings, run.duration_s, slo)


def _level_started(observer: SweepObserver | None, label: str, plan: SweepPlan) -> Callable[[Timing], None] | None:
    if observer is None:
        return None
    observer.level_started(label, plan.requests, plan.duration_s)
    return observer.request_finished


def _level_finished(observer: SweepObserver | None, level: Level) -> Level:
    if observer is not None:
        observer.level_finished(level)
    return level
