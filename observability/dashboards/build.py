"""Builds every board and writes the dashboards as the JSON files Grafana's file provisioning loads."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from observability.dashboards import economics, latency, optimizer, pools
from observability.dashboards.render import render

__all__ = ["DEFAULT_DIRECTORY", "build_dashboards", "write_dashboards"]

DEFAULT_DIRECTORY = Path("deploy/grafana/dashboards")
_BOARDS = (economics.board, latency.board, pools.board, optimizer.board)


def build_dashboards() -> dict[str, dict[str, Any]]:
    """File name -> dashboard JSON, as Grafana's file provisioning loads it."""
    boards = (declare() for declare in _BOARDS)
    return {f"{board.uid}.json": render(board) for board in boards}


def write_dashboards(directory: Path) -> list[Path]:
    """Writes every dashboard to `directory`, pretty-printed with sorted keys (stable diffs)."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, dashboard in sorted(build_dashboards().items()):
        path = directory / name
        path.write_text(json.dumps(dashboard, indent=2, sort_keys=True) + "\n")
        written.append(path)
    return written
