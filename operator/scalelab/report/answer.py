"""report.html's recommendation section: the answer to spec.objective, the fastest and the
cheapest, the configurations the data cannot tell apart, and what the model assumes.

Called by report/render.py; reads only `ResultsFile.recommendation` (aggregate.recommend).
"""

from __future__ import annotations

import html

from scalelab.api import ModelledConfiguration, Recommendation

#: What the modelled time assumes and where it fails (docs/recommendation.md says more).
ASSUMPTIONS = (
    "Modelled time-to-target = steps-to-target of the batch (mean over its trials that reached "
    "the target, or the fit S(B) = S_min(1 + B_crit/B) where none did) × the configuration's "
    "median steady-state step time (median over repeats of each trial's median). It leaves out "
    "start-up, compilation and evaluation (the measured/modelled column shows how much they "
    "add), assumes a configuration's step time does not change over its run, and that the same "
    "global batch needs the same steps on any number of processes. It fails where a step's time "
    "depends on the step (input pipelines that warm up, memory that fills), where a fit stands "
    "in far outside the batches measured, and for a larger cluster than the one measured "
    "(network topology, contention)."
)


def _fmt(value: float | None) -> str:
    return "–" if value is None else f"{value:.4g}"


def _row(c: ModelledConfiguration, cpu: bool, mark: str = "") -> str:
    rate = f" lr {c.base_learning_rate:g}" if c.base_learning_rate is not None else ""
    interval = f"{_fmt(c.low)}–{_fmt(c.high)}" if c.low is not None else "–"
    ratio = (
        c.measured_seconds / c.modelled_seconds
        if c.measured_seconds and c.modelled_seconds
        else None
    )
    return (
        f'<tr><td class="l">{html.escape(mark)}</td><td>{c.batch_size}{rate}</td><td>{c.gpus}'
        f"</td><td>{_fmt(c.modelled_seconds)}</td><td>{interval}</td>"
        f"<td>{_fmt(c.steps_to_target)} ({html.escape(c.steps_source)})</td>"
        f"<td>{_fmt(c.step_seconds)}</td><td>{_fmt(c.measured_seconds)}</td><td>{_fmt(ratio)}"
        f"</td><td>{_fmt(c.gpu_seconds)}</td><td>{_fmt(c.scaling_efficiency)}</td></tr>"
    )


def section(rec: Recommendation | None, cpu: bool) -> str:
    """The answers table and the set the data cannot tell apart (empty without a recommendation
    or before any configuration was modelled)."""
    if rec is None or (rec.fastest is None and not rec.indistinguishable):
        return ""
    devices, cost = ("processes", "process-s") if cpu else ("GPUs", "GPU-s")
    header = (
        f"<tr><th></th><th>batch</th><th>{devices}</th><th>modelled time→target s</th>"
        "<th>95% interval</th><th>steps→target (source)</th><th>median step s</th>"
        "<th>measured time→target s</th><th>measured/modelled</th>"
        f"<th>modelled {cost}</th><th>efficiency</th></tr>"
    )
    answers = [
        ("fastest", rec.fastest),
        ("cheapest", rec.cheapest),
    ]
    top = "".join(_row(c, cpu, mark) for mark, c in answers if c is not None)
    members = "".join(_row(c, cpu) for c in rec.indistinguishable)
    more = rec.indistinguishable_count - len(rec.indistinguishable)
    listed = f" ({more} more not listed)" if more > 0 else ""
    return (
        f"<h3>Objective: {html.escape(rec.goal or 'fastest')}; the fastest and the cheapest "
        f"answer</h3><table>{header}{top}</table>"
        f"<h3>Indistinguishable from the best: {rec.indistinguishable_count} "
        f"configuration(s){listed}</h3><p>{html.escape(rec.noise)}. The recommendation is the "
        "one with the fewest processes among them, and of those the best estimate (on exact "
        f"ties the smallest batch, then learning rate).</p><table>{header}{members}</table>"
        f"<p><small>{html.escape(ASSUMPTIONS)}</small></p>"
    )
