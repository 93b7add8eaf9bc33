"""Reading dashboards back from their JSON: every panel's queries, Grafana variables expanded, metric names.

These work on plain JSON dicts, without grafana-foundation-sdk: tests and the end-to-end checks use
them to run each query against Prometheus and to check it selects only metrics the gateway exports.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

__all__ = ["PanelQuery", "all_panels", "expand_variables", "metric_names", "panel_queries"]


@dataclass(frozen=True)
class PanelQuery:
    dashboard: str
    """The dashboard's uid."""
    panel: str
    """The panel's title."""
    ref_id: str
    expr: str


def all_panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Top-level panels and rows, then each collapsed row's own panels after it."""
    for panel in dashboard.get("panels", []):
        yield panel
        yield from panel.get("panels", [])


def panel_queries(dashboard: dict[str, Any]) -> list[PanelQuery]:
    """Every target of every panel, panels inside collapsed rows included."""
    return [
        PanelQuery(dashboard["uid"], panel["title"], target["refId"], target.get("expr", ""))
        for panel in all_panels(dashboard)
        for target in panel.get("targets", [])
    ]


_VARIABLE = re.compile(r"\$(?:\{(?P<braced>\w+)(?::[^}]*)?\}|(?P<bare>\w+))")


def expand_variables(expr: str, rate_interval: str = "1m") -> str:
    """Replaces the Grafana variables the dashboards use, so Prometheus can run the query as is.

    `$model` and `$pool` become `.*` (their "All" value); anything else that looks like a
    variable (such as `$1` in a label_replace replacement) is left alone.
    """
    values = {
        "__rate_interval": rate_interval,
        "__interval": rate_interval,
        "__range": "5m",
        "model": ".*",
        "pool": ".*",
    }

    def substitute(match: re.Match[str]) -> str:
        return values.get(match["braced"] or match["bare"], match[0])

    return _VARIABLE.sub(substitute, expr)


_STRING = re.compile(r'"(?:\\.|[^"\\])*"|\'(?:\\.|[^\'\\])*\'|`[^`]*`')
_COMMENT = re.compile(r"#[^\n]*")
_MATCHERS = re.compile(r"\{[^}]*\}")
_RANGE = re.compile(r"\[[^\]]*\]")
_LABEL_LIST = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", re.IGNORECASE)
# An identifier not glued to a number (the `m` of `5m`, the `e` of `1e-9`), and not a call.
_NAME = re.compile(r"(?<![\w.:])[A-Za-z_:][\w:]*(?![\w:])(?!\s*\()")
_KEYWORDS = frozenset(
    {"and", "or", "unless", "atan2", "bool", "by", "without", "on", "ignoring", "group_left", "group_right"}
    | {"offset", "inf", "nan"}
)


def metric_names(expr: str) -> set[str]:
    """The metric (series) names a PromQL expression selects.

    Strings, comments, label matchers, range and subquery brackets and grouping label lists are
    removed first; what remains that is a name, not a function call or a keyword, is a metric.
    """
    for pattern, replacement in (
        (_STRING, '""'),
        (_COMMENT, ""),
        (_MATCHERS, "{}"),
        (_RANGE, "[]"),
        (_LABEL_LIST, " "),
    ):
        expr = pattern.sub(replacement, expr)
    return {name for name in _NAME.findall(expr) if name.lower() not in _KEYWORDS}
