"""Benchmark charts as base64 PNG data URIs; matplotlib is imported only when called."""

from __future__ import annotations

import base64
import io
import logging
from typing import Any

from harness.errors import MissingTool
from harness.report.data import bench_rows, stats

log = logging.getLogger(__name__)

#: Fixed colours so a transport looks the same in every chart and every report.
COLOURS = {
    "legacy": "#8c959f",
    "iovec": "#0969da",
    "bufpool": "#1a7f37",
    "bufpool-registered": "#8250df",
    "zero-copy": "#bf8700",
    "kmbuf": "#1b7c83",
    "kmbuf-zero-copy": "#953800",
}
_FALLBACK = ("#cf222e", "#1b7c83", "#6e7781", "#953800", "#3e4ccf")


def colour(transport: str, index: int = 0) -> str:
    return COLOURS.get(transport) or _FALLBACK[index % len(_FALLBACK)]


def _pyplot():
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise MissingTool("matplotlib is needed to plot bench.json", "run: .venv/bin/pip install matplotlib "
                          "(or make setup)") from exc
    return plt


def _data_uri(fig: Any, plt: Any) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def workload_chart(name: str, workload: dict[str, Any]) -> str:
    """Bars at the median per transport, whiskers min..max, a box for the IQR, dots per sample."""
    plt = _pyplot()
    transports = [(t, xs) for t, xs in (workload.get("transports") or {}).items() if xs]
    fig, ax = plt.subplots(figsize=(5.2, 3.2))
    for i, (transport, samples) in enumerate(transports):
        s = stats(samples)
        assert s is not None
        c = colour(transport, i)
        ax.bar(i, s.median, width=0.62, color=c, zorder=2)
        ax.vlines(i, s.low, s.high, color="#24292f", linewidth=1.2, zorder=3)
        ax.hlines((s.low, s.high), i - 0.12, i + 0.12, color="#24292f", linewidth=1.2, zorder=3)
        ax.add_patch(plt.Rectangle((i - 0.2, s.q1), 0.4, max(s.q3 - s.q1, 1e-9), fill=False,
                                   edgecolor="#24292f", linewidth=1.0, zorder=3))
        ax.scatter([i] * len(samples), samples, s=9, color="white", edgecolors="#24292f", linewidths=0.6, zorder=4)
        ax.annotate(f"{s.median:.4g}", (i, s.high), textcoords="offset points", xytext=(0, 3),
                    ha="center", fontsize=8)
    ax.set_xticks(range(len(transports)), [t for t, _ in transports], rotation=20, ha="right", fontsize=8)
    arrow = "higher is better" if workload.get("higher_is_better", True) else "lower is better"
    ax.set_ylabel(f"{workload.get('unit', '')} ({arrow})", fontsize=8)
    ax.set_title(name, fontsize=10, fontweight="bold")
    ax.grid(axis="y", color="#d0d7de", linewidth=0.6, zorder=0)
    ax.spines[["top", "right"]].set_visible(False)
    ax.margins(y=0.12)
    return _data_uri(fig, plt)


def cpu_chart(cpu: dict[str, float]) -> str:
    """Horizontal bars of CPU microseconds per request per transport (lower is better)."""
    plt = _pyplot()
    items = list(cpu.items())
    fig, ax = plt.subplots(figsize=(5.2, 0.45 * len(items) + 0.9))
    ax.barh(range(len(items)), [v for _, v in items], color=[colour(t, i) for i, (t, _) in enumerate(items)],
            zorder=2)
    for i, (_, v) in enumerate(items):
        ax.annotate(f"{v:.3g}", (v, i), textcoords="offset points", xytext=(3, 0), va="center", fontsize=8)
    ax.set_yticks(range(len(items)), [t for t, _ in items], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("CPU µs per request (lower is better)", fontsize=8)
    ax.set_title("CPU cost", fontsize=10, fontweight="bold")
    ax.grid(axis="x", color="#d0d7de", linewidth=0.6, zorder=0)
    ax.spines[["top", "right"]].set_visible(False)
    ax.margins(x=0.15)
    return _data_uri(fig, plt)


def ratio_chart(bench: dict[str, Any], base: str, metric: str = "") -> str | None:
    """A workload x transport grid coloured by relative performance vs base (green better, 0.5x..2x).

    Each cell says the median ratio and, with paired rounds, the min..max over the rounds; a cell
    whose range crosses 1 is drawn pale: the run cannot tell that transport from the baseline there.
    metric "cpu_" draws the ratios per host CPU the VM got instead of the throughput ratios.
    """
    rows = [r for r in bench_rows(bench) if r["transport"] != base and r[metric + "vs"].get(base) is not None]
    if not rows:
        return None
    import math

    plt = _pyplot()
    workloads = list(dict.fromkeys(r["workload"] for r in rows))
    transports = list(dict.fromkeys(r["transport"] for r in rows))
    fig, ax = plt.subplots(figsize=(1.5 * len(transports) + 1.6, 0.55 * len(workloads) + 1.1))
    cmap = plt.get_cmap("RdYlGn")
    for r in rows:
        x, y = transports.index(r["transport"]), workloads.index(r["workload"])
        value, rng = r[metric + "vs"][base], r[metric + "vs_range"].get(base)
        level = max(-1.0, min(1.0, math.log2(value)))
        unsure = rng is not None and rng[0] < 1 < rng[1]
        ax.add_patch(plt.Rectangle((x - 0.5, y - 0.5), 1, 1, color=cmap(0.5 + level / 2),
                                   alpha=0.35 if unsure else 1.0, linewidth=0))
        label = f"{value:.2f}x" + (f"\n{rng[0]:.2f}-{rng[1]:.2f}" if rng else "")
        ax.text(x, y, label, ha="center", va="center", fontsize=7.5)
    ax.set_xlim(-0.5, len(transports) - 0.5)
    ax.set_ylim(len(workloads) - 0.5, -0.5)
    ax.set_xticks(range(len(transports)), transports, rotation=20, ha="right", fontsize=8)
    ax.set_yticks(range(len(workloads)), workloads, fontsize=8)
    what = "Per host CPU" if metric else "Relative performance"
    ax.set_title(f"{what} vs {base} (>1 better; pale: range crosses 1)", fontsize=9, fontweight="bold")
    ax.tick_params(length=0)
    ax.spines[:].set_visible(False)
    return _data_uri(fig, plt)


def bench_charts(bench: dict[str, Any]) -> list[tuple[str, str]]:
    """(title, data URI): the ratio grids vs each baseline, every workload, the CPU chart when present."""
    from harness.report.data import baselines

    bases = baselines(bench)
    charts = [(f"vs {b}", uri) for b in bases if (uri := ratio_chart(bench, b))]
    charts += [(f"per host CPU vs {b}", uri) for b in bases if (uri := ratio_chart(bench, b, "cpu_"))]
    charts += [(name, workload_chart(name, wl)) for name, wl in (bench.get("workloads") or {}).items()
               if any(wl.get("transports", {}).values())]
    if bench.get("cpu_us_per_request"):
        charts.append(("CPU cost", cpu_chart(bench["cpu_us_per_request"])))
    log.debug("rendered %d benchmark charts", len(charts))
    return charts
