"""The results file of a local run (DIR/results.json, schema `scalelab.results/v1`) and its rows.

`TrialRecord` is one trial as the local executor saw it: the planned grid point, the trainer's
`start`, `epoch` and `result` events folded together (`record_from_events`), and what the
aggregation adds (scaling efficiency and its base, GPU-seconds, the configuration's modelled
time-to-target and the measured/modelled ratio). `ResultsFile` is what `scalelab report`
re-renders from. Pure data and pure functions; reading and writing live in
results/store.py.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from scalelab.aggregate import MEASURED, analysis, configuration, recommend, with_scaling
from scalelab.api import (
    MAX_INT,
    BatchScope,
    CriticalBatch,
    Recommendation,
    ResultRow,
    ScaleExperiment,
    TrialPhase,
    TrialTimes,
    read_trial_result,
)
from scalelab.planner import PlannedTrial
from scalelab.scaling import ScalingPredictions, predictions
from scalelab.timing import epoch_step_seconds, modelled

SCHEMA_VERSION = "scalelab.results/v1"

#: A trial is input-bound when its step loop waited for input more than this share of its time
#: (the trainer's rule, docs/trial-contract.md; applied here only to a trial without a result).
INPUT_BOUND_FRACTION = 0.1

#: Trial phases a rerun with the same --out does not run again (Failed only with --retry-failed).
DONE_PHASES = frozenset(
    {TrialPhase.SUCCEEDED, TrialPhase.DIVERGED, TrialPhase.SKIPPED, TrialPhase.PRUNED}
)


class ResultsModel(BaseModel):
    """camelCase on disk; unknown keys from newer writers are ignored, not fatal."""

    model_config = ConfigDict(extra="ignore", alias_generator=to_camel, populate_by_name=True)


class RecordTimes(TrialTimes):
    """A trial's times (api.TrialTimes) in results.json, read as leniently as the rest of it."""

    model_config = ConfigDict(extra="ignore")


class TrialRecord(ResultsModel):
    """One trial of a local run: grid point, outcome, measurements, curves."""

    name: str
    batch_size: int
    gpus: int
    repeat: int = 0
    seed: int = 0
    learning_rate: float | None = None  # resolved by the planner (the trainer reports its own)
    base_learning_rate: float | None = None  # the sweep.learningRates value; None without one
    phase: TrialPhase = TrialPhase.PENDING
    reason: str = ""
    epochs: int | None = None
    steps: int | None = None
    final_loss: float | None = None
    samples_per_second: float | None = None
    scaling_efficiency: float | None = None
    scaling_efficiency_kind: str | None = None  # "strong" or "weak", see aggregate.py
    efficiency_base_gpus: int | None = None  # N₀: the fewest processes measured at the batch
    steps_to_target: int | None = None
    epochs_to_target: int | None = None
    time_to_target_seconds: float | None = None
    # The configuration's modelled time-to-target (timing.py: steps-to-target × median step
    # time) and this trial's measured time-to-target over it (a diagnostic: start-up, evaluation
    # and bursts the model leaves out).
    modelled_seconds: float | None = None
    model_ratio: float | None = None
    step_seconds: float | None = None  # median steady-state step time (stepTimeSeconds.p50)
    seconds: float | None = None  # training time reported by the trainer
    wall_seconds: float | None = None  # this trial's share of wall time, start-up included
    # When it was created, admitted, running and finished (a cluster trial's status.times), and
    # created → admitted: how long it waited for quota. scalelab run has no queue: 0, and its
    # times are all the trainer's start event but the end.
    queue_seconds: float | None = None
    times: RecordTimes | None = None
    gpu_seconds: float | None = None
    # Every run's devices × pod run time, preempted, interrupted and failed runs included (a
    # cluster trial's status.deviceSeconds); None where not recorded (scalelab run).
    device_seconds: float | None = None
    gradient_noise_scale: float | None = None
    gradient_noise_scale_stderr: float | None = None
    gradient_noise_scale_reason: str | None = None  # why gradient_noise_scale is None
    critical_batch_size: float | None = None
    critical_batch_size_stderr: float | None = None
    # Streamed data (plugin API 2): the step loop's share of time waiting for input, and whether
    # that made the trial input-bound; None for data in memory.
    input_wait_fraction: float | None = None
    input_bound: bool | None = None
    dataset_size: int | None = None  # the examples trained on (the trainer's count)
    # What the model computed in (training.mixedPrecision as planned; after the trial the
    # trainer's: float32, float64, float16 or bfloat16, "(emulated)" on a CPU), and XLA.
    precision: str | None = None
    jit_compile: bool | None = None
    initial_loss: float | None = None
    initial_params: dict[str, Any] | None = None
    params: dict[str, Any] | None = None
    optimum: dict[str, Any] | None = None
    diagnostics: dict[str, Any] = Field(default_factory=dict)
    warnings: list[str] = Field(default_factory=list)
    curves: dict[str, list[Any]] = Field(default_factory=dict)
    pruned: bool = False  # Skipped or Pruned by the adaptive sweep (the reason says why)
    data_file: str | None = None  # the trainer's --export-data output, relative to DIR
    argv: list[str] = Field(default_factory=list)  # the planner's trainer command
    started_at: float | None = None
    finished_at: float | None = None

    @property
    def done(self) -> bool:
        """True when a rerun keeps this trial instead of running it again."""
        return self.phase in DONE_PHASES


class GroupTiming(ResultsModel):
    """One trainer process of the local executor: how long start-up took, how many trials ran."""

    processes: int
    trials: int
    startup_seconds: float | None = None  # process launch → first `start` event
    wall_seconds: float | None = None


class ResultsFile(ResultsModel):
    """DIR/results.json."""

    schema_version: str = SCHEMA_VERSION
    experiment: str
    spec: dict[str, Any]
    scaling_efficiency_kind: str = "strong"
    host: dict[str, Any] = Field(default_factory=dict)
    updated_at: float | None = None
    trials: list[TrialRecord] = Field(default_factory=list)
    recommendation: Recommendation | None = None
    critical_batch: CriticalBatch | None = None
    # Step time, time-to-target and GPU-seconds at GPU counts not measured (scaling.py).
    scaling_predictions: ScalingPredictions | None = None
    groups: list[GroupTiming] = Field(default_factory=list)
    warnings: list[str] = Field(default_factory=list)


def new_results(
    experiment: ScaleExperiment,
    trials: list[TrialRecord],
    host: dict[str, Any],
    groups: list[GroupTiming] | None = None,
) -> ResultsFile:
    """The results file of `experiment` (a local run's or a cluster experiment's) over `trials`.

    Its spec says the examples the trials trained on: workload.datasetSize with a built-in
    dataset's default filled in (the report's plots read it), null where a custom workload
    trains on all it provides."""
    scope = experiment.spec.sweep.batch_scope
    spec = experiment.spec.model_dump(by_alias=True, mode="json")
    spec["workload"]["datasetSize"] = experiment.spec.workload.examples()
    if spec["sweep"]["learningRates"] is None:  # without the axis, the spec it always wrote
        del spec["sweep"]["learningRates"]
    return ResultsFile(
        experiment=experiment.metadata.name,
        spec=spec,
        scaling_efficiency_kind="weak" if scope is BatchScope.PER_PROCESS else "strong",
        host=host,
        trials=trials,
        groups=groups or [],
    )


def has_learning_rates(results: ResultsFile) -> bool:
    """Whether the run's sweep has a learningRates axis (then its tables and plots show it)."""
    sweep = results.spec.get("sweep")
    return isinstance(sweep, dict) and bool(sweep.get("learningRates"))


def data_file(trial: str) -> str:
    """Where a trial's exported dataset lives, relative to the results directory."""
    return f"data/{trial}.npz"


def planned_record(trial: PlannedTrial, argv: list[str]) -> TrialRecord:
    """The record of a trial before it runs: Pending, or Skipped with the planner's reason."""
    return TrialRecord(
        name=trial.name,
        batch_size=trial.batch_size,
        gpus=trial.gpus,
        repeat=trial.repeat,
        seed=trial.spec.seed,
        learning_rate=trial.spec.learning_rate,
        base_learning_rate=trial.base_learning_rate,
        phase=trial.phase,
        reason=trial.reason,
        argv=argv,
        precision=_planned_precision(trial),
        jit_compile=trial.spec.training.jit_compile,
    )


def _planned_precision(trial: PlannedTrial) -> str | None:
    mode = trial.spec.training.mixed_precision.value
    return None if mode == "off" else mode


def _precision(summary: Any) -> str | None:
    """The result's `precision` as a cell: what the model computed in, and whether emulated."""
    if not isinstance(summary, dict) or not isinstance(summary.get("compute"), str):
        return None
    return str(summary["compute"]) + (" (emulated)" if summary.get("emulated") else "")


def _num(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _int(value: Any) -> int | None:
    return int(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def record_from_events(
    planned: TrialRecord,
    start: dict[str, Any] | None,
    epochs: list[dict[str, Any]],
    result: dict[str, Any] | None,
) -> TrialRecord:
    """Fold a trial's trainer events into its record (the result event wins over epoch events)."""
    update: dict[str, Any] = {}
    if start is not None:
        update["diagnostics"] = dict(start.get("diagnostics") or {})
        update["started_at"] = _num(start.get("time"))
        update["dataset_size"] = _int(start.get("datasetSize"))
    curves: dict[str, list[Any]] = {
        "epochLoss": [e.get("loss") for e in epochs],
        "updateLoss": [e.get("updateLoss") for e in epochs],
        "params": [e.get("params") for e in epochs],
        "steps": [e.get("steps") for e in epochs],
        "seconds": [e.get("seconds") for e in epochs],
        "samplesPerSecond": [e.get("samplesPerSecond") for e in epochs],
        "stepSeconds": [e.get("stepSeconds") for e in epochs],
        "learningRate": [e.get("learningRate") for e in epochs],
        "gradientNoiseScale": [e.get("gradientNoiseScale") for e in epochs],
        "gradientNoiseScaleStderr": [e.get("gradientNoiseScaleStderr") for e in epochs],
    }
    if result is not None:
        for key, value in (result.get("curves") or {}).items():
            if isinstance(value, list):
                curves[key] = value
        update |= _from_result(result)
    elif epochs:
        last = epochs[-1]
        update |= {
            "epochs": _int(last.get("epoch")),
            "steps": _int(last.get("steps")),
            "final_loss": _num(last.get("loss")),
            "samples_per_second": _num(last.get("samplesPerSecond")),
            **_input_time(epochs),
        }
    if start is not None and not update.get("warnings"):
        update["warnings"] = [str(w) for w in update["diagnostics"].get("warnings") or []]
    disagreement = _learning_rate_disagreement(planned, start)
    if disagreement:
        update["warnings"] = [*update.get("warnings", planned.warnings), disagreement]
    update["curves"] = curves
    return planned.model_copy(update=update)


def _learning_rate_disagreement(planned: TrialRecord, start: Mapping[str, Any] | None) -> str:
    """A warning when the trainer resolved another learning rate than the planner."""
    resolved = (start or {}).get("learningRate")
    if (
        planned.learning_rate is None
        or not isinstance(resolved, int | float)
        or math.isclose(resolved, planned.learning_rate, rel_tol=1e-9)
    ):
        return ""
    return (
        f"the trainer resolved learning rate {resolved:g}, the planner "
        f"{planned.learning_rate:g}: the trial contract's scaling rules disagree"
    )


def _input_time(epochs: list[dict[str, Any]]) -> dict[str, Any]:
    """A trial without a result (stopped or failed mid-run): the input-time fields of its epochs
    so far, as the result would sum them; nothing for data in memory (epochs without them)."""
    waits = [_num(e.get("inputWaitSeconds")) for e in epochs]
    calls = [_num(e.get("stepCallSeconds")) for e in epochs]
    if any(w is None for w in waits) or any(c is None for c in calls):
        return {}
    wait, call = sum(w or 0.0 for w in waits), sum(c or 0.0 for c in calls)
    if wait + call <= 0:
        return {}
    fraction = wait / (wait + call)
    return {"input_wait_fraction": fraction, "input_bound": fraction > INPUT_BOUND_FRACTION}


def _from_result(result: dict[str, Any]) -> dict[str, Any]:
    """The record's fields from a `result` event: the typed ones through api.TrialResult, plus
    what only the results file keeps (initial loss and parameters, the trainer's own params)."""
    typed = read_trial_result(result)
    if typed is None:
        return {"phase": TrialPhase.FAILED, "reason": "", "finished_at": _num(result.get("time"))}
    fields = typed.model_dump(
        include={
            "phase",
            "reason",
            "epochs",
            "steps",
            "final_loss",
            "samples_per_second",
            "steps_to_target",
            "epochs_to_target",
            "time_to_target_seconds",
            "seconds",
            "gradient_noise_scale",
            "gradient_noise_scale_stderr",
            "gradient_noise_scale_reason",
            "critical_batch_size",
            "critical_batch_size_stderr",
            "input_wait_fraction",
            "input_bound",
            "warnings",
        }
    ) | {
        "initial_loss": _num(result.get("initialLoss")),
        "initial_params": result.get("initialParams"),
        "params": result.get("params"),
        "optimum": result.get("optimum"),
        "finished_at": _num(result.get("time")),
        "step_seconds": _median_step(result.get("stepTimeSeconds")),
    }
    if typed.dataset_size is not None:  # else the start event's count stands
        fields["dataset_size"] = typed.dataset_size
    computed = _precision(result.get("precision"))
    if computed is not None:  # (a trainer without the field: the planned value stands)
        fields["precision"] = computed
    return fields


def _median_step(step_time: Any) -> float | None:
    """The trainer's median steady-state step time (stepTimeSeconds.p50), if it reported one."""
    value = _num(step_time.get("p50")) if isinstance(step_time, dict) else None
    return value if value is not None and value > 0 else None


def rfc3339(seconds: float) -> str:
    """RFC 3339 UTC time, second precision (as Kubernetes writes its times)."""
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def seconds_between(start: str | None, end: str | None) -> float | None:
    """Seconds from one RFC 3339 time to another; None when either is missing or unreadable."""
    try:
        a, b = (datetime.fromisoformat(t) for t in (start or "", end or ""))
    except ValueError:
        return None
    return (b - a).total_seconds() if a.tzinfo and b.tzinfo else None


def unqueued(started: float | None, finished: float | None) -> dict[str, Any]:
    """The times of a trial of `scalelab run`, which has no queue: created, admitted and running
    are all its start event (the trainer's clock), and it waited 0 s; nothing before it started."""
    if started is None:
        return {}
    begun = rfc3339(started)
    times = RecordTimes(
        created=begun,
        admitted=begun,
        running=begun,
        finished=rfc3339(finished) if finished is not None else None,
    )
    return {"times": times, "queue_seconds": 0.0}


def result_row(record: TrialRecord) -> ResultRow:
    """The compact row of the experiment's results table (as in ScaleExperiment.status)."""
    return ResultRow(
        trial=record.name,
        batch_size=record.batch_size,
        gpus=record.gpus,
        base_learning_rate=record.base_learning_rate,
        repeat=record.repeat,
        phase=record.phase,
        reason=record.reason,
        epochs=record.epochs,
        steps=record.steps,
        final_loss=record.final_loss,
        samples_per_second=record.samples_per_second,
        scaling_efficiency=record.scaling_efficiency,
        time_to_target_seconds=record.time_to_target_seconds,
        seconds=record.seconds,
        gpu_seconds=record.gpu_seconds,
        queue_seconds=record.queue_seconds,
        device_seconds=record.device_seconds,
        gradient_noise_scale=record.gradient_noise_scale,
        gradient_noise_scale_stderr=record.gradient_noise_scale_stderr,
        gradient_noise_scale_reason=record.gradient_noise_scale_reason,
        critical_batch_size=record.critical_batch_size,
        critical_batch_size_stderr=record.critical_batch_size_stderr,
        pruned=record.pruned,
        steps_to_target=record.steps_to_target,
        step_seconds=record.step_seconds,
        input_wait_fraction=record.input_wait_fraction,
        input_bound=record.input_bound,
    )


def aggregate_results(results: ResultsFile, experiment: ScaleExperiment) -> None:
    """Fill scaling efficiency, GPU-seconds, the modelled times and the recommendation from the
    records (in place)."""
    weak = results.scaling_efficiency_kind == "weak"
    rows = {r.trial: r for r in with_scaling([result_row(t) for t in results.trials], weak=weak)}
    spec = experiment.spec
    has_target = spec.training.target_loss is not None
    epochs = {
        t.name: epoch_step_seconds(t.batch_size, t.curves.get("samplesPerSecond") or [])
        for t in results.trials
    }
    times = {c.key: c.seconds for c in modelled(list(rows.values()), MAX_INT, has_target)}
    kind = results.scaling_efficiency_kind
    trials = []
    for record in results.trials:
        row = rows[record.name]
        model = times.get(configuration(row)) if row.phase is TrialPhase.SUCCEEDED else None
        measured = row.time_to_target_seconds if has_target else row.seconds
        trials.append(
            record.model_copy(
                update={
                    "scaling_efficiency": row.scaling_efficiency,
                    "scaling_efficiency_kind": kind if row.scaling_efficiency is not None else None,
                    "efficiency_base_gpus": row.efficiency_base_gpus,
                    "gpu_seconds": row.gpu_seconds,
                    "modelled_seconds": model,
                    "model_ratio": measured / model if model and measured else None,
                }
            )
        )
    results.trials = trials
    results.recommendation = recommend(
        list(rows.values()),
        max_gpus=spec.execution.max_gpus,
        has_target=has_target,
        learning_rates={
            t.name: t.learning_rate for t in results.trials if t.learning_rate is not None
        },
        objective=spec.objective,
        cpu=spec.resources.gpus_per_process == 0,
        epochs=epochs,
    )
    measured_any = any(r.phase in MEASURED for r in rows.values())
    results.critical_batch = analysis(list(rows.values()), weak) if measured_any else None
    results.scaling_predictions = (
        predictions(
            list(rows.values()),
            weak=weak,
            max_gpus=spec.execution.max_gpus,
            step_samples=epochs,
            cores=results.host.get("cores") if spec.resources.gpus_per_process == 0 else None,
            processes_per_worker=(
                spec.resources.processes_per_worker if spec.resources.gpus_per_process else None
            ),
        )
        if measured_any
        else None
    )
