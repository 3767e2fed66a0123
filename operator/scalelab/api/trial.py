"""The ScaleTrial resource: one grid point's spec, its live progress and the trainer's result."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any

from pydantic import Field, ValidationError

from scalelab.api.base import MAX_INT, ApiModel, PositiveInt, SpecModel
from scalelab.api.enums import TrialPhase
from scalelab.api.execution import Execution
from scalelab.api.measurement import Measurement
from scalelab.api.resources import Resources
from scalelab.api.status import Condition
from scalelab.api.training import Training
from scalelab.api.workload import Workload
from scalelab.rules import DNS_LABEL


class TrialProgress(ApiModel):
    """Live progress a trial's rank 0 patches (rate-limited)."""

    epoch: int | None = Field(default=None, ge=0, description="Epochs finished. Unit: epochs.")
    steps: int | None = Field(default=None, ge=0, description="Optimizer steps. Unit: steps.")
    loss: float | None = Field(default=None, description="Full-dataset loss at the last epoch end.")
    samples_per_second: float | None = Field(default=None, description="Unit: samples/second.")
    training_seconds: float | None = Field(
        default=None, ge=0, description="Training time from the first step. Unit: seconds."
    )
    step_seconds: float | None = Field(
        default=None,
        ge=0,
        description="Median steady-state step time so far, at the last epoch end (what the "
        "result's stepTimeSeconds.p50 becomes). Unit: seconds.",
    )
    updated_at: str | None = Field(default=None, description="RFC 3339 time of this progress.")


class TrialTimes(ApiModel):
    """When a trial asked for its GPUs, got them, ran and ended, as the objects the operator
    watches recorded it (RFC 3339 UTC, second precision). A time not observed stays null; after
    a Kueue preemption, admitted and running are the readmitted run's (the run that counts)."""

    created: str | None = Field(
        default=None,
        description="RFC 3339 time its MPIJob was created (metadata.creationTimestamp): when the "
        "operator, under maxConcurrentTrials and maxGPUs, asked the cluster for its GPUs. "
        "scalelab run: the trainer's start event. Default: null.",
    )
    admitted: str | None = Field(
        default=None,
        description="RFC 3339 time it got its GPUs: Kueue admitted its Workload (the Admitted "
        "condition's lastTransitionTime); without Kueue, the MPI operator started the MPIJob "
        "(its status.startTime, at creation). scalelab run has no queue: equal to created. "
        "Default: null.",
    )
    running: str | None = Field(
        default=None,
        description="RFC 3339 time all its pods ran: the MPIJob's Running condition "
        "(lastTransitionTime); where that was never seen, the trainer's first progress "
        "(progress.updatedAt − trainingSeconds). scalelab run: the trainer's start event. "
        "Default: null.",
    )
    finished: str | None = Field(
        default=None,
        description="RFC 3339 time it ended: the MPIJob's completionTime, else when the operator "
        "saw it end (Pruned, or failed while Kueue held it). Default: null.",
    )


class ParamSummary(ApiModel):
    """Final parameters: w and b for the linear model on lab1-line, a summary otherwise."""

    w: float | None = Field(default=None, description="Slope (linear model on lab1-line).")
    b: float | None = Field(default=None, description="Intercept (linear model on lab1-line).")
    norm: float | None = Field(default=None, description="L2 norm of all weights (other models).")
    count: int | None = Field(default=None, ge=0, description="Number of weights (other models).")


class StepTime(ApiModel):
    """Steady-state step times over the trial's steps (the trainer's `stepTimeSeconds`)."""

    mean: float | None = Field(default=None, ge=0, description="Unit: seconds.")
    p50: float | None = Field(
        default=None, ge=0, description="Median: what the modelled time uses. Unit: seconds."
    )
    p90: float | None = Field(default=None, ge=0, description="Unit: seconds.")
    max: float | None = Field(default=None, ge=0, description="Unit: seconds.")
    count: int | None = Field(default=None, ge=0, description="Steps timed. Unit: steps.")


class TrialResult(ApiModel):
    """The trainer's `result` event minus config and curves (see docs/trial-contract.md)."""

    phase: TrialPhase = Field(..., description="Succeeded, Diverged or Failed.")
    reason: str = Field(default="", description='Why it ended. Default: "".')
    epochs: int | None = Field(default=None, ge=0, description="Unit: epochs.")
    steps: int | None = Field(default=None, ge=0, description="Unit: steps.")
    final_loss: float | None = Field(default=None, description="Full-dataset loss at the end.")
    params: ParamSummary | None = Field(default=None, description="Final parameters.")
    optimum: ParamSummary | None = Field(
        default=None, description="Closed-form optimum where known."
    )
    samples_per_second: float | None = Field(default=None, description="Unit: samples/second.")
    steps_to_target: int | None = Field(default=None, ge=0, description="Unit: steps.")
    epochs_to_target: int | None = Field(default=None, ge=0, description="Unit: epochs.")
    time_to_target_seconds: float | None = Field(default=None, description="Unit: seconds.")
    gradient_noise_scale: float | None = Field(
        default=None, description="B_simple. Unit: examples."
    )
    gradient_noise_scale_stderr: float | None = Field(
        default=None, description="Standard error of B_simple. Unit: examples."
    )
    gradient_noise_scale_reason: str | None = Field(
        default=None, description="Why B_simple is null; null when it is not."
    )
    critical_batch_size: float | None = Field(
        default=None, description="Predicted. Unit: examples."
    )
    critical_batch_size_stderr: float | None = Field(
        default=None, description="Standard error of the prediction. Unit: examples."
    )
    seconds: float | None = Field(default=None, description="Training time. Unit: seconds.")
    dataset_size: int | None = Field(
        default=None, ge=0, description="Training examples the trial used. Unit: examples."
    )
    step_time_seconds: StepTime | None = Field(
        default=None, description="Steady-state step times (after the warm-up epochs)."
    )
    input_wait_seconds: float | None = Field(
        default=None,
        description="Streamed data (plugin API 2): time the step loop waited for its input "
        "(with several processes the largest rank's); null for data in memory. Unit: seconds.",
    )
    step_call_seconds: float | None = Field(
        default=None,
        description="Streamed data: time in step calls (rank 0's); null for data in memory. "
        "Unit: seconds.",
    )
    input_wait_fraction: float | None = Field(
        default=None,
        description="Streamed data: inputWaitSeconds / (inputWaitSeconds + stepCallSeconds), "
        "the share of the step loop spent waiting for input; null for data in memory. "
        "Unit: ratio.",
    )
    input_bound: bool | None = Field(
        default=None,
        description="Streamed data: inputWaitFraction > 0.1, the input pipeline set the pace; "
        "null for data in memory.",
    )
    warnings: list[str] = Field(default_factory=list, description="Diagnostics. Default: [].")
    interrupted: bool = Field(default=False, description="Stopped by SIGTERM. Default: false.")


def read_trial_result(raw: Mapping[str, Any] | None) -> TrialResult | None:
    """The typed view of a trainer's result (its `result` event, or a ScaleTrial's status.result).

    The one parse of a result, for the local executor and the operator alike. Keys the model does
    not know (config, curves, initialLoss, ...) are left out, a value of the wrong type reads as
    missing, and a result without a valid phase is no result (None).
    """
    if raw is None:
        return None
    fields = {f.alias or name: f for name, f in TrialResult.model_fields.items()}
    data = {key: value for key, value in raw.items() if key in fields}
    while True:
        try:
            return TrialResult.model_validate(data)
        except ValidationError as error:
            bad = {str(e["loc"][0]) for e in error.errors() if e["loc"]}
            if "phase" in bad or not bad & data.keys():
                return None
            data = {key: value for key, value in data.items() if key not in bad}


class ScaleTrialSpec(SpecModel):
    """One grid point, self-contained: everything needed to render its trainer command."""

    experiment: Annotated[str, DNS_LABEL] = Field(..., description="Owning ScaleExperiment name.")
    batch_size: int = Field(
        ..., gt=0, le=2**62, description="Global batch per step. Unit: examples."
    )
    gpus: PositiveInt = Field(..., description="Horovod processes. Unit: processes.")
    repeat: int = Field(default=0, ge=0, le=100, description="Repeat index. Default: 0.")
    seed: int = Field(
        default=0, ge=0, le=MAX_INT, description="Seed of this repeat (workload.seed + repeat)."
    )
    learning_rate: float = Field(
        ..., gt=0, description="Resolved learning rate at this batch. Unit: per step."
    )
    workload: Workload = Field(default_factory=Workload, description="Copied from experiment.")
    training: Training = Field(default_factory=Training, description="Copied from experiment.")
    measurement: Measurement = Field(
        default_factory=Measurement, description="Copied from experiment."
    )
    resources: Resources = Field(default_factory=Resources, description="Copied from experiment.")
    execution: Execution = Field(default_factory=Execution, description="Copied from experiment.")


class ScaleTrialStatus(ApiModel):
    """Observed state of a ScaleTrial."""

    phase: TrialPhase = Field(default=TrialPhase.PENDING, description="Default: Pending.")
    reason: str = Field(default="", description='Why it is in this phase. Default: "".')
    conditions: list[Condition] = Field(
        default_factory=list, description="Kubernetes-style conditions. Default: []."
    )
    progress: TrialProgress | None = Field(
        default=None, description="Live progress. Default: null."
    )
    result: TrialResult | None = Field(default=None, description="Final result. Default: null.")
    start_time: str | None = Field(default=None, description="RFC 3339 start. Default: null.")
    completion_time: str | None = Field(default=None, description="RFC 3339 end. Default: null.")
    times: TrialTimes | None = Field(
        default=None,
        description="When its MPIJob was created, admitted, running and finished, from the "
        "MPIJob's and its Kueue Workload's own times (startTime and completionTime are when the "
        "operator saw the phase change). Default: null.",
    )
    queue_seconds: float | None = Field(
        default=None,
        ge=0,
        description="times.created → times.admitted: how long it waited for quota (Kueue) once "
        "the operator submitted it; about 0 without Kueue; null until admitted. Unit: seconds. "
        "Default: null.",
    )
    device_seconds: float | None = Field(
        default=None,
        ge=0,
        description="What all its runs cost: Σ over every run of devices (GPUs; processes on "
        "CPU) × pod run time, from its MPIJob's Running time to the run's end: Kueue's "
        "preemption or interruption (it reruns from the start), a failure, or the end. Runs "
        "that did not finish count, and start-up: more than the measurement's gpuSeconds. Added "
        "when a run ends; null until one has. Unit: device-seconds (GPU-seconds on GPUs). "
        "Default: null.",
    )
