"""Annotations that mark the optimizer's events (changes, failed ticks, policy reloads) on the boards.

Grafana runs an annotation's query at one point per step and marks the points above zero. Each
query here counts a counter's increments since the previous point: its value now less its value
one step (`$__interval`) ago. Consecutive points split the time range without gap or overlap, so
every increment is marked once, at the first point after the scrape that saw it. (An
`increase(...[$__interval])` would miss an increment between two samples on either side of a
window's start; `$__rate_interval` windows overlap and would mark one change at several points.)
"""

from __future__ import annotations

from observability import metrics as m
from observability.dashboards.model import Annotation
from observability.dashboards.promql import POOL, of_selected_pools

__all__ = ["optimizer_changes", "optimizer_failed_ticks", "policy_reloads"]

_DECISIONS = "The reasons are in the gateway's GET /admin/decisions."


def _increments(series: str) -> str:
    """What the counter `series` grew by since one step ago, per series.

    A series that did not exist a step ago (a pool's first change of its kind since the gateway
    started) counts whole. A counter reset (a gateway restart) shows as a fall, not an increment.
    """
    before = f"{series} offset $__interval"
    return f"({series} - {before}) or ({series} unless {before})"


def optimizer_changes() -> Annotation:
    """A mark per pool and kind of change (weight, target), for the pools the `$model` and `$pool` variables pick."""
    changes = f"{m.OPTIMIZER_CHANGES.name}{POOL}"
    return Annotation(
        "Optimizer changes",
        of_selected_pools(f"sum by (pool, what) ({_increments(changes)}) > 0"),
        "{{pool}}: {{what}} changed",
        "The optimizer changed the pool's {{what}} (weight: its share of its model's traffic; target: its "
        f"instance count). {_DECISIONS}",
        tags=("pool", "what"),
        color="blue",
    )


def _ticks(outcome: str) -> str:
    ticks = f'{m.OPTIMIZER_TICKS.name}{{outcome="{outcome}"}}'
    return f"sum by (outcome) ({_increments(ticks)}) > 0"


def optimizer_failed_ticks() -> Annotation:
    return Annotation(
        "Optimizer failed ticks",
        _ticks("failed"),
        "Optimizer tick failed",
        f"A tick raised an error: the last good plan stays in force. The error is in the gateway's log. {_DECISIONS}",
        tags=("outcome",),
        color="red",
    )


def policy_reloads() -> Annotation:
    return Annotation(
        "Optimizer policy reloads",
        _ticks("reloaded"),
        "Optimizer policy reloaded",
        "The optimizer's policy (with the models' SLOs and quality budgets) was reloaded from the config file: "
        "what follows this mark runs under the new policy.",
        tags=("outcome",),
        color="purple",
    )
