"""Charts that appear on more than one board (fleet economics and the optimizer's context row)."""

from __future__ import annotations

from observability import metrics as m
from observability.dashboards.model import Chart, Query
from observability.dashboards.promql import pool_gauge

__all__ = ["cost_rate_by_pool", "price_by_pool", "tokens_per_usd_by_pool"]


def tokens_per_usd_by_pool() -> Chart:
    return Chart(
        "Output tokens per $ by pool (rolling window)",
        "Output tokens per dollar of instance cost over the gateway's rolling cost window "
        f"({m.COST_WINDOW.name}); dashed: the whole fleet. Higher is better.",
        "short",
        (
            Query(pool_gauge(m.POOL_TOKENS_PER_USD), "{{pool}}"),
            Query(m.FLEET_TOKENS_PER_USD.name, "fleet", reference=True),
        ),
        width=8,
    )


def cost_rate_by_pool() -> Chart:
    return Chart(
        "Cost by pool ($/hour)",
        "What each pool's instances cost now: instances x price per instance-hour. Dashed: all pools together.",
        "currencyUSD",
        (
            Query(pool_gauge(m.POOL_COST_RATE), "{{pool}}"),
            Query(f"sum({m.POOL_COST_RATE.name})", "fleet", reference=True),
        ),
        width=8,
    )


def price_by_pool() -> Chart:
    return Chart(
        "Price per instance-hour by pool",
        "What one instance of each pool costs per hour: the price the optimizer weighs tokens against.",
        "currencyUSD",
        (Query(pool_gauge(m.POOL_PRICE), "{{pool}}"),),
        width=8,
    )
