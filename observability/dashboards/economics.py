"""The fleet economics board: what the fleet costs and what it produces, overall and by pool."""

from __future__ import annotations

from observability import metrics as m
from observability.dashboards.annotations import optimizer_changes, policy_reloads
from observability.dashboards.charts import cost_rate_by_pool, tokens_per_usd_by_pool
from observability.dashboards.model import Board, Chart, Query, Section
from observability.dashboards.promql import (
    MODEL_AND_POOL,
    POOL,
    fleet_rate,
    fleet_ratio,
    of_selected_pools,
    per_hour,
    pool_gauge,
    pool_ratio,
    sum_rate,
)

__all__ = ["board"]

_FLEET_NOTE = "All pools: ignores the model and pool filters."


def board() -> Board:
    return Board(
        "thrifty-economics",
        "thrifty: Fleet economics",
        "What the fleet costs and what it produces: tokens per second, dollars per hour, tokens per dollar.",
        (_fleet_headline(), _throughput_and_cost(), _efficiency(), _idle_and_attributed_cost()),
        # What the optimizer changed explains steps in cost and tokens per dollar.
        annotations=(optimizer_changes(), policy_reloads()),
    )


def _headline(title: str, description: str, unit: str, expr: str) -> Chart:
    return Chart(title, f"{description} {_FLEET_NOTE}", unit, (Query(expr, title),), kind="stat", width=4, height=4)


def _fleet_headline() -> Section:
    idle, cost = m.POOL_IDLE_COST.name, m.POOL_COST.name
    return Section(
        "Fleet",
        (
            _headline(
                "Fleet cost ($/hour)", "What all instances cost now.", "currencyUSD", f"sum({m.POOL_COST_RATE.name})"
            ),
            _headline("Output tokens/s", "Tokens generated per second.", "short", fleet_rate(m.OUTPUT_TOKENS)),
            _headline(
                "Output tokens per $",
                f"Over the rolling cost window ({m.COST_WINDOW.name}).",
                "short",
                m.FLEET_TOKENS_PER_USD.name,
            ),
            _headline(
                "$ per million output tokens",
                f"Over the rolling cost window ({m.COST_WINDOW.name}).",
                "currencyUSD",
                m.FLEET_USD_PER_MTOK.name,
            ),
            _headline(
                "Idle share of cost",
                "Share of the cost over the dashboard's time range paid while instances had no request.",
                "percentunit",
                f"sum(increase({idle}[$__range])) / sum(increase({cost}[$__range]))",
            ),
            _headline(
                "Spend over the time range",
                "Instance cost accrued over the dashboard's time range.",
                "currencyUSD",
                f"sum(increase({cost}[$__range]))",
            ),
        ),
    )


def _throughput_and_cost() -> Section:
    return Section(
        "Throughput and cost by pool",
        (
            Chart(
                "Output tokens/s by pool",
                f"Tokens generated per second, stacked by pool: rate of {m.OUTPUT_TOKENS.name}.",
                "short",
                (Query(sum_rate(m.OUTPUT_TOKENS, "pool", MODEL_AND_POOL), "{{pool}}"),),
                width=8,
                stacked=True,
            ),
            Chart(
                "Input tokens/s by pool",
                "Prompt tokens of answered requests per second, stacked by pool: prefill work the output "
                "tokens per dollar do not show.",
                "short",
                (Query(sum_rate(m.INPUT_TOKENS, "pool", MODEL_AND_POOL), "{{pool}}"),),
                width=8,
                stacked=True,
            ),
            cost_rate_by_pool(),
        ),
    )


def _efficiency() -> Section:
    from_counters = f"{sum_rate(m.OUTPUT_TOKENS, 'pool', MODEL_AND_POOL)} / {sum_rate(m.POOL_COST, 'pool', POOL)}"
    return Section(
        "Efficiency",
        (
            tokens_per_usd_by_pool(),
            Chart(
                "Output tokens per $ by pool (from counters)",
                "rate(output tokens) / rate(pool cost) over $__rate_interval: the same ratio as the rolling "
                "gauges, computed by Prometheus, so it reacts as fast as the rate window. Dashed: the fleet.",
                "short",
                (
                    Query(from_counters, "{{pool}}"),
                    Query(fleet_ratio(m.OUTPUT_TOKENS, m.POOL_COST), "fleet", reference=True),
                ),
                width=8,
            ),
            Chart(
                "$ per million output tokens by pool",
                "Dollars of instance cost per million output tokens over the rolling cost window. "
                "Dashed: the fleet. Lower is better.",
                "currencyUSD",
                (
                    Query(pool_gauge(m.POOL_USD_PER_MTOK), "{{pool}}"),
                    Query(m.FLEET_USD_PER_MTOK.name, "fleet", reference=True),
                ),
                width=8,
            ),
        ),
    )


def _idle_and_attributed_cost() -> Section:
    return Section(
        "Idle and attributed cost",
        (
            Chart(
                "Idle cost by pool ($/hour)",
                "Cost accrued while an instance had no request, as dollars per hour: "
                f"rate of {m.POOL_IDLE_COST.name} x 3600.",
                "currencyUSD",
                (Query(of_selected_pools(per_hour(sum_rate(m.POOL_IDLE_COST, "pool", POOL))), "{{pool}}"),),
                width=8,
            ),
            Chart(
                "Idle share of cost by pool",
                "rate(idle cost) / rate(cost): the share of what a pool costs that buys no tokens. "
                "Dashed: the whole fleet.",
                "percentunit",
                (
                    Query(pool_ratio(m.POOL_IDLE_COST, m.POOL_COST), "{{pool}}"),
                    Query(fleet_ratio(m.POOL_IDLE_COST, m.POOL_COST), "fleet", reference=True),
                ),
                width=8,
                max=1,
            ),
            Chart(
                "Attributed cost by model and pool ($/hour)",
                "Instance cost attributed to requests (busy time shared between concurrent requests), "
                "as dollars per hour, stacked.",
                "currencyUSD",
                (
                    Query(
                        per_hour(sum_rate(m.REQUEST_COST, "model, pool", MODEL_AND_POOL)),
                        "{{model}} / {{pool}}",
                    ),
                ),
                width=8,
                stacked=True,
            ),
        ),
    )
