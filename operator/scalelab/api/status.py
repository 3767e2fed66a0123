"""A ScaleExperiment's observed state: conditions, trial counts, the results table, the critical
batch size and the recommendation (written by the operator and the local executor)."""

from __future__ import annotations

from pydantic import Field

from scalelab.api.base import ApiModel
from scalelab.api.enums import ConditionStatus, ConditionType, ExperimentPhase, TrialPhase

#: What a `baseLearningRate` is, after what it is of.
_BASE_RATE = (
    "(at training.referenceBatchSize, before lrScaling); null without a learningRates axis. "
    "Unit: per step. Default: null."
)


class Condition(ApiModel):
    """A Kubernetes-style condition (metav1.Condition)."""

    type: str = Field(
        ...,
        description="Condition type, one of: " + ", ".join(t.value for t in ConditionType) + ".",
    )
    status: ConditionStatus = Field(..., description="True, False or Unknown.")
    reason: str = Field(default="", description='CamelCase machine-readable reason. Default: "".')
    message: str = Field(default="", description='What happened, for a person. Default: "".')
    last_transition_time: str | None = Field(
        default=None, description="RFC 3339 time the status last changed. Default: null."
    )
    observed_generation: int | None = Field(
        default=None,
        ge=0,
        description="metadata.generation this condition was set for. Default: null.",
    )


class TrialCounts(ApiModel):
    """Trials of an experiment by phase."""

    total: int = Field(default=0, ge=0, description="All planned trials. Default: 0.")
    pending: int = Field(default=0, ge=0, description="Not started. Default: 0.")
    running: int = Field(default=0, ge=0, description="Running. Default: 0.")
    succeeded: int = Field(
        default=0, ge=0, description="Finished and converged or capped. Default: 0."
    )
    diverged: int = Field(
        default=0, ge=0, description="Finished with a diverging loss. Default: 0."
    )
    failed: int = Field(
        default=0, ge=0, description="Crashed, timed out or interrupted. Default: 0."
    )
    skipped: int = Field(default=0, ge=0, description="Cannot run (see the reason). Default: 0.")
    pruned: int = Field(
        default=0,
        ge=0,
        description="Stopped early by the adaptive sweep (see the reason). Default: 0.",
    )


class ResultRow(ApiModel):
    """One trial in the experiment's results table (compact: no curves); the status keeps the
    top rows (kube/compact.py), the ScaleTrials and `scalelab report --experiment` all of them."""

    trial: str = Field(..., description="ScaleTrial name.")
    batch_size: int = Field(..., gt=0, description="Global batch size. Unit: examples.")
    gpus: int = Field(..., gt=0, description="Horovod processes. Unit: processes.")
    base_learning_rate: float | None = Field(
        default=None,
        description="The sweep.learningRates value the trial trained at " + _BASE_RATE,
    )
    repeat: int = Field(default=0, ge=0, description="Repeat index. Default: 0.")
    phase: TrialPhase = Field(..., description="Trial phase.")
    reason: str = Field(default="", description='Why the trial ended as it did. Default: "".')
    epochs: int | None = Field(default=None, ge=0, description="Epochs run. Unit: epochs.")
    steps: int | None = Field(default=None, ge=0, description="Optimizer steps run. Unit: steps.")
    final_loss: float | None = Field(default=None, description="Full-dataset loss at the end.")
    samples_per_second: float | None = Field(
        default=None, description="Steady-state global throughput. Unit: samples/second."
    )
    scaling_efficiency: float | None = Field(
        default=None,
        description="Scaling efficiency. batchScope global: strong, thr(N,B)/((N/N₀)·thr(N₀,B)) "
        "against the trials of the same global batch on N₀ processes, the fewest measured "
        "(N₀ = 1 when measured); perProcess: weak, thr(N,b·N)/((N/N₀)·thr(N₀,b·N₀)). "
        "Unit: ratio.",
    )
    efficiency_base_gpus: int | None = Field(
        default=None,
        gt=0,
        description="N₀ of scalingEfficiency: the fewest processes measured at this batch (1 "
        "when a 1-process trial was). Unit: processes. Default: null.",
    )
    time_to_target_seconds: float | None = Field(
        default=None, description="Training time until the target loss was reached. Unit: seconds."
    )
    seconds: float | None = Field(
        default=None, description="Training time reported by the trainer. Unit: seconds."
    )
    gpu_seconds: float | None = Field(
        default=None,
        description="Processes × time-to-target (or × training time without a target). "
        "Unit: GPU-seconds.",
    )
    device_seconds: float | None = Field(
        default=None,
        ge=0,
        description="GPU time all the trial's runs used, preempted, interrupted and failed ones "
        "included: Σ devices × pod run time (the ScaleTrial's status.deviceSeconds); null where "
        "none was recorded. Unit: device-seconds (process-seconds on CPU). Default: null.",
    )
    queue_seconds: float | None = Field(
        default=None,
        ge=0,
        description="How long the trial waited for quota once submitted: its MPIJob's creation "
        "to its admission (Kueue's, or the MPI operator's start without Kueue); 0 in scalelab "
        "run, which has no queue; null where it was never admitted. Unit: seconds. "
        "Default: null.",
    )
    gradient_noise_scale: float | None = Field(
        default=None, description="Measured B_simple = tr(Σ)/|G|². Unit: examples."
    )
    gradient_noise_scale_stderr: float | None = Field(
        default=None, description="Standard error of gradientNoiseScale. Unit: examples."
    )
    gradient_noise_scale_reason: str | None = Field(
        default=None, description="Why gradientNoiseScale is null; null when it is not."
    )
    critical_batch_size: float | None = Field(
        default=None,
        description="Predicted B_crit: B_simple at the target loss (else at the end). "
        "Unit: examples.",
    )
    critical_batch_size_stderr: float | None = Field(
        default=None, description="Standard error of criticalBatchSize. Unit: examples."
    )
    steps_to_target: int | None = Field(
        default=None, ge=0, description="Optimizer steps to the target loss. Unit: steps."
    )
    step_seconds: float | None = Field(
        default=None,
        ge=0,
        description="Median steady-state step time: the trainer's stepTimeSeconds.p50 where the "
        "row was folded from its events (results.json); null where the result does not carry "
        "it, and then batchSize / samplesPerSecond stands in. Unit: seconds. Default: null.",
    )
    input_wait_fraction: float | None = Field(
        default=None,
        description="Streamed data (plugin API 2): the share of the step loop spent waiting for "
        "input; null for data in memory. Unit: ratio.",
    )
    input_bound: bool | None = Field(
        default=None,
        description="Streamed data: inputWaitFraction > 0.1, the input pipeline, not the "
        "model, set the pace; null for data in memory.",
    )
    pruned: bool = Field(
        default=False,
        description="Skipped or stopped by the adaptive sweep (the reason says why). "
        "Default: false.",
    )


class ParetoPoint(ApiModel):
    """A configuration on the Pareto front of modelled time-to-target vs GPU-seconds."""

    trial: str = Field(..., description="ScaleTrial name.")
    batch_size: int = Field(..., gt=0, description="Global batch size. Unit: examples.")
    gpus: int = Field(..., gt=0, description="Horovod processes. Unit: processes.")
    base_learning_rate: float | None = Field(
        default=None,
        description="The sweep.learningRates value the trial trained at " + _BASE_RATE,
    )
    time_to_target_seconds: float = Field(
        ...,
        description="Modelled time to the target loss (without a target: to convergence): "
        "steps-to-target × median step time. Unit: seconds.",
    )
    gpu_seconds: float = Field(
        ..., description="Processes × modelled time-to-target. Unit: GPU-seconds."
    )
    measured_seconds: float | None = Field(
        default=None,
        description="Mean measured time-to-target over the repeats (the trainer's stopwatch); "
        "null where no trial of the configuration reached the target. Unit: seconds. "
        "Default: null.",
    )


class ModelledConfiguration(ApiModel):
    """One configuration's modelled time-to-target, its interval, and what it rests on."""

    trial: str = Field(..., description="A ScaleTrial of the configuration (the first repeat).")
    batch_size: int = Field(..., gt=0, description="Global batch size. Unit: examples.")
    gpus: int = Field(..., gt=0, description="Horovod processes. Unit: processes.")
    base_learning_rate: float | None = Field(
        default=None,
        description="The sweep.learningRates value the trial trained at " + _BASE_RATE,
    )
    modelled_seconds: float = Field(
        ...,
        description="Steps-to-target of the batch × median step time of the configuration. "
        "Unit: seconds.",
    )
    low: float | None = Field(
        default=None,
        description="95% bootstrap interval over repeats of modelledSeconds, lower; null with one "
        "repeat. Unit: seconds. Default: null.",
    )
    high: float | None = Field(
        default=None, description="The same interval, upper. Unit: seconds. Default: null."
    )
    gpu_seconds: float = Field(
        ..., description="Processes × modelledSeconds. Unit: GPU-seconds (process-seconds on CPU)."
    )
    measured_seconds: float | None = Field(
        default=None,
        description="Mean measured time-to-target over the repeats; null where none reached it. "
        "Unit: seconds. Default: null.",
    )
    steps_to_target: float | None = Field(
        default=None,
        description="Steps-to-target of the batch the model used (mean over its trials, or the "
        "fit S(B)). Unit: steps. Default: null.",
    )
    steps_source: str = Field(
        default="measured",
        description="measured: the batch's trials reached the target; fit: S(B) = S_min(1 + "
        "B_crit/B) fitted to the other batches; time: no step count, the measured time stands "
        'in. Default: "measured".',
    )
    step_seconds: float | None = Field(
        default=None,
        description="Median over the repeats of each trial's median step time. Unit: seconds. "
        "Default: null.",
    )
    scaling_efficiency: float | None = Field(
        default=None, description="Mean scaling efficiency over the repeats. Unit: ratio."
    )


class BatchSteps(ApiModel):
    """Steps-to-target at one batch size over its repeats."""

    batch_size: int = Field(..., gt=0, description="Global batch size. Unit: examples.")
    base_learning_rate: float | None = Field(
        default=None,
        description="The batch's best sweep.learningRates value, whose steps these are "
        + _BASE_RATE,
    )
    runs: int = Field(..., ge=1, description="Repeats that reached the target. Unit: runs.")
    mean: float = Field(..., description="Mean steps-to-target. Unit: steps.")
    stdev: float | None = Field(
        default=None, description="Sample standard deviation (null with one run). Unit: steps."
    )


class EfficiencyInterval(ApiModel):
    """Scaling efficiency of one (batch, GPUs) over its repeats, with a 95% interval."""

    batch_size: int = Field(..., gt=0, description="Global batch size. Unit: examples.")
    gpus: int = Field(..., gt=0, description="Horovod processes. Unit: processes.")
    base_gpus: int = Field(
        default=1,
        gt=0,
        description="The process count the efficiency is relative to: the fewest measured at "
        "this batch. Unit: processes. Default: 1.",
    )
    base_learning_rate: float | None = Field(
        default=None,
        description="The sweep.learningRates value the trial trained at " + _BASE_RATE,
    )
    runs: int = Field(..., ge=1, description="Repeats measured. Unit: runs.")
    mean: float = Field(..., description="Mean scaling efficiency. Unit: ratio.")
    low: float | None = Field(default=None, description="95% interval, lower. Unit: ratio.")
    high: float | None = Field(default=None, description="95% interval, upper. Unit: ratio.")


class CriticalBatch(ApiModel):
    """The critical batch size: predicted by B_simple, fitted, and by the 20% rule."""

    predicted: float | None = Field(
        default=None,
        description="Median measured B_simple at the target over the trials (McCandlish et "
        "al. 2018: B_crit ≈ B_simple). Unit: examples.",
    )
    predicted_low: float | None = Field(
        default=None, description="Smallest per-trial B_simple. Unit: examples."
    )
    predicted_high: float | None = Field(
        default=None, description="Largest per-trial B_simple. Unit: examples."
    )
    fitted: float | None = Field(
        default=None,
        description="B_crit of the fit S = S_min(1 + B_crit/B) to steps-to-target; null when "
        "it lies beyond the largest batch measured. Unit: examples.",
    )
    fitted_low: float | None = Field(
        default=None, description="95% bootstrap interval over repeats, lower. Unit: examples."
    )
    fitted_high: float | None = Field(
        default=None,
        description="95% bootstrap interval, upper; null when unbounded. Unit: examples.",
    )
    fit_r2: float | None = Field(default=None, description="R² of log S. Unit: ratio.")
    twenty_percent: float | None = Field(
        default=None,
        description="Smallest batch whose steps-to-target exceed the linear-scaling "
        "prediction from the smallest batch by 20% (Zhang et al. 2024), interpolated in log B; "
        "null when none does. Unit: examples.",
    )
    beyond_range: bool = Field(
        default=False,
        description="True when every measured batch still scales (near) perfectly: B_crit is "
        "beyond the largest batch measured. Default: false.",
    )
    largest_batch: int | None = Field(
        default=None, description="Largest batch that reached the target. Unit: examples."
    )
    summary: str = Field(default="", description='The verdict in one sentence. Default: "".')
    steps: list[BatchSteps] = Field(
        default_factory=list, description="Steps-to-target per batch size. Default: []."
    )
    efficiency: list[EfficiencyInterval] = Field(
        default_factory=list,
        description="Scaling efficiency per configuration with 95% intervals. Default: [].",
    )


class Recommendation(ApiModel):
    """The configuration to use, and why."""

    trial: str | None = Field(default=None, description="Recommended trial. Default: null (none).")
    batch_size: int | None = Field(default=None, description="Global batch size. Unit: examples.")
    gpus: int | None = Field(default=None, description="Horovod processes. Unit: processes.")
    learning_rate: float | None = Field(
        default=None, description="Resolved learning rate. Unit: per step."
    )
    base_learning_rate: float | None = Field(
        default=None,
        description="The recommended sweep.learningRates value " + _BASE_RATE,
    )
    reason: str = Field(default="", description='Why, in one sentence. Default: "".')
    confidence: float | None = Field(
        default=None,
        ge=0,
        le=1,
        description="Share of bootstrap resamples over repeats in which the recommended "
        "configuration is within tolerance of the resample's best (null with one repeat). "
        "Unit: ratio. Default: null.",
    )
    pareto: list[ParetoPoint] = Field(
        default_factory=list,
        description="Pareto front of modelled time-to-target vs GPU-seconds. Default: [].",
    )
    goal: str = Field(
        default="",
        description="The objective the recommendation answers: fastest, cheapest, with the "
        'floor or budget when set. Default: "".',
    )
    fastest: ModelledConfiguration | None = Field(
        default=None,
        description="The answer of goal fastest (no floor or budget). Default: null.",
    )
    cheapest: ModelledConfiguration | None = Field(
        default=None, description="The answer of goal cheapest. Default: null."
    )
    indistinguishable: list[ModelledConfiguration] = Field(
        default_factory=list,
        description="The configurations the data cannot tell apart from the best under the "
        "objective (within tolerance, or the bootstrap's 5% tail of the ratio), best first; at "
        "most 20. Default: [].",
    )
    indistinguishable_count: int = Field(
        default=0,
        ge=0,
        description="How many configurations are indistinguishable (all of them, listed or "
        "not). Unit: configurations. Default: 0.",
    )
    noise: str = Field(
        default="",
        description="What the indistinguishable set and the intervals rest on, in one sentence. "
        'Default: "".',
    )


class GpuUsage(ApiModel):
    """GPUs of an experiment's unfinished trials by state, as of the last reconciliation (GPUs =
    processes × gpusPerProcess; processes on CPU count one each, as under maxGPUs)."""

    requested: int = Field(
        default=0, ge=0, description="Trials with an MPIJob not finished yet. Default: 0."
    )
    running: int = Field(default=0, ge=0, description="Of those, MPIJob Running. Default: 0.")
    suspended: int = Field(
        default=0,
        ge=0,
        description="Of those, MPIJob suspended: held by Kueue until its quota admits them. "
        "Default: 0.",
    )
    queued: int = Field(
        default=0,
        ge=0,
        description="Runnable trials the operator holds back under maxConcurrentTrials and "
        "maxGPUs. Default: 0.",
    )


class ScaleExperimentStatus(ApiModel):
    """Observed state of a ScaleExperiment."""

    phase: ExperimentPhase = Field(default=ExperimentPhase.PENDING, description="Default: Pending.")
    observed_generation: int | None = Field(
        default=None, ge=0, description="metadata.generation last reconciled. Default: null."
    )
    conditions: list[Condition] = Field(
        default_factory=list, description="Kubernetes-style conditions. Default: []."
    )
    trials: TrialCounts = Field(default_factory=TrialCounts, description="Trials by phase.")
    gpus: GpuUsage = Field(default_factory=GpuUsage, description="GPUs of unfinished trials.")
    gpu_seconds: float = Field(
        default=0.0,
        ge=0,
        description="GPU time the finished trials used: Σ GPUs × training seconds. Unit: "
        "GPU-seconds. Default: 0.",
    )
    device_seconds: float = Field(
        default=0.0,
        ge=0,
        description="GPU time used incl. preempted runs: Σ of the trials' deviceSeconds, every "
        "run's devices × pod run time, those Kueue preempted or interrupted and those that "
        "failed included (gpuSeconds counts the measurement only). Unit: device-seconds "
        "(process-seconds on CPU). Default: 0.",
    )
    results: list[ResultRow] = Field(
        default_factory=list,
        description="The top rows of the results table, at most 20, best first: the recommended "
        "trial, the Pareto front, the other measured trials fastest first, then the rest; reasons "
        "cut to 200 characters. Every row: `kubectl get scaletrials -l "
        "scalelab.dev/experiment=NAME` (each ScaleTrial holds its result) and `scalelab report "
        "--experiment NAME`. Default: [].",
    )
    omitted_results: int = Field(
        default=0,
        ge=0,
        description="Finished trials whose row is not in results (kept on their ScaleTrials). "
        "Default: 0.",
    )
    recommendation: Recommendation | None = Field(
        default=None,
        description="Best configuration and reason. Default: null until trials finish.",
    )
    critical_batch: CriticalBatch | None = Field(
        default=None,
        description="Predicted vs measured critical batch size with intervals. Default: null "
        "until trials finish.",
    )
