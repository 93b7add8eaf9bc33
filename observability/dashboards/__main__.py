"""`python -m observability.dashboards [DIR]`: writes thrifty's Grafana dashboards (to deploy/grafana/dashboards)."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from observability.dashboards.build import DEFAULT_DIRECTORY, write_dashboards

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m observability.dashboards", description="Writes thrifty's Grafana dashboards."
    )
    parser.add_argument("directory", nargs="?", type=Path, default=DEFAULT_DIRECTORY)
    arguments = parser.parse_args(argv)
    for path in write_dashboards(arguments.directory):
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
