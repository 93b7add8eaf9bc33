"""The dashboards as plain data: boards of sections of charts and notes, each chart a few queries.

The boards are declared with these frozen dataclasses; `render` turns them into Grafana's JSON.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = ["Board", "Chart", "Note", "Query", "Section"]


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
class Board:
    uid: str
    title: str
    description: str
    sections: tuple[Section, ...]
