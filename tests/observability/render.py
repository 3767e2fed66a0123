"""Draws the dashboard's panels from a real Prometheus's answers with matplotlib (no Grafana runs
here): each panel at its gridPos, time series from range queries, bar charts from instant queries
arranged as Grafana's groupingToMatrix transformation arranges them.

Used by test_dashboard_queries.py; docs/monitoring-dashboard.png is its output.
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.axes import Axes

from tests.harness.prometheus import Prometheus
from tests.observability import grafana

UNITS = {"s": "s", "percent": "%", "percentunit": "", "short": ""}


def legend(fmt: str, labels: dict[str, str]) -> str:
    text = re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: labels.get(m.group(1), ""), fmt)
    return text or ", ".join(f"{k}={v}" for k, v in sorted(labels.items()))


def _number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        return float("inf")


def _timeseries(
    ax: Axes,
    panel: dict[str, Any],
    prom: Prometheus,
    values: dict[str, str],
    span: tuple[float, float],
) -> None:
    start, end = span
    step = max(1.0, (end - start) / 300)
    log = "scaleDistribution" in panel["fieldConfig"]["defaults"].get("custom", {})
    for target in panel["targets"]:
        expr = grafana.interpolate(target["expr"], values)
        data = prom.api("query_range", query=expr, start=str(start), end=str(end), step=str(step))
        series = sorted(data["result"], key=lambda s: legend(target["legendFormat"], s["metric"]))
        for s in series:
            xs = [float(t) - end for t, _ in s["values"]]
            ys = [float(v) for _, v in s["values"]]
            ax.plot(xs, ys, lw=1.2, label=legend(target["legendFormat"], s["metric"]))
    if log:
        ax.set_yscale("log")
    ax.set_xlabel("seconds before the snapshot", fontsize=7)
    ax.legend(fontsize=6, loc="best")


def _barchart(ax: Axes, panel: dict[str, Any], prom: Prometheus, values: dict[str, str]) -> None:
    options = panel["transformations"][0]["options"]
    row_field, col_field = options["rowField"], options["columnField"]
    result = prom.query(grafana.interpolate(panel["targets"][0]["expr"], values))
    cells = {(s["metric"][row_field], s["metric"][col_field]): float(s["value"][1]) for s in result}
    rows = sorted({r for r, _ in cells}, key=_number)
    cols = sorted({c for _, c in cells}, key=_number)
    width = 0.8 / max(1, len(cols))
    scale = 100.0 if panel["fieldConfig"]["defaults"]["unit"] == "percentunit" else 1.0
    for j, col in enumerate(cols):
        xs = [i + (j - (len(cols) - 1) / 2) * width for i in range(len(rows))]
        ys = [cells.get((r, col), 0.0) * scale for r in rows]
        bars = ax.bar(xs, ys, width, label=f"{col_field}={col}")
        ax.bar_label(bars, fmt="%.3g", fontsize=6)
    ax.set_xticks(range(len(rows)), [f"{row_field}={r}" for r in rows], fontsize=7)
    ax.legend(fontsize=6)


def _bargauge(ax: Axes, panel: dict[str, Any], prom: Prometheus, values: dict[str, str]) -> None:
    target = panel["targets"][0]
    result = prom.query(grafana.interpolate(target["expr"], values))
    items = sorted(
        (legend(target["legendFormat"], s["metric"]), float(s["value"][1])) for s in result
    )
    names = [n for n, _ in items]
    bars = ax.barh(names, [v for _, v in items], color="tab:green")
    ax.bar_label(bars, fmt="%.0f", fontsize=7)
    ax.tick_params(axis="y", labelsize=7)


def render(
    dashboard: dict[str, Any], prom: Prometheus, values: dict[str, str], path: Path, seconds: float
) -> None:
    """Write the picture of every panel over the last `seconds` to `path`."""
    panels = dashboard["panels"]
    height = max(p["gridPos"]["y"] + p["gridPos"]["h"] for p in panels)
    fig = plt.figure(figsize=(16, height * 0.36))
    grid = fig.add_gridspec(height, 24, hspace=0.0, wspace=0.0, top=0.975, bottom=0.01)
    end = time.time()
    for panel in panels:
        g = panel["gridPos"]
        if panel["type"] == "row":
            ax = fig.add_subplot(grid[g["y"] : g["y"] + 1, :])
            ax.axis("off")
            ax.text(0, 0.2, panel["title"], fontsize=12, weight="bold")
            continue
        ax = fig.add_subplot(
            grid[g["y"] + 1 : g["y"] + g["h"] - 1, g["x"] + 1 : g["x"] + g["w"] - 1]
        )
        defaults = panel["fieldConfig"]["defaults"]
        unit = defaults.get("custom", {}).get("axisLabel") or UNITS.get(defaults["unit"], "")
        ax.set_title(panel["title"], fontsize=9, loc="left")
        ax.tick_params(labelsize=7)
        if unit:
            ax.set_ylabel(unit, fontsize=7)
        if panel["type"] == "timeseries":
            _timeseries(ax, panel, prom, values, (end - seconds, end))
        elif panel["type"] == "barchart":
            _barchart(ax, panel, prom, values)
        elif panel["type"] == "bargauge":
            _bargauge(ax, panel, prom, values)
        ax.grid(alpha=0.3)
    fig.suptitle(
        f"{dashboard['title']} — experiment {values.get('experiment')}, namespace "
        f"{values.get('namespace')}. Drawn with matplotlib from a real Prometheus's query results "
        "in tests/observability (no Grafana); DCGM values come from fake exporters.",
        fontsize=9,
        y=0.993,
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80, bbox_inches="tight")
    plt.close(fig)
