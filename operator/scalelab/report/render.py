"""DIR/report.html (self-contained: every plot embedded as base64 PNG) and DIR/plots/*.png.

`scalelab run` renders it at the end; `scalelab report DIR` re-renders it from results.json;
`scalelab report --experiment NAME` renders a cluster experiment's (kube/results.py).
"""

from __future__ import annotations

import base64
import html
import multiprocessing
import os
import threading
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import yaml

from scalelab.aggregate import trial_counts
from scalelab.report import answer, plots
from scalelab.report.predictions import predictions_html
from scalelab.results import store
from scalelab.results.columns import HTML_COLUMNS, Column, shown
from scalelab.results.model import ResultsFile, TrialRecord, has_learning_rates, seconds_between

REPORT_HTML = "report.html"
PLOTS_DIR = "plots"

_CSS = """
body{font-family:system-ui,sans-serif;margin:2em;max-width:1300px;color:#222}
table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #ccc;padding:3px 6px;
text-align:right}th{background:#f3f3f3}td.l{text-align:left}
.Succeeded{color:#1a7f37}.Diverged{color:#9a6700}.Failed{color:#cf222e}.Skipped{color:#888}.Pruned{color:#888}
figure{margin:1.5em 0}img{max-width:100%;border:1px solid #eee}
.rec{background:#eef6ff;border-left:4px solid #0969da;padding:.6em 1em}
pre{background:#f6f8fa;padding:1em;font-size:12px;overflow:auto}
"""


def _fmt(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.4g}"
    return html.escape(str(value))


def _params(value: dict[str, Any] | None) -> str:
    if not value:
        return "–"
    shown = ("w", "wNorm", "b", "norm")  # 1-D line: w, b; d > 1: |w|, b; networks: |θ|
    return ", ".join(f"{'|w|' if k == 'wNorm' else k}={_fmt(v)}" for k, v in value.items()
                     if k in shown)  # fmt: skip


def _cell(column: Column, trial: TrialRecord) -> str:
    value = getattr(trial, column.field)
    if column.field == "phase":
        return f'<td class="l {trial.phase.value}">{trial.phase.value}</td>'
    if column.field in ("params", "optimum"):
        return f'<td class="l">{_params(value)}</td>'
    return f'<td class="l">{_fmt(value)}</td>' if column.text else f"<td>{_fmt(value)}</td>"


#: Column labels of a CPU run (resources.gpusPerProcess 0), whose "GPUs" are processes.
_CPU_LABELS = {
    "gpus": "processes",
    "gpu_seconds": "process-s",
    "device_seconds": "process-s incl. preempted runs",
}


def _table(
    trials: list[TrialRecord], kind: str, cpu: bool = False, learning_rates: bool = False
) -> str:
    columns = shown(HTML_COLUMNS, learning_rates)
    if all(t.input_wait_fraction is None for t in trials):  # no trial streamed its input
        columns = tuple(c for c in columns if not c.streamed)
    if not any(t.precision or t.jit_compile for t in trials):  # all float32, no XLA
        columns = tuple(c for c in columns if not c.compute)
    if not any(t.queue_seconds for t in trials):  # no trial waited for quota
        columns = tuple(c for c in columns if not c.queued)
    if all(t.device_seconds is None for t in trials):  # no run's GPU time recorded
        columns = tuple(c for c in columns if not c.spent)
    labels = [_CPU_LABELS.get(c.field, c.label) if cpu else c.label for c in columns]
    header = "".join(f"<th>{label.format(kind=kind)}</th>" for label in labels)
    rows = ["<tr>" + "".join(_cell(c, t) for c in columns) + "</tr>" for t in trials]
    return f"<table><tr>{header}</tr>{''.join(rows)}</table>"


def _figure(name: str, title: str, png: bytes, caption: str = "") -> str:
    data = base64.b64encode(png).decode()
    return (
        f'<figure id="{name}"><h3>{html.escape(title)}</h3>'
        f'<img src="data:image/png;base64,{data}" alt="{html.escape(title)}">'
        + (f"<figcaption>{html.escape(caption)}</figcaption>" if caption else "")
        + "</figure>"
    )


def _diagnostics(results: ResultsFile) -> str:
    seen: dict[str, list[str]] = {}
    for t in results.trials:
        for warning in t.warnings:
            seen.setdefault(warning, []).append(t.name)
    items = [
        f"<li>{html.escape(w)} <small>({len(names)} trial(s): "
        f"{html.escape(', '.join(names[:4]))}{'…' if len(names) > 4 else ''})</small></li>"
        for w, names in seen.items()
    ] + [f"<li>{html.escape(w)}</li>" for w in results.warnings]
    for t in results.trials:
        d = t.diagnostics
        if d.get("hessianEigenvalues") and t.repeat == 0:
            items.append(
                f"<li>{html.escape(t.name)}: Hessian eigenvalues {_fmt(d['hessianEigenvalues'])},"
                f" max stable learning rate {_fmt(d.get('maxStableLearningRate'))}</li>"
            )
            break
    return "<ul>" + "".join(items) + "</ul>" if items else "<p>No warnings.</p>"


def _critical(results: ResultsFile) -> str:
    """Predicted (B_simple) vs measured (fit, 20% rule) critical batch size, with intervals."""
    c = results.critical_batch
    if c is None:
        return ""
    fitted = (
        "beyond the largest batch measured"
        if c.beyond_range
        else f"{_fmt(c.fitted)} (95% CI {_fmt(c.fitted_low)}–{_fmt(c.fitted_high)}), "
        f"R²(log S) {_fmt(c.fit_r2)}"
    )
    rates = has_learning_rates(results)
    rate_th = "<th>learning rate</th>" if rates else ""

    def rate(value: float | None) -> str:
        return f"<td>{_fmt(value)}</td>" if rates else ""

    steps = "".join(
        f"<tr><td>{s.batch_size}</td>{rate(s.base_learning_rate)}<td>{s.runs}</td>"
        f"<td>{_fmt(s.mean)}</td><td>{_fmt(s.stdev)}</td></tr>"
        for s in c.steps
    )
    devices = "processes" if plots.on_cpu(results) else "GPUs"
    eff = "".join(
        f"<tr><td>{e.batch_size}</td><td>{e.gpus}</td><td>{e.base_gpus}</td>"
        f"{rate(e.base_learning_rate)}<td>{e.runs}</td><td>{_fmt(e.mean)}</td>"
        f"<td>{_fmt(e.low)}–{_fmt(e.high)}</td></tr>"
        for e in c.efficiency
    )
    relative = (
        f" (relative to the fewest {devices} measured at each batch, N₀, where no 1-process "
        "trial ran: E = thr(N) / ((N/N₀)·thr(N₀)))"
        if any(e.base_gpus > 1 for e in c.efficiency)
        else ""
    )
    return (
        f'<h2>Critical batch size</h2><div class="rec">{html.escape(c.summary)}</div>'
        "<table><tr><th>predicted: B_simple at target (median, trial range)</th>"
        "<th>fitted S = S_min(1 + B_crit/B)</th><th>20% over linear</th></tr>"
        f"<tr><td>{_fmt(c.predicted)} ({_fmt(c.predicted_low)}–{_fmt(c.predicted_high)})</td>"
        f"<td>{fitted}</td><td>{_fmt(c.twenty_percent)}</td></tr></table>"
        "<h3>Steps to target per batch size"
        + (" (at its best learning rate)" if rates else "")
        + f"</h3><table><tr><th>batch</th>{rate_th}<th>runs</th>"
        f"<th>mean steps</th><th>std dev</th></tr>{steps}</table>"
        + (
            f"<h3>Scaling efficiency, 95% interval over repeats{relative}</h3><table><tr>"
            f"<th>batch</th><th>{devices}</th><th>vs N₀</th>{rate_th}<th>runs</th>"
            "<th>efficiency</th><th>95% interval</th>"
            "</tr>"
            f"{eff}</table>"
            if eff
            else ""
        )
    )


def _startup(results: ResultsFile) -> str:
    groups = [g for g in results.groups if g.startup_seconds is not None]
    if not groups:
        return ""
    rows = "".join(
        f"<tr><td>{g.processes}</td><td>{g.trials}</td><td>{_fmt(g.startup_seconds)}</td>"
        f"<td>{_fmt(g.wall_seconds)}</td></tr>"
        for g in groups
    )
    return (
        "<h2>Trainer processes</h2><p>Each launch pays interpreter, TensorFlow and Horovod "
        "start-up once for all its trials (<code>--trial-list</code>).</p><table><tr>"
        "<th>processes</th><th>trials</th><th>start-up s</th><th>wall s</th></tr>"
        f"{rows}</table>"
    )


def _simple(make: Callable[[ResultsFile], bytes | None], results: ResultsFile, _: Path) -> Any:
    return make(results)


# Every figure: a function of the results and the run's directory (the 3-D plot reads the
# exported dataset), listed slowest first so that parallel drawing ends together.
_DRAW: dict[str, Callable[[ResultsFile, Path], Any]] = {
    "lab-trajectory-3d": plots.trajectory_3d,
    **{name: partial(_simple, make) for name, (_, make) in plots.SIMPLE_FIGURES.items()},
    "steps-to-target": lambda results, _: plots.steps_to_target_fit(results),
}
_INPUT: tuple[ResultsFile, Path] | None = None  # what forked drawing processes draw from


def _draw(name: str) -> tuple[str, Any]:
    assert _INPUT is not None
    return name, _DRAW[name](*_INPUT)


def _draw_all(results: ResultsFile, directory: Path) -> dict[str, Any]:
    """Every figure's output by name. matplotlib draws in Python, holding the GIL, so a report
    drawn on one core takes seconds (about 1.6 s for lab 1's six figures on this project's
    machine); with several cores and no other thread alive, the figures are drawn in forked
    processes, which inherit the imported matplotlib and the results without pickling them.
    Otherwise (one core, no fork on this platform, a thread that could hold a lock across the
    fork) they are drawn here, one after another, with the same output."""
    global _INPUT  # noqa: PLW0603 - read by the forked children, reset after
    workers = min(len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1, 4)
    forkable = "fork" in multiprocessing.get_all_start_methods()
    if workers < 2 or not forkable or threading.active_count() > 1:
        return {name: draw(results, directory) for name, draw in _DRAW.items()}
    _INPUT = (results, directory)
    try:
        with multiprocessing.get_context("fork").Pool(workers) as pool:
            return dict(pool.imap_unordered(_draw, _DRAW))
    finally:
        _INPUT = None


#: The figures in the order the report shows them.
_ORDER = (
    "lab-gd-loss-vs-epoch",
    "lab-sgd-loss-vs-update",
    "lab-trajectory-3d",
    "loss-per-batch",
    "steps-to-target",
    "throughput-efficiency",
    "pareto",
)


def _figures(results: ResultsFile, directory: Path) -> dict[str, tuple[str, bytes, str]]:
    """Every figure that applies: name → (title, PNG, caption)."""
    drawn = _draw_all(results, directory)
    figures: dict[str, tuple[str, bytes, str]] = {}
    for name, (title, _) in plots.SIMPLE_FIGURES.items():
        png = drawn[name]
        if png is not None:
            figures[name] = (plots.device_words(results, title), png, "")
    surface = drawn["lab-trajectory-3d"]
    if surface is not None:
        figures["lab-trajectory-3d"] = (
            "Lab 1: trajectories over the loss surface",
            surface,
            "Loss surface over w ∈ [0, 20], b ∈ [−18, 22] (200×200 grid) from the exported "
            "dataset; from the trial's initial parameters through every update when the "
            "trainer recorded them (measurement.recordUpdateLosses), else every epoch end.",
        )
    fit_png, fit = drawn["steps-to-target"]
    if fit_png is not None:
        caption = (
            f"Fit: S_min = {fit.s_min:.4g} steps, B_crit = {fit.b_crit:.4g}, R²(log S) = "
            f"{fit.r2:.3f}."
            if fit is not None
            else ""
        )
        if results.critical_batch is not None:
            caption = results.critical_batch.summary
        figures["steps-to-target"] = ("Steps and epochs to target vs batch", fit_png, caption)
    return figures


def _recommendation(results: ResultsFile) -> str:
    rec = results.recommendation
    if rec is None or not rec.trial:
        text = html.escape(rec.reason if rec else "none yet")
    else:
        where = f"{rec.gpus} CPU process(es)" if plots.on_cpu(results) else f"{rec.gpus} GPU(s)"
        rate = f", learning rate {rec.learning_rate:.4g}" if rec.learning_rate else ""
        if rec.base_learning_rate is not None:
            rate = f", learning rate {rec.base_learning_rate:.4g} at the reference batch" + (
                f" ({rec.learning_rate:.4g} at this batch)"
                if rec.learning_rate and rec.learning_rate != rec.base_learning_rate
                else ""
            )
        text = f"batch {rec.batch_size} on {where}{rate}. {html.escape(rec.reason)}"
    return f'<div class="rec"><b>Recommendation:</b> {text}</div>' + answer.section(
        rec, plots.on_cpu(results)
    )


def _overview(results: ResultsFile) -> str:
    """Trials by phase, the efficiency kind, when, and (CPU runs) what "GPU" stands for."""
    counts = trial_counts(t.phase for t in results.trials)
    device = (
        " These trials ran on CPU processes (resources.gpusPerProcess 0): where a reason or "
        "figure says GPU, read one CPU process."
        if plots.on_cpu(results)
        else ""
    )
    return (
        f"<p>Trials: {counts.total} total, {counts.succeeded} succeeded, {counts.diverged} "
        f"diverged, {counts.failed} failed, {counts.skipped} skipped, {counts.pruned} pruned, "
        f"{counts.running} running, {counts.pending} pending. "
        f"Scaling efficiency is <b>{results.scaling_efficiency_kind}</b> scaling.{device} "
        f"Updated {time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime(results.updated_at or 0))}"
        ".</p>"
    )


def _queue_wait(results: ResultsFile) -> str:
    """How much of the sweep's time its trials spent waiting for quota: Σ queueSeconds against
    Σ (finished − created), each trial's time from its submission (MPIJob created) to its end."""
    admitted = [t for t in results.trials if t.queue_seconds is not None]
    if not admitted:
        return ""
    if not results.host.get("cluster"):
        return (
            "<p>Queue: <code>scalelab run</code> has no queue: each trial starts when its trainer "
            "reaches it, so none waited for quota (queue wait 0 s).</p>"
        )
    waited = sum(t.queue_seconds or 0.0 for t in admitted)
    if not waited:
        return (
            f"<p>Queue: none of the {len(admitted)} admitted trial(s) waited for quota: each was "
            "admitted as it was submitted.</p>"
        )
    spans = {
        t.name: (t.queue_seconds or 0.0, span)
        for t in admitted
        if t.times and (span := seconds_between(t.times.created, t.times.finished))
    }
    total = sum(span for _, span in spans.values())
    share = (
        f", {sum(w for w, _ in spans.values()) / total:.0%} of the {total:.0f} s its finished "
        "trials took from submission to end"
        if total > 0
        else ""
    )
    longest = max(admitted, key=lambda t: t.queue_seconds or 0.0)
    return (
        f"<p>Queue: the trials waited {waited:.0f} s for quota in all{share}; the longest wait "
        f"was {_fmt(longest.queue_seconds)} s ({html.escape(longest.name)}). More GPUs in the "
        "queue could have saved that time; the sweep's own maxGPUs and maxConcurrentTrials hold "
        "a trial before it is submitted and are not counted.</p>"
    )


def _spent(results: ResultsFile) -> str:
    """GPU time used incl. preempted runs (Σ deviceSeconds: every run's devices × pod run time)
    against the measurement's cost (Σ gpuSeconds of the finished trials)."""
    counted = [t for t in results.trials if t.device_seconds is not None]
    if not counted:
        return ""
    used = sum(t.device_seconds or 0.0 for t in counted)
    measured = sum(t.gpu_seconds or 0.0 for t in results.trials)
    unit = "process" if plots.on_cpu(results) else "GPU"
    share = f"; the measurement itself cost {measured:.0f} {unit}-s" if measured else ""
    return (
        f"<p>{unit} time used incl. preempted runs: {used:.0f} {unit}-s "
        f"({used / 3600:.2f} {unit}-hours) over {len(counted)} trial(s): every run's devices × "
        f"pod run time, runs Kueue preempted or interrupted and failed ones included{share}.</p>"
    )


def build_html(results: ResultsFile, directory: Path) -> tuple[str, dict[str, bytes]]:
    """The report's HTML and its PNGs by file stem."""
    figures = _figures(results, directory)
    title = f"scalelab report: {results.experiment}"
    body = [
        f"<h1>{html.escape(title)}</h1>",
        _overview(results),
        _queue_wait(results),
        _spent(results),
        _recommendation(results),
        _critical(results),
        predictions_html(results.scaling_predictions, cpu=plots.on_cpu(results)),
        "<h2>Results</h2>",
        _table(
            results.trials,
            results.scaling_efficiency_kind,
            plots.on_cpu(results),
            has_learning_rates(results),
        ),
        "<h2>Plots</h2>",
        *(_figure(n, *figures[n]) for n in _ORDER if n in figures),
        "<h2>Diagnostics</h2>",
        _diagnostics(results),
        _startup(results),
        "<h2>Resolved spec</h2>",
        f"<pre>{html.escape(yaml.safe_dump(results.spec, sort_keys=False))}</pre>",
    ]
    page = (
        f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>'
        f"{html.escape(title)}</title><style>{_CSS}</style></head><body>"
        + "\n".join(body)
        + "</body></html>\n"
    )
    return page, {name: png for name, (_, png, _) in figures.items()}


def render_report(directory: Path, results: ResultsFile) -> Path:
    """Write DIR/plots/*.png and DIR/report.html (atomically); return the report's path."""
    page, pngs = build_html(results, directory)
    plot_dir = directory / PLOTS_DIR
    plot_dir.mkdir(parents=True, exist_ok=True)
    for name, png in pngs.items():
        store.write_atomic(plot_dir / f"{name}.png", png)
    path = directory / REPORT_HTML
    store.write_atomic(path, page.encode())
    return path
