"""The optimizer board: what the optimizer steers (traffic weights, instance targets) and the economics it steers by."""

from __future__ import annotations

from observability import metrics as m
from observability.dashboards.charts import cost_rate_by_pool, price_by_pool, tokens_per_usd_by_pool
from observability.dashboards.model import Board, Chart, Note, Query, Section
from observability.dashboards.promql import pool_gauge, rate

__all__ = ["board"]


def board() -> Board:
    requests = m.REQUESTS.name
    served = f'{requests}{{model=~"$model", pool=~"$pool", pool!=""}}'
    per_model = f'{requests}{{model=~"$model", pool!=""}}'
    observed_share = f"sum by (model, pool) ({rate(served)}) / on (model) group_left sum by (model) ({rate(per_model)})"
    return Board(
        "thrifty-optimizer",
        "thrifty: Optimizer",
        "What the optimizer steers (traffic weights, instance targets) and the economics it steers by.",
        (
            Section(
                "Optimizer",
                (
                    Note(
                        "The optimizer's plans",
                        "Placeholder for the optimizer's plan and decision panels.",
                        "The optimizer is being built next: panels for its plans and the reason behind each "
                        "change land with it. Until then this row shows what it will steer: traffic weights "
                        "and instance targets per pool.",
                    ),
                    Chart(
                        "Traffic weight by pool",
                        "The pool's traffic weight within its model, as the router uses it now.",
                        "short",
                        (Query(pool_gauge(m.POOL_WEIGHT), "{{pool}}"),),
                        width=8,
                    ),
                    Chart(
                        "Observed traffic share by pool",
                        "Share of each model's answered requests that each pool served, to compare with "
                        "the weights (requests that never reached a pool are left out).",
                        "percentunit",
                        (Query(observed_share, "{{model}} / {{pool}}"),),
                        width=8,
                        max=1,
                    ),
                    Chart(
                        "Target instances by pool",
                        "The instance count the provider moves toward.",
                        "short",
                        (Query(pool_gauge(m.POOL_TARGET), "{{pool}}"),),
                        width=8,
                    ),
                ),
            ),
            Section("Economics, for context", (tokens_per_usd_by_pool(), cost_rate_by_pool(), price_by_pool())),
        ),
    )
