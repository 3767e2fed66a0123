"""The planner: a ScaleExperiment's sweep → trials, and the one renderer of the trainer's argv.

batchSizes × gpus × learningRates × repeats become trials with deterministic names (see
names.py), the global batch per the sweep's batchScope, the seed of each repeat and the resolved
learning rate: with a sweep.learningRates axis, each trial's training.learningRate is its
point's base rate, scaled by lrScaling as training.learningRate is without the axis. Points
that cannot run become Skipped trials with the reason: `SKIP_RULES`, written once as expressions
(scalelab.rules) that the planner evaluates per point and the CRD carries as the CEL rule
`RUNNABLE_GRID` ("some point can run"), so `kubectl apply` and `scalelab validate` agree.
`trainer_flags` renders the exact command line of docs/trial-contract.md from a ScaleTrialSpec;
the local executor and the operator's MPIJob launcher both call it, so a trial runs the same way
everywhere. Pure functions, no I/O.
"""

from __future__ import annotations

import functools
import json
import math
from dataclasses import dataclass

from scalelab.api import (
    DEFAULT_DATASET_SIZE,
    BatchScope,
    Dataset,
    LrScaling,
    Model,
    ScaleExperiment,
    ScaleExperimentSpec,
    ScaleTrialSpec,
    SweepStrategy,
    Training,
    TrialPhase,
    Workload,
)
from scalelab.names import trial_name
from scalelab.rules import Env, Expr, Rule, all_of, at, has, if_, var

TRAINER_MODULE = "scalelab_trainer"
#: horovodrun's command line without its probe, in the trainer's interpreter.
HOROVODRUN_MODULE = f"{TRAINER_MODULE}.horovodrun"


@dataclass(frozen=True)
class PlannedTrial:
    """One grid point: its name, its self-contained spec, and Pending or Skipped with a reason."""

    name: str
    spec: ScaleTrialSpec
    phase: TrialPhase
    reason: str
    #: The sweep.learningRates value of this point (its spec's training.learningRate); None
    #: without the axis.
    base_learning_rate: float | None = None

    @property
    def skipped(self) -> bool:
        """True for a grid point that cannot run."""
        return self.phase is TrialPhase.SKIPPED

    @property
    def batch_size(self) -> int:
        """Global batch per optimizer step."""
        return self.spec.batch_size

    @property
    def gpus(self) -> int:
        """Horovod processes: GPUs, one each (or CPU processes with gpusPerProcess 0)."""
        return self.spec.gpus

    @property
    def repeat(self) -> int:
        """Repeat index."""
        return self.spec.repeat


def resolved_learning_rate(training: Training, global_batch: int) -> float:
    """The learning rate at a global batch under the scaling rule (after warmup)."""
    ratio = global_batch / training.reference_batch_size
    if training.lr_scaling is LrScaling.LINEAR:
        return training.learning_rate * ratio
    if training.lr_scaling is LrScaling.SQRT:
        return training.learning_rate * math.sqrt(ratio)
    return training.learning_rate


#: A grid point of the spec (`self`): `g` processes and the sweep's batch size `b`.
G, B = var("g"), var("b")
_PER_PROCESS = at("resources.gpusPerProcess")
#: What a point costs against maxGPUs (its processes when running on CPU).
DEVICES = if_(_PER_PROCESS.eq(0), G, G * _PER_PROCESS)
#: The global batch per optimizer step of a point.
GLOBAL_BATCH = if_(at("sweep.batchScope").eq(BatchScope.PER_PROCESS.value), B * G, B)
#: The training examples of every trial (Workload.examples), where known before a trial runs: a
#: custom workload without datasetSize trains on all it provides, which only it knows.
_SIZE_SET = has("workload.datasetSize")
SIZE_KNOWN = _SIZE_SET | at("workload.dataset").ne(Dataset.CUSTOM.value)
DATASET_SIZE = if_(_SIZE_SET, at("workload.datasetSize"), DEFAULT_DATASET_SIZE)


@dataclass(frozen=True)
class SkipRule:
    """A grid point that cannot run: `when` holds; `reason` is formatted with the point's
    devices, batch (global), processes, maxGPUs, datasetSize and gpusPerProcess (perProcess)."""

    when: Expr
    reason: str


SKIP_RULES = (
    # Horovod's convention: one process per GPU, so sweep.gpus counts GPUs and processes alike.
    # A process given two would use one (the trainer pins the GPU of its local rank) while the
    # pod holds both; a spec asking for it has no point that can run, so the CRD refuses it.
    SkipRule(
        _PER_PROCESS > 1,
        "resources.gpusPerProcess={perProcess}: a Horovod process drives one GPU, so set "
        "gpusPerProcess 1 and count the GPUs in sweep.gpus",
    ),
    SkipRule(
        at("execution.maxGPUs") < DEVICES, "needs {devices} GPUs, over execution.maxGPUs={maxGPUs}"
    ),
    SkipRule(GLOBAL_BATCH < G, "global batch {batch} is smaller than the {processes} processes"),
    SkipRule(
        (GLOBAL_BATCH % G).ne(0),
        "global batch {batch} is not divisible by the {processes} processes",
    ),
    SkipRule(
        SIZE_KNOWN & (DATASET_SIZE < GLOBAL_BATCH),
        "global batch {batch} exceeds workload.datasetSize={datasetSize} (no full step per epoch)",
    ),
)

#: At least one grid point can run: a typo is the likely cause of a grid where every point
#: would be Skipped. On the ScaleExperiment spec in the CRD; `scalelab validate` lists the reasons.
RUNNABLE_GRID = Rule(
    at("sweep.gpus").exists(
        "g", at("sweep.batchSizes").exists("b", all_of(~rule.when for rule in SKIP_RULES))
    ),
    "no grid point can run: resources.gpusPerProcess is over 1 (one process per GPU), or every "
    "(batch size, gpus) pair needs more GPUs than execution.maxGPUs, is smaller than or not "
    "divisible by its process count, or exceeds workload.datasetSize",
    field="sweep",
)


def devices_needed(experiment: ScaleExperiment, processes: int) -> int:
    """What a trial of `processes` costs against maxGPUs (processes when running on CPU)."""
    return _devices(experiment.spec.resources.gpus_per_process, processes)


@functools.cache
def _devices(gpus_per_process: int, processes: int) -> int:
    # DEVICES is interpreted; the operator asks thousands of times a pass at 1,000 trials.
    wire = {"resources": {"gpusPerProcess": gpus_per_process}}
    return int(DEVICES({"self": wire, "g": processes}))


def _skip_reason(point: Env) -> str:
    for rule in SKIP_RULES:
        if rule.when(point):
            spec = point["self"]
            return rule.reason.format(
                devices=DEVICES(point),
                batch=GLOBAL_BATCH(point),
                processes=point["g"],
                maxGPUs=spec["execution"]["maxGPUs"],
                datasetSize=DATASET_SIZE(point),
                perProcess=_PER_PROCESS(point),
            )
    return ""


def _trainings(spec: ScaleExperimentSpec) -> list[tuple[float | None, Training]]:
    """(base rate, training) of each point of the learning-rate axis; (None, training) without
    one."""
    rates = spec.sweep.learning_rates
    if rates is None:
        return [(None, spec.training)]
    return [(rate, spec.training.model_copy(update={"learning_rate": rate})) for rate in rates]


def plan(experiment: ScaleExperiment) -> list[PlannedTrial]:
    """Every grid point, in the sweep's order: batch sizes as listed (strategy adaptive: smallest
    first, so a diverged batch is known before larger ones start), then GPUs, then learning
    rates as listed, then repeats."""
    spec = experiment.spec
    name = experiment.metadata.name
    wire = spec.model_dump(by_alias=True, mode="json", exclude_none=True)
    trials: list[PlannedTrial] = []
    adaptive = spec.sweep.strategy is SweepStrategy.ADAPTIVE
    for batch in sorted(spec.sweep.batch_sizes) if adaptive else spec.sweep.batch_sizes:
        for processes in spec.sweep.gpus:
            point = {"self": wire, "g": processes, "b": batch}
            global_batch = int(GLOBAL_BATCH(point))
            reason = _skip_reason(point)
            for rate, training in _trainings(spec):
                for repeat in range(spec.sweep.repeats):
                    trial_spec = ScaleTrialSpec(
                        experiment=name,
                        batch_size=global_batch,
                        gpus=processes,
                        repeat=repeat,
                        seed=spec.workload.seed + repeat,
                        learning_rate=resolved_learning_rate(training, global_batch),
                        workload=spec.workload,
                        training=training,
                        measurement=spec.measurement,
                        resources=spec.resources,
                        execution=spec.execution,
                    )
                    trials.append(
                        PlannedTrial(
                            name=trial_name(name, global_batch, processes, repeat, rate),
                            spec=trial_spec,
                            phase=TrialPhase.SKIPPED if reason else TrialPhase.PENDING,
                            reason=reason,
                            base_learning_rate=rate,
                        )
                    )
    return trials


def trainer_flags(
    spec: ScaleTrialSpec,
    trial: str,
    *,
    namespace: str | None = None,
    report_status: bool = False,
    store_results: bool = False,
    metrics_port: int = 0,
    gpus_per_process: int = 0,
) -> list[str]:
    """The trainer's flags for one trial (docs/trial-contract.md), without the program itself.
    `gpus_per_process` 1 (the MPIJob launcher's, from resources.gpusPerProcess) makes a process
    that finds no GPU fail at start; the local executor runs on what this machine has."""
    training = spec.training
    flags = [
        "--experiment", spec.experiment,
        "--trial", trial,
        "--repeat", str(spec.repeat),
        *_workload_flags(spec),
        "--seed", str(spec.seed),
        "--batch-size", str(spec.batch_size),
        "--optimizer", training.optimizer.value,
        "--learning-rate", repr(training.learning_rate),
        "--reference-batch-size", str(training.reference_batch_size),
        "--lr-scaling", training.lr_scaling.value,
        "--warmup-epochs", str(training.warmup_epochs),
        "--momentum", repr(training.momentum),
        "--beta2", repr(training.beta2),
        "--epsilon", repr(training.epsilon),
        "--weight-decay", repr(training.weight_decay),
        "--trust-coefficient", repr(training.trust_coefficient),
        "--max-epochs", str(training.max_epochs),
        "--relative-tolerance", repr(training.convergence.relative_tolerance),
        "--stopping-loss", training.convergence.stopping_loss.value,
        "--divergence-factor", repr(training.divergence_factor),
        "--shuffle" if training.shuffle else "--no-shuffle",
        "--mixed-precision", training.mixed_precision.value,
        "--jit-compile" if training.jit_compile else "--no-jit-compile",
        *_measurement_flags(spec),
    ]  # fmt: skip
    if training.target_loss is not None:
        flags += ["--target-loss", repr(training.target_loss)]
    if metrics_port:
        flags += ["--metrics-port", str(metrics_port)]
    if gpus_per_process:
        flags += ["--gpus-per-process", str(gpus_per_process)]
    if namespace is not None:
        flags += ["--namespace", namespace]
    if report_status:
        flags += ["--report-status"]
    if store_results:
        flags += ["--store-results"]
    return flags


def dataset_size_text(workload: Workload) -> str:
    """What `scalelab validate` and `plan` say of the examples every trial trains on, e.g.
    "datasetSize: 100 (default for lab1-line)"."""
    if workload.dataset_size is not None:
        return f"datasetSize: {workload.dataset_size}"
    examples = workload.examples()
    if examples is None:
        return "datasetSize: all examples the workload provides"
    return f"datasetSize: {examples} (default for {workload.dataset.value})"


def exports_data(spec: ScaleTrialSpec) -> bool:
    """Whether a trial's dataset goes with its results (`--export-data`): lab1-line, whose loss
    surface the report draws from it (a few kB); other datasets are regenerated from the seed."""
    return spec.workload.dataset is Dataset.LAB1_LINE


def _workload_flags(spec: ScaleTrialSpec) -> list[str]:
    """Model and data: only the flags of the chosen model and dataset (the rest keep the
    trainer's defaults), so a trial's command says what it trains."""
    w = spec.workload
    flags = ["--model", w.model.value, "--dataset", w.dataset.value]
    examples = w.examples()
    if examples is not None:  # else all the custom workload provides: the trainer's to count
        flags += ["--dataset-size", str(examples)]
    by_model = {
        Model.MLP: ["--hidden-units", str(w.hidden_units), "--hidden-layers", str(w.hidden_layers)],
        Model.CNN: ["--cnn-arch", w.cnn_arch.value],
        Model.CUSTOM: [
            "--entry-point",
            w.entry_point or "",
            "--workload-parameters",
            json.dumps(w.parameters, sort_keys=True),
        ],
    }
    by_dataset = {  # (two tables: model and dataset values share strings, e.g. custom)
        Dataset.LAB1_LINE: [
            "--data-w", repr(w.line_slope), "--data-b", repr(w.line_intercept),
            "--data-noise", repr(w.noise),
        ],
        Dataset.REGRESSION: ["--features", str(w.features), "--data-noise", repr(w.noise)],
        Dataset.DIGITS: ["--test-fraction", repr(w.test_fraction)],
        Dataset.SYNTHETIC_IMAGES: [
            "--image-size", str(w.image_size), "--num-classes", str(w.num_classes)
        ],
    }  # fmt: skip
    return flags + by_model.get(w.model, []) + by_dataset.get(w.dataset, [])


def _measurement_flags(spec: ScaleTrialSpec) -> list[str]:
    m = spec.measurement
    return [
        "--gradient-noise-scale" if m.gradient_noise_scale else "--no-gradient-noise-scale",
        "--noise-window-epochs", repr(m.noise_window_epochs),
        "--record-update-losses" if m.record_update_losses else "--no-record-update-losses",
        "--loss-surface-points", str(m.loss_surface_points),
        "--steps-per-call", str(m.steps_per_call),
        "--throughput-skip-steps", str(m.throughput_skip_steps),
        "--intra-op-threads", str(m.intra_op_threads),
    ]  # fmt: skip


def trainer_command(flags: list[str], python: str = "python") -> list[str]:
    """`python -m scalelab_trainer <flags>`: what one process of a trial runs."""
    return [python, "-m", TRAINER_MODULE, *flags]


def local_command(processes: int, program: list[str], python: str = "python") -> list[str]:
    """What runs `program` on N processes of this machine: itself for one, else Horovod over
    Gloo with N slots on localhost, launched by horovodrun without its start-up probe
    (scalelab_trainer/horovodrun.py) in the trainer's interpreter `python` (the MPIJob
    launcher's counterpart is kube/mpijob.py)."""
    if processes == 1:
        return list(program)
    return [python, "-m", HOROVODRUN_MODULE, "-np", str(processes), "--gloo",
            "-H", f"localhost:{processes}", *program]  # fmt: skip
