"""Turning a `Board` into Grafana's dashboard JSON with grafana-foundation-sdk.

The SDK is a dev dependency, so it is imported only inside these functions: importing this module,
and the package, works without it.
"""

from __future__ import annotations

import json
import string
from typing import TYPE_CHECKING, Any

from observability import metrics as m
from observability.dashboards.model import Annotation, Board, Chart, Note, Query, Section
from observability.dashboards.queries import all_panels

if TYPE_CHECKING:
    from grafana_foundation_sdk.builders import dashboard as grafana
    from grafana_foundation_sdk.builders import stat, timeseries
    from grafana_foundation_sdk.cog.builder import Builder
    from grafana_foundation_sdk.models.dashboard import AnnotationQuery, DataSourceRef
    from grafana_foundation_sdk.models.dashboard import Panel as PanelModel

__all__ = ["DATASOURCE_UID", "render"]

DATASOURCE_UID = "prometheus"
"""The Prometheus datasource every panel uses (deploy/grafana/provisioning/datasources/prometheus.yaml)."""
TAG = "thrifty"
REFRESH = "15s"


def render(board: Board) -> dict[str, Any]:
    """The board as Grafana's dashboard JSON, every panel numbered in layout order."""
    from grafana_foundation_sdk.builders import dashboard as grafana
    from grafana_foundation_sdk.cog.encoder import JSONEncoder
    from grafana_foundation_sdk.models.dashboard import DashboardCursorSync, DashboardLinkType

    builder = (
        grafana.Dashboard(board.title)
        .uid(board.uid)
        .description(board.description)
        .tags([TAG])
        .refresh(REFRESH)
        .time("now-1h", "now")
        .timezone("browser")
        .tooltip(DashboardCursorSync.CROSSHAIR)
        .link(
            grafana.DashboardLink("thrifty dashboards")
            .type(DashboardLinkType.DASHBOARDS)
            .tags([TAG])
            .as_dropdown(True)
            .include_vars(True)
            .keep_time(True)
        )
        .with_variable(_variable("model", "Model", f"label_values({m.POOL_INFO.name}, model)"))
        .with_variable(_variable("pool", "Pool", f'label_values({m.POOL_INFO.name}{{model=~"$model"}}, pool)'))
    )
    for section in board.sections:
        _add_section(builder, section)
    for annotation in board.annotations:
        builder.annotation(_annotation(annotation))
    rendered: dict[str, Any] = json.loads(json.dumps(builder.build(), cls=JSONEncoder))
    _add_prometheus_annotation_fields(rendered, board.annotations)
    _number_panels(rendered)
    return rendered


def _datasource() -> DataSourceRef:
    from grafana_foundation_sdk.models.dashboard import DataSourceRef

    return DataSourceRef(type_val="prometheus", uid=DATASOURCE_UID)


def _variable(name: str, label: str, query: str) -> grafana.QueryVariable:
    from grafana_foundation_sdk.builders import dashboard as grafana
    from grafana_foundation_sdk.models.dashboard import VariableOption, VariableRefresh, VariableSort

    return (
        grafana.QueryVariable(name)
        .label(label)
        .query(query)
        .datasource(_datasource())
        .multi(True)
        .include_all(True)
        .all_value(".*")
        .current(VariableOption(selected=True, text=["All"], value=["$__all"]))
        .refresh(VariableRefresh.ON_TIME_RANGE_CHANGED)
        .sort(VariableSort.ALPHABETICAL_ASC)
    )


def _add_section(builder: grafana.Dashboard, section: Section) -> None:
    from grafana_foundation_sdk.builders import dashboard as grafana

    row = grafana.Row(section.title)
    if section.collapsed:
        # Grafana keeps a row's own panels only when the row is collapsed.
        for panel in section.panels:
            row.with_panel(_panel(panel))
        builder.with_row(row)
        return
    builder.with_row(row)
    for panel in section.panels:
        builder.with_panel(_panel(panel))


def _panel(panel: Chart | Note) -> Builder[PanelModel]:
    if isinstance(panel, Note):
        return _note(panel)
    if panel.kind == "stat":
        return _stat(panel)
    return _timeseries(panel)


def _note(note: Note) -> Builder[PanelModel]:
    from grafana_foundation_sdk.builders import text
    from grafana_foundation_sdk.models.text import TextMode

    return (
        text.Panel()
        .title(note.title)
        .description(note.description)
        .mode(TextMode.MARKDOWN)
        .content(note.markdown)
        .span(note.width)
        .height(note.height)
    )


def _lettered(queries: tuple[Query, ...]) -> list[tuple[str, Query]]:
    """Grafana's reference ids: A, B, C..."""
    return list(zip(string.ascii_uppercase, queries, strict=False))


def _configure(panel: stat.Panel | timeseries.Panel, chart: Chart) -> None:
    """What stat and time-series panels share: text, unit, size, datasource and queries."""
    from grafana_foundation_sdk.builders import prometheus

    panel.title(chart.title).description(chart.description).unit(chart.unit).datasource(_datasource())
    panel.span(chart.width).height(chart.height)
    for ref_id, query in _lettered(chart.queries):
        panel.with_target(prometheus.Dataquery().ref_id(ref_id).expr(query.expr).legend_format(query.legend))
    if chart.max is not None:
        panel.max(chart.max)


def _stat(chart: Chart) -> Builder[PanelModel]:
    from grafana_foundation_sdk.builders import common, stat
    from grafana_foundation_sdk.builders import dashboard as grafana
    from grafana_foundation_sdk.models.common import BigValueColorMode, BigValueGraphMode
    from grafana_foundation_sdk.models.dashboard import Threshold, ThresholdsMode

    panel = (
        stat.Panel()
        .reduce_options(common.ReduceDataOptions().calcs(["lastNotNull"]).values(False))
        .graph_mode(BigValueGraphMode.AREA)
        .color_mode(BigValueColorMode.VALUE)
        # One neutral step: Grafana's default thresholds would paint any value above 80 red.
        .thresholds(grafana.ThresholdsConfig().mode(ThresholdsMode.ABSOLUTE).steps([Threshold(None, "blue")]))
    )
    _configure(panel, chart)
    return panel


def _timeseries(chart: Chart) -> Builder[PanelModel]:
    from grafana_foundation_sdk.builders import common, timeseries
    from grafana_foundation_sdk.models.common import (
        LegendDisplayMode,
        LegendPlacement,
        SortOrder,
        StackingMode,
        TooltipDisplayMode,
    )
    from grafana_foundation_sdk.models.dashboard import DynamicConfigValue

    panel = (
        timeseries.Panel()
        .min(0)
        .fill_opacity(10)
        .legend(
            common.VizLegendOptions()
            .show_legend(True)
            .display_mode(LegendDisplayMode.TABLE)
            .placement(LegendPlacement.BOTTOM)
            .calcs(["mean", "max", "lastNotNull"])
        )
        .tooltip(common.VizTooltipOptions().mode(TooltipDisplayMode.MULTI).sort(SortOrder.DESCENDING))
    )
    _configure(panel, chart)
    if chart.stacked:
        panel.stacking(common.StackingConfig().mode(StackingMode.NORMAL))
    if chart.objective is not None:
        _draw_objective(panel, chart.objective)
    dashed = DynamicConfigValue(id_val="custom.lineStyle", value={"fill": "dash", "dash": [10, 10]})
    for ref_id, query in _lettered(chart.queries):
        if query.reference:
            panel.override_by_query(ref_id, [dashed])
    return panel


def _draw_objective(panel: timeseries.Panel, objective: float) -> None:
    from grafana_foundation_sdk.builders import common
    from grafana_foundation_sdk.builders import dashboard as grafana
    from grafana_foundation_sdk.models.common import GraphTresholdsStyleMode
    from grafana_foundation_sdk.models.dashboard import Threshold, ThresholdsMode

    steps = [Threshold(None, "red"), Threshold(objective, "green")]
    panel.thresholds(grafana.ThresholdsConfig().mode(ThresholdsMode.ABSOLUTE).steps(steps))
    panel.thresholds_style(common.GraphThresholdsStyleConfig().mode(GraphTresholdsStyleMode.DASHED))


def _annotation(annotation: Annotation) -> Builder[AnnotationQuery]:
    from grafana_foundation_sdk.builders import dashboard as grafana

    return (
        grafana.AnnotationQuery()
        .name(annotation.name)
        .datasource(_datasource())
        .enable(True)
        .hide(False)
        .icon_color(annotation.color)
        .expr(annotation.expr)
    )


def _add_prometheus_annotation_fields(dashboard: dict[str, Any], annotations: tuple[Annotation, ...]) -> None:
    """What Grafana's Prometheus datasource reads from an annotation besides its query.

    The SDK's `AnnotationQuery` has no field for them (it models the built-in Grafana
    datasource), so they are added to the rendered JSON, in the annotations' order.
    """
    rendered = dashboard.get("annotations", {}).get("list", [])
    for entry, annotation in zip(rendered, annotations, strict=True):
        entry |= {
            "step": annotation.step,
            "titleFormat": annotation.title,
            "textFormat": annotation.text,
            "tagKeys": ",".join(annotation.tags),
            "useValueForTime": False,
        }


def _number_panels(dashboard: dict[str, Any]) -> None:
    """Gives every panel, rows and their nested panels included, a unique id in layout order."""
    for number, panel in enumerate(all_panels(dashboard), start=1):
        panel["id"] = number
