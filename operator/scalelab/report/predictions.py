"""The report's section of predictions at GPU counts not measured (scalelab.scaling), as HTML.

One table per batch: the model's step time, efficiency, time-to-target and GPU-seconds at the
measured counts (beside the measurement) and at the predicted ones, each with its 95% interval
and the reasons the model may not hold there; then the model, what the interval rests on and
where the model fails. Called by report/render.py with results.json's `scalingPredictions`.
"""

from __future__ import annotations

import html

from scalelab.scaling import BatchPrediction, PredictedPoint, ScalingPredictions

TITLE = "Predictions at GPU counts not measured"


def _num(value: float | None, scale: float = 1.0) -> str:
    return "–" if value is None else f"{value * scale:.3g}"


def _range(value: float | None, low: float | None, high: float | None, scale: float = 1.0) -> str:
    if value is None:
        return "–"
    return f"{_num(value, scale)} <small>[{_num(low, scale)}–{_num(high, scale)}]</small>"


def _row(point: PredictedPoint) -> str:
    kind = "measured" if point.measured else "predicted"
    steps = _num(point.steps_to_target)
    if point.steps_to_target is not None and point.steps_source:
        steps += f" <small>({html.escape(point.steps_source)})</small>"
    step = _range(point.step_seconds, point.step_seconds_low, point.step_seconds_high, 1e3)
    time = _range(point.time_to_target_seconds, point.time_to_target_low, point.time_to_target_high)
    cost = _range(point.gpu_seconds, point.gpu_seconds_low, point.gpu_seconds_high)
    cells = [
        f"<td>{point.gpus}</td>",
        f"<td>{point.batch_size}</td>",
        f'<td class="l">{kind}</td>',
        f"<td>{step}</td>",
        f"<td>{point.efficiency:.2f}</td>",
        f"<td>{steps}</td>",
        f"<td>{time}</td>",
        f"<td>{cost}</td>",
        f'<td class="l">{"<br>".join(html.escape(w) for w in point.warnings) or "–"}</td>',
    ]
    style = "" if point.measured else ' style="background:#fffbe6"'
    return f"<tr{style}>{''.join(cells)}</tr>"


def _batch(fit: BatchPrediction, cpu: bool) -> str:
    unit = "processes" if cpu else "GPUs"
    scope = "per process" if fit.scope == "perProcess" else "global"
    serial = f", serial {fit.serial_seconds * 1e3:.3g} ms" if fit.serial_seconds else ""
    head = (
        f"<h3>Batch {fit.batch_size} ({scope})</h3><p>Fitted on {unit} "
        f"{', '.join(str(n) for n in fit.measured_gpus)} ({fit.observations} step-time "
        f"observations): compute {fit.compute_seconds * 1e3:.3g} ms, communication "
        f"{fit.comm_seconds * 1e3:.3g} ms × log2 N{serial} (ring shape: "
        f"{fit.ring_comm_seconds * 1e3:.3g} ms × 2(N−1)/N); largest residual at a measured "
        f"count {fit.max_relative_residual:.0%}.</p>"
    )
    labels = [
        unit,
        "global batch",
        "",
        "step time (ms)",
        "efficiency",
        "steps to target",
        "time to target (s)",
        "process-s" if cpu else "GPU-s",
        "may not hold because",
    ]
    header = "".join(f"<th>{html.escape(label)}</th>" for label in labels)
    rows = "".join(_row(p) for p in fit.points)
    return f"{head}<table><tr>{header}</tr>{rows}</table>"


def predictions_html(predictions: ScalingPredictions | None, cpu: bool = False) -> str:
    """The section, or "" when no batch was measured on 2 or more counts (`cpu`: a run
    without GPUs, whose "GPUs" are processes)."""
    if predictions is None or not predictions.batches:
        return ""
    caveats = "".join(f"<li>{html.escape(c)}</li>" for c in predictions.caveats)
    return (
        f'<h2 id="predictions">{TITLE}</h2>'
        f'<div class="rec">Model: {html.escape(predictions.model)}. Counts up to 4× the largest '
        f"measured, within maxGPUs={predictions.max_gpus}; shaded rows are predicted. "
        f"Interval: {html.escape(predictions.interval)}.</div>"
        + "".join(_batch(fit, cpu) for fit in predictions.batches)
        + f"<h3>Where the model fails</h3><ul>{caveats}</ul>"
    )
