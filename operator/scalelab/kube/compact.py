"""The budget of a ScaleExperiment's status: what it keeps of a results table of up to 1,000 rows.

etcd stores the experiment whole, and every watcher (the operator itself, `kubectl get -w`,
dashboards) receives it whole on each change, so its status stays small however big the sweep.
The full table lives where it scales: each ScaleTrial holds its own row (`kubectl get
scaletrials -l scalelab.dev/experiment=NAME`, with its result in `-o yaml`), and `scalelab report
--experiment NAME` writes every row with the curves the trainers stored (kube/results.py).

The budget, whatever the sweep:
- `results`: at most STATUS_ROWS rows, best first: the recommended trial, the rest of the Pareto
  front, the other measured trials fastest first, then the unmeasured ones in plan order;
  `omittedResults` counts the finished trials left out.
- `recommendation.pareto` and `criticalBatch.efficiency`: at most STATUS_ROWS entries each (the
  front thinned evenly with both ends kept; the intervals of the shown rows' configurations first).
- every reason in a row or a condition message: at most REASON_CHARS characters (the ScaleTrial
  keeps it whole).
A row is at most ~0.7 KiB, so the status stays under STATUS_BYTES (32 KiB) at 1,000 trials with
the longest names and reasons (tests/kube/test_decide.py builds that worst case).
"""

from __future__ import annotations

from collections.abc import Sequence

from scalelab.aggregate import MEASURED
from scalelab.api import CriticalBatch, EfficiencyInterval, ParetoPoint, Recommendation, ResultRow

#: Rows of status.results, Pareto points and efficiency intervals kept in the status, each.
STATUS_ROWS = 20
#: A reason in the status is cut to this many characters (an ellipsis marks the cut).
REASON_CHARS = 200
#: What the status of any experiment stays under, by construction. Unit: bytes (compact JSON).
STATUS_BYTES = 32 * 1024


def cut(text: str, limit: int = REASON_CHARS) -> str:
    """`text`, cut to `limit` characters with an ellipsis when longer."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _time(row: ResultRow) -> float:
    time = row.time_to_target_seconds or row.seconds
    return time if time is not None else float("inf")


def top_rows(
    rows: Sequence[ResultRow], recommendation: Recommendation | None, limit: int = STATUS_ROWS
) -> list[ResultRow]:
    """The rows the status shows, best first, their reasons cut."""
    by_name = {r.trial: r for r in rows}
    named = [recommendation.trial] if recommendation is not None and recommendation.trial else []
    named += [p.trial for p in recommendation.pareto] if recommendation is not None else []
    ranked = [by_name[name] for name in dict.fromkeys(named) if name in by_name]
    chosen = {r.trial for r in ranked}
    measured = sorted(
        (r for r in rows if r.phase in MEASURED and r.trial not in chosen),
        key=lambda r: (_time(r), r.gpu_seconds or 0.0),
    )
    ranked += measured
    ranked += [r for r in rows if r.phase not in MEASURED and r.trial not in chosen]
    return [_cut_row(r) for r in ranked[:limit]]


def _cut_row(row: ResultRow) -> ResultRow:
    update: dict[str, str] = {}
    if len(row.reason) > REASON_CHARS:
        update["reason"] = cut(row.reason)
    noise = row.gradient_noise_scale_reason
    if noise is not None and len(noise) > REASON_CHARS:
        update["gradient_noise_scale_reason"] = cut(noise)
    return row.model_copy(update=update) if update else row


def thin(points: Sequence[ParetoPoint], limit: int = STATUS_ROWS) -> list[ParetoPoint]:
    """At most `limit` points of a front, evenly spaced, the first and the last kept."""
    if len(points) <= limit:
        return list(points)
    step = (len(points) - 1) / (limit - 1)
    return [points[round(i * step)] for i in range(limit)]


def compact_recommendation(recommendation: Recommendation) -> Recommendation:
    """The recommendation with its Pareto front thinned to the budget."""
    if len(recommendation.pareto) <= STATUS_ROWS:
        return recommendation
    return recommendation.model_copy(update={"pareto": thin(recommendation.pareto)})


def _key(interval: EfficiencyInterval) -> tuple[int, int, float | None]:
    return (interval.batch_size, interval.gpus, interval.base_learning_rate)


def compact_critical(critical: CriticalBatch, shown: Sequence[ResultRow]) -> CriticalBatch:
    """The critical-batch analysis with at most STATUS_ROWS efficiency intervals: those of the
    shown rows' configurations first, then the others in order."""
    if len(critical.efficiency) <= STATUS_ROWS:
        return critical
    wanted = {(r.batch_size, r.gpus, r.base_learning_rate) for r in shown}
    first = [e for e in critical.efficiency if _key(e) in wanted]
    rest = [e for e in critical.efficiency if _key(e) not in wanted]
    return critical.model_copy(update={"efficiency": (first + rest)[:STATUS_ROWS]})
