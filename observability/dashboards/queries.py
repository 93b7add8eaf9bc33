"""Reading dashboards back from their JSON: every panel's and annotation's queries, Grafana variables
expanded, metric names.

These work on plain JSON dicts, without grafana-foundation-sdk: tests and the end-to-end checks use
them to run each query against Prometheus and to check it selects only metrics the gateway exports.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

__all__ = [
    "ANNOTATION_REF_ID",
    "PanelQuery",
    "all_panels",
    "annotation_queries",
    "dashboard_metric_names",
    "dashboard_queries",
    "expand_variables",
    "metric_names",
    "panel_queries",
]

ANNOTATION_REF_ID = "Anno"
"""The reference id Grafana's Prometheus datasource gives an annotation's query."""


@dataclass(frozen=True)
class PanelQuery:
    dashboard: str
    """The dashboard's uid."""
    panel: str
    """The panel's title; for an annotation, `annotation: ` and its name."""
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


def annotation_queries(dashboard: dict[str, Any]) -> list[PanelQuery]:
    """The query of every Prometheus annotation (Grafana's built-in annotations have none).

    The expression is read where Grafana keeps it: `expr` as provisioned, or `target.expr` once
    Grafana has saved the dashboard again.
    """
    return [
        PanelQuery(
            dashboard["uid"],
            f"annotation: {annotation['name']}",
            ANNOTATION_REF_ID,
            annotation.get("expr") or annotation.get("target", {}).get("expr", ""),
        )
        for annotation in dashboard.get("annotations", {}).get("list", [])
        if annotation.get("datasource", {}).get("type") == "prometheus"
    ]


def dashboard_queries(dashboard: dict[str, Any]) -> list[PanelQuery]:
    """Everything the dashboard asks Prometheus: every panel's targets, then every annotation's query."""
    return panel_queries(dashboard) + annotation_queries(dashboard)


def dashboard_metric_names(dashboard: dict[str, Any]) -> set[str]:
    """The metric (series) names the dashboard's panels and annotations select."""
    return {name for query in dashboard_queries(dashboard) for name in metric_names(expand_variables(query.expr))}


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
# An identifier not glued to a number (the `m` of `5m`, the `e` of `1e-9`), not a Grafana variable
# (`$__interval`), and not a call.
_NAME = re.compile(r"(?<![\w.:$])[A-Za-z_:][\w:]*(?![\w:])(?!\s*\()")
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
