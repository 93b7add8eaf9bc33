"""Grafana dashboards for thrifty, as code: `python -m observability.dashboards [DIR]` writes them.

The dashboards are declared as plain data (`model`: boards of sections of charts, each chart a few
PromQL queries from `promql`, and annotations that mark events on them, from `annotations`) built
from the metric catalogue, one module per board (`economics`, `latency`, `pools`, `optimizer`),
then rendered to Grafana's JSON with grafana-foundation-sdk
(`render`) and written out (`build`). The SDK is a dev dependency, so it is imported only where
dashboards are rendered: the query helpers (`queries`: `dashboard_queries`, `panel_queries`,
`annotation_queries`, `expand_variables`, `metric_names`, `dashboard_metric_names`), which tests
and the end-to-end checks use, work without it.
"""

from observability.dashboards.build import DEFAULT_DIRECTORY, build_dashboards, write_dashboards
from observability.dashboards.queries import (
    PanelQuery,
    annotation_queries,
    dashboard_metric_names,
    dashboard_queries,
    expand_variables,
    metric_names,
    panel_queries,
)
from observability.dashboards.render import DATASOURCE_UID

__all__ = [
    "DATASOURCE_UID",
    "DEFAULT_DIRECTORY",
    "PanelQuery",
    "annotation_queries",
    "build_dashboards",
    "dashboard_metric_names",
    "dashboard_queries",
    "expand_variables",
    "metric_names",
    "panel_queries",
    "write_dashboards",
]
