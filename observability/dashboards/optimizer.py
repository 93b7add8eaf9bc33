"""The optimizer board: whether it runs, what it changes, its plan against the fleet, the numbers behind the plan.

Operators tune the optimizer's policy (the `optimizer` config section) from these panels, so each
description says how to read the panel and which setting moves it. The optimizer's metrics exist
only while it is enabled; the weight and target panels show the configured values without it.
"""

from __future__ import annotations

from observability import metrics as m
from observability.dashboards.annotations import optimizer_changes, optimizer_failed_ticks, policy_reloads
from observability.dashboards.charts import cost_rate_by_pool, price_by_pool, tokens_per_usd_by_pool
from observability.dashboards.model import Board, Chart, Query, Section
from observability.dashboards.promql import POOL, of_selected_pools, per_minute, pool_gauge, rate, sum_rate

__all__ = ["board"]

_FLEET = "All pools: ignores the model and pool filters."
_DECISIONS = "GET /admin/decisions on the gateway lists each tick's changes with their reasons."


def board() -> Board:
    return Board(
        "thrifty-optimizer",
        "thrifty: Optimizer",
        "Whether the optimizer runs and what it changes; its plan against what the fleet costs and produces; "
        "the demand, capacities and confidence behind the plan; what it steers (weights, instance targets).",
        (
            _activity(),
            _plan_vs_fleet(),
            _steering(),
            _inputs(),
            Section("Economics, for context", (tokens_per_usd_by_pool(), cost_rate_by_pool(), price_by_pool())),
        ),
        annotations=(optimizer_changes(), optimizer_failed_ticks(), policy_reloads()),
    )


def _activity() -> Section:
    changes = of_selected_pools(per_minute(sum_rate(m.OPTIMIZER_CHANGES, "pool, what", POOL)))
    return Section(
        "Optimizer",
        (
            Chart(
                "Time since the last tick",
                "Seconds since the optimizer's latest decision (a tick, failed or not, or a policy reload), per "
                "gateway. Ticks come every optimizer.interval_s (15 s by default), so this saw-tooths below the "
                "interval plus one scrape; a value that keeps growing means the loop has stopped. Empty: the "
                "optimizer is disabled or has not ticked yet.",
                "s",
                (Query(f"time() - {m.OPTIMIZER_LAST_TICK.name}", "{{instance}}"),),
                kind="stat",
                width=4,
            ),
            Chart(
                "Ticks per minute by outcome",
                "Optimizer decisions per minute, stacked by outcome: changed (the tick applied at least one "
                "change), unchanged (the plan held), failed (the tick raised an error and the last good plan stays; "
                "see the gateway's log), reloaded (the policy was reloaded; not a tick). The stack sums to about "
                "60 / optimizer.interval_s. Mostly changed ticks mean the optimizer keeps moving: the next panel "
                "shows which pools and what. " + _FLEET,
                "short",
                (Query(per_minute(sum_rate(m.OPTIMIZER_TICKS, "outcome", "")), "{{outcome}}"),),
                width=10,
                stacked=True,
            ),
            Chart(
                "Changes per minute by pool",
                "Changes the optimizer applied per minute, by pool and by what changed: weight (the pool's share "
                "of its model's traffic) or target (its instance count). Each one is also marked on the time axis "
                "(the 'Optimizer changes' annotation). Weight changes at every tick that swing back and forth "
                "chase noise: raise optimizer.guard.weight_deadband. Targets that go up and down again: lengthen "
                "guard.scale_down_delay_s or guard.scale_down_cooldown_s. " + _DECISIONS,
                "short",
                (Query(changes, "{{pool}} {{what}}"),),
                width=10,
            ),
        ),
    )


def _plan_vs_fleet() -> Section:
    return Section(
        "Plan vs fleet",
        (
            Chart(
                "Planned vs actual cost ($/hour)",
                "Dashed: what the plan's instance targets cost per hour (targets x price per instance-hour, "
                "after the guard), from the latest successful tick. Solid: what the instances running now cost, "
                "starting and draining ones included. The actual line follows the plan as instances start and "
                "drain; a lasting gap above the plan is instances draining slowly, one below it is instances "
                "that do not start. " + _FLEET,
                "currencyUSD",
                (
                    Query(f"sum({m.POOL_COST_RATE.name})", "actual"),
                    Query(m.OPTIMIZER_PLAN_COST.name, "planned", reference=True),
                ),
            ),
            Chart(
                "Planned vs observed output tokens per $",
                "Dashed: the output tokens per dollar the plan expects: the output tokens per second it plans to "
                "serve (the demand, or what the budget allows) x 3600 / its cost per hour. Solid: what the fleet "
                f"achieved over the rolling cost window ({m.COST_WINDOW.name}), idle and starting instances "
                "included. Both pay for the optimizer.utilization headroom. The observed line lags the plan by "
                "the cost window, and falls below it while instances start or drain (paid for, not planned) or "
                "when less traffic arrives than the plan's forecast. Higher is better. " + _FLEET,
                "short",
                (
                    Query(m.FLEET_TOKENS_PER_USD.name, "observed"),
                    Query(m.OPTIMIZER_PLAN_TOKENS_PER_USD.name, "planned", reference=True),
                ),
            ),
        ),
    )


def _steering() -> Section:
    requests = m.REQUESTS.name
    served = f'{requests}{{model=~"$model", pool=~"$pool", pool!=""}}'
    per_model = f'{requests}{{model=~"$model", pool!=""}}'
    observed_share = f"sum by (model, pool) ({rate(served)}) / on (model) group_left sum by (model) ({rate(per_model)})"
    return Section(
        "What it steers",
        (
            Chart(
                "Traffic weight by pool",
                "The pool's traffic weight within its model, as the router uses it now: the optimizer's split "
                "over the instances ready now, at least optimizer.exploration for every eligible running pool, "
                "growing by at most guard.weight_step per tick. The configured weights while it is disabled.",
                "short",
                (Query(pool_gauge(m.POOL_WEIGHT), "{{pool}}"),),
                width=8,
            ),
            Chart(
                "Observed traffic share by pool",
                "Share of each model's answered requests that each pool served, to compare with the weights "
                "(requests that never reached a pool are left out).",
                "percentunit",
                (Query(observed_share, "{{model}} / {{pool}}"),),
                width=8,
                max=1,
            ),
            Chart(
                "Target vs proposed instances by pool",
                "Solid: the instance count the provider moves toward (the target, after the guard). Dashed: what "
                "the solver proposes at least cost, before the guard, for the demand or for a surge of the last "
                "guard.peak_memory_s (the decision's summary says which). The target follows the "
                "proposal up at once when the demand needs capacity (at most guard.max_scale_up per tick, after "
                "guard.scale_up_cooldown_s), for economy only when the saving repays the cold starts within "
                "guard.payback_s, and down by guard.max_scale_down at a time once the surplus has lasted "
                "guard.scale_down_delay_s (and the cold start's break-even). A proposal that swings while the "
                "target holds: the guard is absorbing noise. A target that trails a lasting proposal: the guard "
                "may be too strict.",
                "short",
                (
                    Query(pool_gauge(m.POOL_TARGET), "{{pool}} target"),
                    Query(pool_gauge(m.OPTIMIZER_PROPOSED), "{{pool}} proposed", reference=True),
                ),
                width=8,
            ),
        ),
    )


def _inputs() -> Section:
    return Section(
        "Behind the plan",
        (
            Chart(
                "Planned demand by model and size class",
                "Requests per second the optimizer plans for, stacked by model and size class (prompt-length x "
                "output-length buckets from optimizer.size_classes, e.g. in<=1024/out<=256; the input bucket alone "
                "when the output length is not known): the arrivals in the trailing optimizer.window_s plus the "
                "requests in flight, or the last quarter-window's pace when that is higher, so growing demand is "
                "planned for before the window catches up. Filtered by model only.",
                "reqps",
                (Query(f'{m.OPTIMIZER_DEMAND.name}{{model=~"$model"}}', "{{model}} {{size_class}}"),),
                width=6,
                stacked=True,
            ),
            Chart(
                "Capacity per instance by pool and size class",
                "Requests per second one instance of the pool serves within its model's TTFT and TPOT "
                "objectives, per size class, as the optimizer plans it: from the pool's latency model's mean plus "
                "one standard deviation, so cautiously while its confidence is low. The solver loads each instance "
                "to optimizer.utilization of this. A pool whose capacity is far below its peers' for a class "
                "gets little of that class's traffic; capacity that jumps as evidence arrives means the prior "
                "(profile or roofline) was off.",
                "reqps",
                (Query(pool_gauge(m.OPTIMIZER_CAPACITY), "{{pool}} {{size_class}}"),),
                width=6,
            ),
            Chart(
                "Latency-model confidence by pool",
                "How far request traces have narrowed each pool's latency model from its prior (its profile, "
                "its accelerator's roofline, or a generic guess): 0, the prior alone; toward 1, traces have "
                "narrowed its spread far below the prior's. It grows "
                "with the pool's traffic and decays as evidence ages (optimizer.learning.half_life_s). Low "
                "confidence plans the pool cautiously. A pool that stays low gets too little traffic to learn "
                "from: raise optimizer.exploration, or lower learning.prior_strength to trust traces sooner.",
                "percentunit",
                (Query(pool_gauge(m.OPTIMIZER_CONFIDENCE), "{{pool}}"),),
                width=6,
                max=1,
            ),
            Chart(
                "Eligible pools",
                "1 when the optimizer may send the pool traffic, 0 when it holds the pool out this tick: "
                "excluded by the quality gate, unhealthy (no instance passes its health probe), or failing (at "
                "least optimizer.unhealthy_error_rate of its requests in the window failed). A pool held out "
                "gets weight 0 and no exploration traffic. " + _DECISIONS + " (each pool's why_not).",
                "short",
                (Query(pool_gauge(m.OPTIMIZER_ELIGIBLE), "{{pool}}"),),
                width=6,
                max=1,
            ),
        ),
    )
