"""PNG plots of a run: the optimizer's weights, instances per pool, demand and cost rate over time.

matplotlib draws with the Agg backend (files only), imported when a plot is drawn.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from optimizer.simulate.report import RunReport, SeriesReport

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = ["plot_report"]

_FOCUS = "thrifty"


def plot_report(report: RunReport, out_dir: str | Path) -> list[Path]:
    """Write the run's PNGs into `out_dir` (created if needed); returns their paths."""
    import matplotlib

    matplotlib.use("Agg")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    focus = _FOCUS if _FOCUS in report.series else next(iter(report.series), None)
    if focus is None:
        return []
    written = [
        _weights(report, focus, out / f"{report.scenario}-weights.png"),
        _instances(report, out / f"{report.scenario}-instances.png"),
        _demand(report, focus, out / f"{report.scenario}-demand.png"),
        _cost(report, out / f"{report.scenario}-cost-rate.png"),
    ]
    return written


def _minutes(series: SeriesReport) -> list[float]:
    return [t / 60 for t in series.times]


def _weights(report: RunReport, policy: str, path: Path) -> Path:
    """The policy's per-pool weights (lines) and the shares the router really sent (dotted)."""
    import matplotlib.pyplot as plt

    series = report.series[policy]
    figure, axes = plt.subplots(figsize=(11, 4.5))
    x = _minutes(series)
    for index, (pool, values) in enumerate(series.weights.items()):
        if not any(values) and not any(series.routed[pool]):
            continue
        color = f"C{index % 10}"
        axes.step(x, values, where="post", color=color, label=f"{pool} weight")
        axes.plot(x, series.routed[pool], ":", color=color, alpha=0.6)
    axes.set_ylim(-0.02, 1.02)
    _style(axes, "traffic weight (dotted: share routed in the interval)")
    figure.suptitle(f"{report.scenario}: {policy} traffic weights")
    return _save(figure, path)


def _instances(report: RunReport, path: Path) -> Path:
    """Instances per pool over time, one panel per policy."""
    import matplotlib.pyplot as plt

    policies = list(report.series)
    figure, grid = plt.subplots(len(policies), 1, figsize=(11, 2.3 * len(policies) + 0.6), sharex=True, squeeze=False)
    for row, policy in enumerate(policies):
        axes = grid[row][0]
        series = report.series[policy]
        x = _minutes(series)
        for index, (pool, counts) in enumerate(series.instances.items()):
            if any(counts):
                axes.step(x, counts, where="post", color=f"C{index % 10}", label=pool)
        axes.set_title(policy, fontsize=9, loc="left")
        axes.set_ylim(bottom=0, top=max(1, *(max(c) for c in series.instances.values())) + 0.5)
        axes.yaxis.get_major_locator().set_params(integer=True)
        _style(axes, "instances", x_label=row == len(policies) - 1)
    figure.suptitle(f"{report.scenario}: instances per pool (starting or ready)")
    return _save(figure, path)


def _demand(report: RunReport, policy: str, path: Path) -> Path:
    import matplotlib.pyplot as plt

    series = report.series[policy]
    figure, axes = plt.subplots(figsize=(11, 3.8))
    axes.step(_minutes(series), series.demand, where="pre", color="tab:blue", label="arrivals per second")
    axes.set_ylim(bottom=0)
    _style(axes, "requests / s")
    figure.suptitle(f"{report.scenario}: demand (per interval of {report.interval_s:g} s)")
    return _save(figure, path)


def _cost(report: RunReport, path: Path) -> Path:
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(11, 4.2))
    for index, (policy, series) in enumerate(report.series.items()):
        width = 2.2 if policy == _FOCUS else 1.2
        axes.step(_minutes(series), series.cost_per_hour, where="post", color=f"C{index % 10}", linewidth=width,
                  label=policy)  # fmt: skip
    axes.set_ylim(bottom=0)
    _style(axes, "USD / hour")
    figure.suptitle(f"{report.scenario}: fleet cost rate")
    return _save(figure, path)


def _style(axes: Axes, y_label: str, *, x_label: bool = True) -> None:
    if x_label:
        axes.set_xlabel("minutes")
    axes.set_ylabel(y_label)
    axes.grid(True, alpha=0.3)
    if axes.get_legend_handles_labels()[0]:
        axes.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))


def _save(figure: Figure, path: Path) -> Path:
    import matplotlib.pyplot as plt

    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path
