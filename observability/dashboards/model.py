"""The dashboards as plain data: boards of sections of charts and notes, each chart a few queries.

A board may also carry annotations: events drawn across the time axis of every chart on it.
The boards are declared with these frozen dataclasses; `render` turns them into Grafana's JSON.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = ["Annotation", "Board", "Chart", "Note", "Query", "Section"]


@dataclass(frozen=True)
class Query:
    expr: str
    legend: str
    reference: bool = False
    """A line to compare against (an objective, a fleet total, a target): drawn dashed."""


@dataclass(frozen=True)
class Chart:
    title: str
    description: str
    unit: str
    queries: tuple[Query, ...]
    kind: Literal["timeseries", "stat"] = "timeseries"
    width: int = 12
    height: int = 8
    max: float | None = None
    stacked: bool = False
    objective: float | None = None
    """Drawn as a dashed threshold line: red below, green at or above."""


@dataclass(frozen=True)
class Note:
    title: str
    description: str
    markdown: str
    width: int = 24
    height: int = 4


@dataclass(frozen=True)
class Section:
    title: str
    panels: tuple[Chart | Note, ...]
    collapsed: bool = False


@dataclass(frozen=True)
class Annotation:
    """A Prometheus query whose series mark events on every chart of the board.

    Grafana runs `expr` over the dashboard's time range, one point per step (`$__interval` in the
    query), and marks each point where a series is above zero; marks of a series no more than a
    step apart merge into one region.
    """

    name: str
    """Shown on the toggle at the top of the dashboard."""
    expr: str
    title: str
    """Each mark's title, a legend format over the series' labels (`{{pool}}: {{what}}`)."""
    text: str = ""
    """Each mark's text, in the same format."""
    tags: tuple[str, ...] = ()
    """Labels whose values become the mark's tags."""
    color: str = "blue"
    step: str = ""
    """A fixed step (`1m`); empty: Grafana picks it from the time range, as for a chart. A fixed step
    overrides Grafana's resolution limit, so a long time range can exceed Prometheus' 11,000 points."""


@dataclass(frozen=True)
class Board:
    uid: str
    title: str
    description: str
    sections: tuple[Section, ...]
    annotations: tuple[Annotation, ...] = ()
