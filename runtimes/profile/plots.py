"""PNG curves of a profile: latency against load with the SLO lines, and throughput against latency.

matplotlib draws with the Agg backend (files only, no display), imported when a plot is drawn.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from runtimes.profile.profile_file import Level, Profile

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = ["plot_profile"]


def plot_profile(profile: Profile, out_dir: str | Path) -> list[Path]:
    """Write the profile's PNGs into `out_dir` (created if needed); returns their paths."""
    import matplotlib

    matplotlib.use("Agg")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = [_throughput_vs_latency(profile, out / "throughput_vs_latency.png")]
    closed = [level for level in profile.levels if level.mode == "closed"]
    if closed:
        x = [float(level.concurrency or 0) for level in closed]
        written.append(_latency_vs_load(profile, closed, x, "concurrency", out / "latency_vs_concurrency.png"))
    opened = [level for level in profile.levels if level.mode == "open"]
    if opened:
        x = [level.request_rate or 0.0 for level in opened]
        written.append(_latency_vs_load(profile, opened, x, "offered rate (req/s)", out / "latency_vs_rate.png"))
    return written


def _latency_vs_load(profile: Profile, levels: Sequence[Level], x: list[float], x_label: str, path: Path) -> Path:
    """TTFT and TPOT (p50, p95) against the load, each with its SLO line."""
    import matplotlib.pyplot as plt

    figure, (ttft, tpot) = plt.subplots(1, 2, figsize=(11, 4.2))
    for axes, name, limit in ((ttft, "ttft", profile.slo.ttft_p95_ms), (tpot, "tpot", profile.slo.tpot_p95_ms)):
        axes.plot(x, _values(levels, f"p95_{name}_ms"), "o-", label="p95")
        axes.plot(x, _values(levels, f"p50_{name}_ms"), "s--", alpha=0.6, label="p50")
        axes.axhline(limit, color="tab:red", linestyle=":", label=f"SLO p95 {limit:g} ms")
        _style(axes, x_label, f"{name.upper()} (ms)")
        axes.set_xscale("log", base=2)  # levels usually double
        axes.set_xticks(x, labels=[f"{value:g}" for value in x])
        axes.minorticks_off()
    figure.suptitle(_title(profile, "latency against load"))
    return _save(figure, path)


def _throughput_vs_latency(profile: Profile, path: Path) -> Path:
    """Output tokens per second against TPOT p95 and TTFT p95, a line per loop mode, capacity starred."""
    import matplotlib.pyplot as plt

    figure, (tpot, ttft) = plt.subplots(1, 2, figsize=(11, 4.2))
    panels = ((tpot, "tpot", profile.slo.tpot_p95_ms), (ttft, "ttft", profile.slo.ttft_p95_ms))
    for axes, name, limit in panels:
        for mode, marker in (("closed", "o-"), ("open", "s--")):
            levels = [level for level in profile.levels if level.mode == mode]
            latency, throughput = _values(levels, f"p95_{name}_ms"), _values(levels, "output_throughput")
            if levels:
                axes.plot(latency, throughput, marker, label=f"{mode} loop")
            for level, x, y in zip(levels, latency, throughput, strict=True):
                axes.annotate(level.label, (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)
        axes.axvline(limit, color="tab:red", linestyle=":", label=f"SLO p95 {limit:g} ms")
        if profile.capacity is not None:
            best = getattr(profile.capacity, f"p95_{name}_ms")
            axes.plot([best], [profile.capacity.output_throughput * profile.instances], "*", markersize=16,
                      color="tab:green", label="capacity")  # fmt: skip
        _style(axes, f"{name.upper()} p95 (ms)", "output tokens/s")
    figure.suptitle(_title(profile, "throughput against latency"))
    return _save(figure, path)


def _values(levels: Sequence[Level], field: str) -> list[float]:
    return [float(getattr(level.metrics, field)) for level in levels]


def _style(axes: Axes, x_label: str, y_label: str) -> None:
    axes.set_xlabel(x_label)
    axes.set_ylabel(y_label)
    axes.grid(True, alpha=0.3)
    axes.legend(fontsize=8)


def _title(profile: Profile, what: str) -> str:
    subject = profile.pool or profile.base_url
    workload = profile.workload
    return f"{profile.model} on {subject}: {what} ({workload.prompt_tokens} in / {workload.output_tokens} out tokens)"


def _save(figure: Figure, path: Path) -> Path:
    import matplotlib.pyplot as plt

    figure.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(figure)
    return path
