"""The optimizer's config section (the policy): cadence, objective, budget, size classes, learning and guard.

It hot-reloads: the loop re-reads it (with the models' SLOs and quality budgets) when the config
file changes; pools themselves are fixed for the life of the gateway.
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec
from msgspec import Meta

__all__ = ["GuardConfig", "LearningConfig", "OptimizerConfig", "PoolPolicy", "SizeClassConfig"]

PositiveSeconds = Annotated[float, Meta(gt=0)]
Share = Annotated[float, Meta(ge=0, le=1)]


class SizeClassConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Request-size buckets: capacities are learned and traffic is split per bucket."""

    input_edges: list[Annotated[int, Meta(ge=1)]] = msgspec.field(default_factory=lambda: [1024])
    """Upper bounds (inclusive) of the prompt-length buckets, ascending; one more bucket lies above the last."""
    output_edges: list[Annotated[int, Meta(ge=1)]] = msgspec.field(default_factory=lambda: [256])
    """Upper bounds (inclusive) of the output-length buckets, ascending."""


class LearningConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """How fast observations override the prior (profile or roofline) and how fast they are forgotten."""

    half_life_s: PositiveSeconds = 300.0
    """Evidence older than this counts half: a pool that changes speed is re-learned within a few half-lives."""
    prior_strength: Annotated[float, Meta(gt=0)] = 1.0
    """How many windows of full evidence the prior is worth (larger: trust the prior longer)."""
    min_requests: Annotated[int, Meta(ge=1)] = 5
    """A pool's window is an observation only with at least this many finished requests."""


class GuardConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """What stands between the solver's proposal and the fleet: hysteresis, cooldowns, step limits."""

    weight_step: Share = 0.3
    """The most a pool's traffic share may grow in one tick (shares may fall at once, away from trouble)."""
    weight_deadband: Share = 0.03
    """Share changes smaller than this are not applied (hysteresis against noise)."""
    scale_up_cooldown_s: Annotated[float, Meta(ge=0)] = 30.0
    """Time after a pool's scale-up before it scales up again (its new instances must start first)."""
    scale_down_cooldown_s: Annotated[float, Meta(ge=0)] = 120.0
    """Time after any change of a pool's target before it scales down."""
    scale_down_delay_s: Annotated[float, Meta(ge=0)] = 180.0
    """A surplus must last this long (and at least the pool's cold start break-even) before removal."""
    max_scale_up: Annotated[int, Meta(ge=1)] = 4
    """Instances added to a pool per tick at most."""
    max_scale_down: Annotated[int, Meta(ge=1)] = 1
    """Instances removed from a pool per tick at most (removal drains first)."""
    min_saving: Share = 0.05
    """A change made for economy (not for capacity) must cut the fleet's cost per hour by this share."""
    payback_s: PositiveSeconds = 3600.0
    """Horizon over which an economy change's saving must repay the cold starts it causes."""
    cold_start_risk_usd: Annotated[float, Meta(ge=0)] = 0.0
    """Added cost of each cold start for its SLO risk, on top of its time to ready x price."""
    peak_memory_s: Annotated[float, Meta(ge=0)] = 1800.0
    """The fleet is sized for each size class's highest demand in the surges of this trailing span (0:
    for the demand now). A surge rises, within one cold start, past what `utilization` leaves as
    headroom: a burst like that is served only by capacity already up, so the fleet that serves its
    peak stays for the next one. Slow rises are followed as they come and not remembered."""


class PoolPolicy(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """What the optimizer knows about one pool beyond its config."""

    profile: str | None = None
    """A `thrifty profile -o` file: its measured levels seed the pool's performance model."""
    cold_start_s: PositiveSeconds | None = None
    """Time from asking for an instance to its first request; default `OptimizerConfig.cold_start_s`."""


class OptimizerConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    enabled: bool = True
    """Off: weights and instance counts stay as configured."""
    interval_s: PositiveSeconds = 15.0
    """Period of the ticks."""
    window_s: Annotated[float, Meta(ge=5)] = 120.0
    """Span of the trailing window of requests each tick reads demand from."""
    objective: Literal["tokens_per_dollar"] = "tokens_per_dollar"
    """Serve the demand within SLO at the least cost; when the budget cannot, serve the most tokens it can."""
    budget_per_hour: Annotated[float, Meta(gt=0)] | None = None
    """Most the fleet may cost per hour (USD); None: no cap."""
    utilization: Annotated[float, Meta(gt=0, le=1)] = 0.8
    """Load planned per instance as a share of its SLO capacity: the headroom absorbs bursts and estimate error."""
    exploration: Annotated[float, Meta(ge=0, le=0.2)] = 0.03
    """Least traffic share of every eligible running pool, so its estimate stays fresh."""
    unhealthy_error_rate: Share = 0.5
    """A pool whose window has this share of failed attempts (or no routable instance) gets no traffic."""
    cold_start_s: PositiveSeconds = 90.0
    """Default time to ready of a new instance."""
    decisions_kept: Annotated[int, Meta(ge=1)] = 500
    """Decisions kept for `GET /admin/decisions`."""
    record_path: str | None = None
    """Append every request record seen to this JSON-lines file (replay it with `thrifty optimize replay`)."""
    size_classes: SizeClassConfig = SizeClassConfig()
    learning: LearningConfig = LearningConfig()
    guard: GuardConfig = GuardConfig()
    pools: dict[str, PoolPolicy] = {}
    """Per pool name."""
