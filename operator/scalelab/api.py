"""The scalelab API: pydantic models of ScaleExperiment and ScaleTrial (scalelab.dev/v1alpha1).

One source of truth for the custom resources. The local executor validates YAML files with
these models, the kopf operator validates every body with them, and the CRD OpenAPI schemas in
`manifests/` are generated from (or tested against) them. Every model is therefore expressible
as a structural OpenAPI schema: closed enums, no unions of objects, and no free-form maps except
`resources.nodeSelector` (string → string) and `workload.parameters` (a user workload's own
parameters: names checked here, values kept by Kubernetes as written). Every field carries a
description that states its default and unit; names are camelCase on the wire (snake_case in
Python).
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from typing import Annotated, Any, ClassVar, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    GetJsonSchemaHandler,
    ValidationError,
    model_validator,
)
from pydantic.alias_generators import to_camel
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import PydanticCustomError, core_schema

from scalelab.rules import (
    CPU_QUANTITY,
    DNS_LABEL,
    DNS_SUBDOMAIN,
    IMAGE,
    LABEL_KEY,
    LABEL_VALUE,
    MEMORY_QUANTITY,
    QUEUE_NAME,
    Format,
    Rule,
    at,
    has,
    unique,
)

GROUP = "scalelab.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
EXPERIMENT_KIND = "ScaleExperiment"
TRIAL_KIND = "ScaleTrial"

#: Trials one experiment may plan (batchSizes × gpus × repeats). Every trial is a ScaleTrial and
#: an MPIJob in etcd (the status keeps only the top rows: kube/compact.py); the operator's passes
#: and API writes grow with it (bench/operator_1000_points.py measures this cap). A larger sweep
#: is several experiments (docs/design-changes.md).
MAX_TRIALS = 1000

#: Largest integer any spec field takes: CEL computes in int64 (b·g must not overflow) and JSON
#: numbers beyond int64 are not integers to the API server.
MAX_INT = 2**31 - 1


class ApiModel(BaseModel):
    """Base of every API model: camelCase on the wire, unknown fields are errors.

    `rules` are the model's cross-field checks (scalelab.rules.Rule): validation.py evaluates
    them in Python and the JSON Schema carries them as CEL for the CRD.
    """

    model_config = ConfigDict(
        extra="forbid",
        alias_generator=to_camel,
        populate_by_name=True,
        use_enum_values=False,
        validate_default=True,
    )

    rules: ClassVar[tuple[Rule, ...]] = ()

    @classmethod
    def __get_pydantic_json_schema__(
        cls, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        out = handler(schema)
        if cls.rules:
            target = handler.resolve_ref_schema(out)
            target["x-kubernetes-validations"] = [r.openapi() for r in cls.rules]
        return out


class SpecModel(ApiModel):
    """Base of what a person writes (spec and metadata): numbers are finite, and integers are
    integers (validation.parse_experiment validates strictly: no booleans, no strings). Every
    integer, string, list and map has an upper bound (kube/crd.py refuses to generate a CRD
    otherwise), so the CLI refuses exactly what the API server refuses."""

    model_config = ConfigDict(allow_inf_nan=False)

    @model_validator(mode="before")
    @classmethod
    def _null_is_absent(cls, data: Any) -> Any:
        """A null where the field cannot be null means "not set", as the API server prunes it
        before defaulting (a nullable field keeps its null)."""
        if not isinstance(data, Mapping):
            return data
        pruned = {
            f.alias or n
            for n, f in cls.model_fields.items()
            if not f.is_required() and type(None) not in getattr(f.annotation, "__args__", ())
        }
        return {k: v for k, v in data.items() if v is not None or k not in pruned}


# ----------------------------------------------------------------------------------- enums


class Model(StrEnum):
    """Model the trainer builds."""

    LINEAR = "linear"
    MLP = "mlp"
    CNN = "cnn"
    CUSTOM = "custom"


class CnnArch(StrEnum):
    """Architecture of the cnn model."""

    RESNET_SMALL = "resnet-small"
    RESNET50 = "resnet50"


class StoppingLoss(StrEnum):
    """The loss the relative-change rule reads."""

    FULL = "full"
    UPDATE = "update"


class Dataset(StrEnum):
    """Dataset the trainer generates (all are synthetic or bundled; no download), or custom: the
    user workload's own data."""

    LAB1_LINE = "lab1-line"
    REGRESSION = "regression"
    DIGITS = "digits"
    SYNTHETIC_IMAGES = "synthetic-images"
    CUSTOM = "custom"


class Optimizer(StrEnum):
    """Optimizer of every trial."""

    SGD = "sgd"
    MOMENTUM = "momentum"
    ADAM = "adam"
    LARS = "lars"
    LAMB = "lamb"


class LrScaling(StrEnum):
    """Learning-rate rule at batch B: none η, linear η·B/B0, sqrt η·√(B/B0)."""

    NONE = "none"
    LINEAR = "linear"
    SQRT = "sqrt"


class BatchScope(StrEnum):
    """What a sweep batch size counts: the global batch, or the batch of one process."""

    GLOBAL = "global"
    PER_PROCESS = "perProcess"


class SweepStrategy(StrEnum):
    """How the sweep's batch sizes are chosen: all of them, or around the measured B_simple."""

    GRID = "grid"
    ADAPTIVE = "adaptive"


class ExperimentPhase(StrEnum):
    """Lifecycle of a ScaleExperiment."""

    PENDING = "Pending"
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"


class TrialPhase(StrEnum):
    """Lifecycle of a ScaleTrial: Diverged is a measured outcome, Skipped cannot run (or was
    ruled out before starting), Pruned was stopped early by the adaptive sweep."""

    PENDING = "Pending"
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    DIVERGED = "Diverged"
    FAILED = "Failed"
    SKIPPED = "Skipped"
    PRUNED = "Pruned"


FINISHED_TRIAL_PHASES = frozenset(
    {
        TrialPhase.SUCCEEDED,
        TrialPhase.DIVERGED,
        TrialPhase.FAILED,
        TrialPhase.SKIPPED,
        TrialPhase.PRUNED,
    }
)


class ConditionStatus(StrEnum):
    """Kubernetes condition status."""

    TRUE = "True"
    FALSE = "False"
    UNKNOWN = "Unknown"


class ConditionType(StrEnum):
    """The condition types scalelab sets: each named once, with when it is True and when False.

    An experiment carries Ready and Complete always, the others when they apply; a trial carries
    only PrerequisitesMet (False while a missing prerequisite holds it back).
    """

    #: True once the spec is valid and the sweep planned; False (reason InvalidSpec) when the
    #: operator refuses the spec, with the message saying what to change.
    READY = "Ready"
    #: True once no trial is pending or running (reason Succeeded when at least one trial was
    #: measured, Failed when none was); False (reason TrialsRunning) while trials remain.
    COMPLETE = "Complete"
    #: Present only with sweep.strategy adaptive: True (reason Placed) once the pilot's B_simple
    #: placed the candidate batches; False while the pilot runs or when it gave no prediction.
    ADAPTIVE_PLAN = "AdaptivePlan"
    #: False while something the sweep needs is missing (the MPIJob API, Kueue, the trainer's
    #: ServiceAccount, a pullable trainer image); absent once nothing is.
    PREREQUISITES_MET = "PrerequisitesMet"
    #: True while a running trial has reported no progress for longer than the stall threshold;
    #: absent otherwise.
    TRIALS_STALLED = "TrialsStalled"
    #: True while any trial has failed, naming the first failures; absent otherwise.
    TRIALS_FAILED = "TrialsFailed"


class TolerationOperator(StrEnum):
    """Kubernetes toleration operator."""

    EXISTS = "Exists"
    EQUAL = "Equal"


class TaintEffect(StrEnum):
    """Kubernetes taint effect; empty matches every effect."""

    NO_SCHEDULE = "NoSchedule"
    PREFER_NO_SCHEDULE = "PreferNoSchedule"
    NO_EXECUTE = "NoExecute"


#: Which datasets each model trains on (the trainer refuses other pairs).
MODEL_DATASETS: dict[Model, tuple[Dataset, ...]] = {
    Model.LINEAR: (Dataset.LAB1_LINE, Dataset.REGRESSION),
    Model.MLP: (Dataset.DIGITS, Dataset.REGRESSION),
    Model.CNN: (Dataset.SYNTHETIC_IMAGES,),
    Model.CUSTOM: (Dataset.CUSTOM,),
}

#: A Python entry point `package.module:function` (the user workload plugin).
ENTRY_POINT_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*:[A-Za-z_][A-Za-z0-9_]*$"
#: A workload parameter's name: a Python identifier (the plugin reads ctx.parameters[name]).
PARAMETER_NAME = Format(
    "parameter name",
    (r"[A-Za-z_][A-Za-z0-9_]*",),
    63,
    "an identifier: letters, digits and '_', not starting with a digit, at most 63 characters",
)
MAX_PARAMETERS = 64
#: A parameter's value: a string of at most this many characters, a number, a boolean, or a list
#: of at most MAX_PARAMETER_LIST of them.
MAX_PARAMETER_STRING, MAX_PARAMETER_LIST = 1024, 256
PARAMETER_VALUE_MESSAGE = (
    f"must be a string (at most {MAX_PARAMETER_STRING} characters), a number, true/false or a "
    f"list of at most {MAX_PARAMETER_LIST} of them"
)
#: The CRD marks a field whose values Kubernetes keeps as they are (`workload.parameters`). No CRD
#: rule can check them: Kubernetes' CEL has no type for data kept by
#: x-kubernetes-preserve-unknown-fields ("failed to convert to declType"), so neither the names
#: nor the values are visible to a rule. The models check both; the operator refuses an
#: experiment they refuse with Ready=False InvalidSpec naming the field (docs/design-changes.md).
FREE_FORM_VALUES = "x-scalelab-free-form-values"


def _parameter_value(value: Any) -> Any:
    """A workload parameter: a string, number or boolean, or a list of them (one error, not one
    per member of a union)."""

    def scalar(v: Any) -> bool:
        return isinstance(v, bool | int | float) or (
            isinstance(v, str) and len(v) <= MAX_PARAMETER_STRING
        )

    if scalar(value) or (
        isinstance(value, list)
        and len(value) <= MAX_PARAMETER_LIST
        and all(scalar(v) for v in value)
    ):
        return value
    raise PydanticCustomError("parameter_value", PARAMETER_VALUE_MESSAGE)


ParameterValue = Annotated[Any, AfterValidator(_parameter_value)]
ParameterName = Annotated[str, PARAMETER_NAME]

# ------------------------------------------------------------------------------------ spec

PositiveInt = Annotated[int, Field(gt=0, le=MAX_INT)]


class Workload(SpecModel):
    """What is trained and on which data."""

    rules = (
        *(
            Rule(
                at("model").ne(model.value) | at("dataset").is_in([d.value for d in datasets]),
                f"model {model.value} trains on {', '.join(d.value for d in datasets)}",
                field="dataset",
                got=at("dataset"),
            )
            for model, datasets in MODEL_DATASETS.items()
        ),
        Rule(
            at("model").eq(Model.CUSTOM.value).eq(has("entryPoint")),
            "required with model custom (package.module:function) and allowed only there",
            field="entryPoint",
        ),
    )

    model: Model = Field(
        default=Model.LINEAR,
        description="Model to train: linear (datasets lab1-line, regression), mlp (digits, "
        "regression), cnn (synthetic-images) or custom (dataset custom: a user workload, see "
        "entryPoint). Default: linear.",
    )
    dataset: Dataset = Field(
        default=Dataset.LAB1_LINE,
        description="Dataset the trainer generates; custom: the user workload's own. "
        "Default: lab1-line.",
    )
    entry_point: str | None = Field(
        default=None,
        max_length=256,
        pattern=ENTRY_POINT_PATTERN,
        description="model custom only, and required there: the user workload plugin, "
        "package.module:function returning a scalelab_trainer.plugin.Workload (API version 1, "
        "docs/plugins.md); its package must be installed in the trainer image (locally: in the "
        "trainer's Python). Default: null.",
    )
    parameters: dict[ParameterName, ParameterValue] = Field(
        default_factory=dict,
        max_length=MAX_PARAMETERS,
        json_schema_extra={FREE_FORM_VALUES: True},
        description="model custom: free-form parameters handed to the entry point as "
        "ctx.parameters; names are identifiers, values strings, numbers, booleans or lists of "
        "them (at most 64). The plugin checks their meaning; a value it refuses fails the "
        "trial with its message. Default: {}.",
    )
    dataset_size: int = Field(
        default=100,
        gt=0,
        le=MAX_INT,
        description="Number of training examples (lab1-line: the lab's n). Unit: examples. "
        "Default: 100.",
    )
    seed: int = Field(
        default=0,
        ge=0,
        le=2**30,
        description="Data and initialisation seed of repeat 0; repeat r uses seed + r. "
        "Default: 0, at most 2^30.",
    )
    line_slope: float = Field(
        default=10.0,
        description="lab1-line: slope w_gen of y = w_gen·(x + noise) + b_gen. Default: 10.",
    )
    line_intercept: float = Field(
        default=2.0, description="lab1-line: intercept b_gen. Default: 2."
    )
    noise: float = Field(
        default=1.0,
        ge=0,
        description="lab1-line: standard deviation of the noise added to x; regression: of the "
        "noise on y. Unit: data units. Default: 1.",
    )
    features: int = Field(
        default=100,
        ge=1,
        le=100_000,
        description="regression: dimension d of x. Unit: features. Default: 100.",
    )
    image_size: int = Field(
        default=32,
        ge=32,
        le=512,
        description="synthetic-images: height = width of the 3-channel images (224 for the "
        "usual ResNet-50 benchmark). Unit: pixels. Default: 32.",
    )
    num_classes: int = Field(
        default=10, ge=2, le=10_000, description="synthetic-images: classes. Default: 10."
    )
    test_fraction: float = Field(
        default=0.2,
        gt=0,
        lt=1,
        description="digits: share of the 1797 images held out for test accuracy. Unit: ratio. "
        "Default: 0.2.",
    )
    hidden_units: int = Field(
        default=128, ge=1, le=65_536, description="mlp: units per hidden layer. Default: 128."
    )
    hidden_layers: int = Field(
        default=2, ge=0, le=64, description="mlp: hidden layers. Unit: layers. Default: 2."
    )
    cnn_arch: CnnArch = Field(
        default=CnnArch.RESNET_SMALL,
        description="cnn: resnet-small (3 residual stages of 16/32/64 filters) or resnet50 "
        "(Keras' ResNet-50, random weights). Default: resnet-small.",
    )


class AdaptiveSweep(SpecModel):
    """strategy adaptive: a pilot trial measures B_simple, then only batch sizes near it run."""

    width: float = Field(
        default=4.0,
        ge=1,
        le=1000,
        description="Candidate batch sizes within this factor of the predicted critical batch "
        "size (either side, widened by the prediction's ±2 standard errors) run; the rest are "
        "Skipped with the reason. Unit: ratio. Default: 4.",
    )
    min_points: int = Field(
        default=3,
        ge=2,
        le=64,
        description="At least this many batch sizes run (the nearest to the prediction in log "
        "B), so a fit is possible. Unit: batch sizes. Default: 3.",
    )


class Sweep(SpecModel):
    """The grid: every batch size × every process count × repeats."""

    rules = (
        Rule(unique("batchSizes"), "must not repeat values", "batchSizes", got=at("batchSizes")),
        Rule(unique("gpus"), "must not repeat values", "gpus", got=at("gpus")),
        Rule(
            at("batchSizes").size() * at("gpus").size() * at("repeats") <= MAX_TRIALS,
            f"must have at most {MAX_TRIALS} trials (batchSizes × gpus × repeats; each is a "
            "ScaleTrial, an MPIJob and a results row in etcd): split the sweep into several "
            "ScaleExperiments, e.g. a few batch sizes each",
            got=at("batchSizes").size() * at("gpus").size() * at("repeats"),
        ),
    )

    batch_sizes: list[PositiveInt] = Field(
        default=[100],
        min_length=1,
        max_length=64,
        description="Batch sizes to sweep, per optimizer step (see batchScope). Unit: examples. "
        "Default: [100].",
    )
    gpus: list[PositiveInt] = Field(
        default=[1],
        min_length=1,
        max_length=64,
        description="Horovod process counts to sweep (one GPU each when "
        "resources.gpusPerProcess=1). Unit: processes. Default: [1].",
    )
    repeats: int = Field(
        default=1,
        ge=1,
        le=100,
        description="Seeds per grid point (repeat r uses workload.seed + r). Unit: runs. "
        f"Default: 1. batchSizes × gpus × repeats is at most {MAX_TRIALS} trials.",
    )
    strategy: SweepStrategy = Field(
        default=SweepStrategy.GRID,
        description="grid: every batch size runs; adaptive: a pilot at the middle batch size "
        "(fewest GPUs, repeat 0) measures B_simple, then only batch sizes near the predicted "
        "B_crit run, smallest first, and a batch above one that Diverged under linear lr "
        "scaling is not started (see adaptive). batchSizes are the candidates. Default: grid.",
    )
    adaptive: AdaptiveSweep = Field(
        default_factory=AdaptiveSweep,
        description="Settings of strategy adaptive. Default: width 4, minPoints 3.",
    )
    batch_scope: BatchScope = Field(
        default=BatchScope.GLOBAL,
        description="global: batchSizes are global batches split over the processes; "
        "perProcess: batchSizes are per-process batches and the global batch is b·N. "
        "Default: global.",
    )


class Convergence(SpecModel):
    """The stopping rule on the full-dataset loss at epoch ends."""

    relative_tolerance: float = Field(
        default=0.001,
        ge=0,
        description="Stop when |L_i − L_{i−1}|/L_{i−1} < relativeTolerance between epochs; "
        "0 turns the rule off. Unit: dimensionless ratio. Default: 0.001.",
    )
    stopping_loss: StoppingLoss = Field(
        default=StoppingLoss.FULL,
        description="The L the rule reads: full (the full-dataset loss at each epoch end, L_0 "
        "the loss before training) or update (the mean of the epoch's per-update losses, the "
        "lab's exact rule). Default: full.",
    )


class Training(SpecModel):
    """How every trial trains."""

    optimizer: Optimizer = Field(default=Optimizer.SGD, description="Optimizer. Default: sgd.")
    learning_rate: float = Field(
        default=0.001,
        gt=0,
        le=1e6,
        description="Base learning rate, tuned at referenceBatchSize. Unit: per step. "
        "Default: 0.001, at most 10^6.",
    )
    reference_batch_size: int = Field(
        default=100,
        gt=0,
        le=MAX_INT,
        description="Global batch size the base learning rate was tuned at. Unit: examples. "
        "Default: 100.",
    )
    lr_scaling: LrScaling = Field(
        default=LrScaling.NONE,
        description="Learning-rate rule at global batch B: none η, linear η·B/B0, "
        "sqrt η·√(B/B0). Default: none.",
    )
    warmup_epochs: float = Field(
        default=0.0,
        ge=0,
        description="Gradual linear warmup from the base to the scaled rate (Goyal et al. "
        "2017). Unit: epochs. Default: 0 (no warmup).",
    )
    momentum: float = Field(
        default=0.9,
        ge=0,
        lt=1,
        description="momentum and lars: heavy-ball coefficient; adam and lamb: β1. Default: 0.9.",
    )
    beta2: float = Field(
        default=0.999,
        ge=0,
        lt=1,
        description="adam and lamb: second-moment decay β2. Default: 0.999.",
    )
    epsilon: float = Field(
        default=1e-6, gt=0, description="adam and lamb: denominator guard ε. Default: 1e-6."
    )
    weight_decay: float = Field(
        default=0.0,
        ge=0,
        description="lars and lamb: decoupled weight decay λ inside the trust ratio. Unit: per "
        "step, relative to the rate. Default: 0.",
    )
    trust_coefficient: float = Field(
        default=0.001,
        gt=0,
        description="lars: trust coefficient τ of the local rate τ·‖w‖/(‖g‖ + λ‖w‖) "
        "(You et al. 2017). Default: 0.001.",
    )
    max_epochs: int = Field(
        default=1000,
        gt=0,
        le=10**6,
        description="Epoch cap of every trial. Unit: epochs. Default: 1000, at most 10^6.",
    )
    divergence_factor: float = Field(
        default=1e4,
        gt=1,
        description="A trial is Diverged as soon as a loss is non-finite or above this times "
        "its initial loss. Unit: ratio. Default: 10000.",
    )
    convergence: Convergence = Field(
        default_factory=Convergence,
        description="Stopping rule. Default: relativeTolerance 0.001 (the lab's rule).",
    )
    target_loss: float | None = Field(
        default=None,
        gt=0,
        description="Optional full-dataset loss target for steps-, epochs- and "
        "time-to-target. Unit: loss. Default: null (no target).",
    )
    shuffle: bool = Field(
        default=False,
        description="Reshuffle the data every epoch (same permutation on every rank). "
        "Default: false (the lab does not shuffle).",
    )


class Measurement(SpecModel):
    """What every trial measures and records beyond loss and throughput."""

    gradient_noise_scale: bool = Field(
        default=True,
        description="Estimate the gradient noise scale B_simple (two-batch estimator, "
        "McCandlish et al. 2018). Default: true.",
    )
    noise_window_epochs: float = Field(
        default=1.0,
        ge=0,
        le=1000,
        description="B_simple smoothing: |G|² and tr(Σ) are moving averages with this time "
        "constant, carried across epochs; 0 = every step of the trial weighs the same. Unit: "
        "epochs. Default: 1.",
    )
    record_update_losses: bool = Field(
        default=False,
        description="Record every update's loss (the lab's loss-vs-update plot). Default: false.",
    )
    loss_surface_points: int = Field(
        default=0,
        ge=0,
        le=400,
        description="linear model on lab1-line: the loss on a K×K (w, b) grid in the result; "
        "0 = off. Unit: points per axis. Default: 0.",
    )
    steps_per_call: int = Field(
        default=0,
        ge=0,
        le=100_000,
        description="Optimizer steps per compiled call; 0 = auto (a whole epoch for linear "
        "models, 1 otherwise, which times every step). Unit: steps. Default: 0.",
    )
    throughput_skip_steps: int = Field(
        default=10,
        ge=0,
        le=100_000,
        description="First steps left out of throughput (warm-up). Unit: steps. Default: 10.",
    )
    intra_op_threads: int = Field(
        default=0,
        ge=0,
        le=1024,
        description="TensorFlow intra-op threads per process; 0 = TensorFlow's default. Unit: "
        "threads. Default: 0.",
    )


class Toleration(SpecModel):
    """A Kubernetes toleration copied onto every trial pod (checked as pod validation would)."""

    rules = (
        Rule(
            has("key") | at("operator").eq(TolerationOperator.EXISTS.value),
            "a toleration without a key matches every taint and needs operator: Exists",
            "operator",
        ),
        Rule(
            ~(at("operator").eq(TolerationOperator.EXISTS.value) & has("value"))
            | at("value").eq(""),
            "a toleration with operator: Exists takes no value",
            "value",
        ),
        Rule(
            ~has("tolerationSeconds")
            | (has("effect") & at("effect").eq(TaintEffect.NO_EXECUTE.value)),
            "tolerationSeconds applies only to effect: NoExecute",
            "tolerationSeconds",
        ),
    )

    key: Annotated[str, LABEL_KEY] | None = Field(
        default=None, description="Taint key; null matches all keys. Default: null."
    )
    operator: TolerationOperator = Field(
        default=TolerationOperator.EQUAL, description="Exists or Equal. Default: Equal."
    )
    value: Annotated[str, LABEL_VALUE] | None = Field(
        default=None, description="Taint value (Equal). Default: null."
    )
    effect: TaintEffect | None = Field(
        default=None, description="Taint effect to tolerate; null matches all. Default: null."
    )
    toleration_seconds: int | None = Field(
        default=None,
        ge=0,
        le=MAX_INT,
        description="How long a NoExecute taint is tolerated. Unit: seconds. "
        "Default: null (forever).",
    )


class Resources(SpecModel):
    """What every trial pod gets on a cluster (ignored by the local executor except where said)."""

    image: Annotated[str, IMAGE] | None = Field(
        default=None,
        description="Trainer container image of the MPIJob's pods; the local executor runs this "
        "machine's trainer instead. Default: null (the operator's configured trainer image, "
        "SCALELAB_TRAINER_IMAGE).",
    )
    gpus_per_process: int = Field(
        default=1,
        ge=0,
        le=8,
        description="GPUs per Horovod process; 0 runs on CPU. Unit: GPUs. Default: 1.",
    )
    processes_per_worker: int = Field(
        default=1,
        ge=1,
        le=64,
        description="Most Horovod processes (MPI slots) per worker pod. A trial of N processes "
        "runs N / s workers of s slots, s the largest divisor of N up to this value, so its "
        "workers request exactly N × gpusPerProcess GPUs. Unit: processes. Default: 1.",
    )
    cpu: Annotated[str, CPU_QUANTITY] = Field(
        default="2",
        description="CPU request and limit per worker pod, a Kubernetes quantity. Unit: cores "
        '(or millicores with m). Default: "2".',
    )
    memory: Annotated[str, MEMORY_QUANTITY] = Field(
        default="4Gi",
        description="Memory request and limit per worker pod, a Kubernetes quantity. Unit: "
        "bytes (with suffix). Default: 4Gi.",
    )
    node_selector: dict[Annotated[str, LABEL_KEY], Annotated[str, LABEL_VALUE]] = Field(
        default_factory=dict,
        max_length=64,
        description="Node labels every trial pod must match (label keys and values). Default: {}.",
    )
    tolerations: list[Toleration] = Field(
        default_factory=list,
        max_length=64,
        description="Tolerations of every trial pod. Default: [].",
    )
    priority_class_name: Annotated[str, DNS_SUBDOMAIN] | None = Field(
        default=None,
        description="PriorityClass of trial pods (a DNS subdomain). Default: null (cluster "
        "default).",
    )


class Execution(SpecModel):
    """How trials are scheduled and bounded."""

    max_concurrent_trials: int = Field(
        default=4,
        ge=1,
        le=MAX_TRIALS,
        description="Trials running at once. Unit: trials. Default: 4.",
    )
    max_gpus: int = Field(
        default=16,
        ge=1,
        le=2**20,
        alias="maxGPUs",
        description="GPU budget: grid points needing more processes are Skipped, and running "
        "trials never hold more in total. Unit: GPUs (processes on the local executor). "
        "Default: 16.",
    )
    backoff_limit: int = Field(
        default=1,
        ge=0,
        le=100,
        description="Retries of a failed trial (MPIJob runPolicy). Unit: retries. Default: 1.",
    )
    active_deadline_seconds: int = Field(
        default=3600,
        gt=0,
        le=MAX_INT,
        description="A trial running longer is killed and marked Failed. Unit: seconds. "
        "Default: 3600.",
    )
    queue_name: Annotated[str, QUEUE_NAME] | None = Field(
        default=None,
        description="Kueue LocalQueue; when set, MPIJobs are created suspended with the "
        "kueue.x-k8s.io/queue-name label. Default: null (no Kueue).",
    )


class ScaleExperimentSpec(SpecModel):
    """The sweep: what to train, the grid, how, and on what."""

    workload: Workload = Field(
        default_factory=Workload,
        description="Model and data. Default: the lab's linear model.",
    )
    sweep: Sweep = Field(default_factory=Sweep, description="The grid of batch sizes × GPUs.")
    training: Training = Field(default_factory=Training, description="Training settings.")
    measurement: Measurement = Field(
        default_factory=Measurement, description="What every trial measures and records."
    )
    resources: Resources = Field(default_factory=Resources, description="Pod resources.")
    execution: Execution = Field(
        default_factory=Execution, description="Scheduling, budget and deadlines."
    )


class ObjectMeta(SpecModel):
    """The part of Kubernetes object metadata a ScaleExperiment file may carry."""

    name: Annotated[str, DNS_LABEL] = Field(
        ...,
        description="Object name: lower-case letters, digits and '-', at most 63 characters.",
    )
    namespace: Annotated[str, DNS_LABEL] | None = Field(
        default=None,
        description="Namespace. Default: null (the current namespace).",
    )
    labels: dict[Annotated[str, LABEL_KEY], Annotated[str, LABEL_VALUE]] = Field(
        default_factory=dict, description="Labels. Default: {}."
    )
    annotations: dict[Annotated[str, LABEL_KEY], str] = Field(
        default_factory=dict, description="Annotations (keys as label keys). Default: {}."
    )


# ---------------------------------------------------------------------------------- status


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
        description="Scaling efficiency. batchScope global: strong, thr(N,B)/(N·thr(1,B)) "
        "against the 1-process trial of the same global batch; perProcess: weak, "
        "thr(N,b·N)/(N·thr(1,b)). Unit: ratio.",
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
    pruned: bool = Field(
        default=False,
        description="Skipped or stopped by the adaptive sweep (the reason says why). "
        "Default: false.",
    )


class ParetoPoint(ApiModel):
    """A configuration on the Pareto front of time-to-target vs GPU-seconds."""

    trial: str = Field(..., description="ScaleTrial name.")
    batch_size: int = Field(..., gt=0, description="Global batch size. Unit: examples.")
    gpus: int = Field(..., gt=0, description="Horovod processes. Unit: processes.")
    time_to_target_seconds: float = Field(
        ...,
        description="Time to the target loss (without a target: to convergence). Unit: seconds.",
    )
    gpu_seconds: float = Field(..., description="Processes × time-to-target. Unit: GPU-seconds.")


class BatchSteps(ApiModel):
    """Steps-to-target at one batch size over its repeats."""

    batch_size: int = Field(..., gt=0, description="Global batch size. Unit: examples.")
    runs: int = Field(..., ge=1, description="Repeats that reached the target. Unit: runs.")
    mean: float = Field(..., description="Mean steps-to-target. Unit: steps.")
    stdev: float | None = Field(
        default=None, description="Sample standard deviation (null with one run). Unit: steps."
    )


class EfficiencyInterval(ApiModel):
    """Scaling efficiency of one (batch, GPUs) over its repeats, with a 95% interval."""

    batch_size: int = Field(..., gt=0, description="Global batch size. Unit: examples.")
    gpus: int = Field(..., gt=0, description="Horovod processes. Unit: processes.")
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
    reason: str = Field(default="", description='Why, in one sentence. Default: "".')
    confidence: float | None = Field(
        default=None,
        ge=0,
        le=1,
        description="Share of bootstrap resamples over repeats that recommend the same "
        "configuration (null with one repeat). Unit: ratio. Default: null.",
    )
    pareto: list[ParetoPoint] = Field(
        default_factory=list,
        description="Pareto front of time-to-target vs GPU-seconds. Default: [].",
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


class ScaleExperiment(SpecModel):
    """A scaling sweep of a Horovod training job."""

    api_version: Literal["scalelab.dev/v1alpha1"] = Field(
        default="scalelab.dev/v1alpha1", description="API version: scalelab.dev/v1alpha1."
    )
    kind: Literal["ScaleExperiment"] = Field(
        default="ScaleExperiment", description="ScaleExperiment."
    )
    metadata: ObjectMeta = Field(..., description="Object metadata; name is required.")
    spec: ScaleExperimentSpec = Field(default_factory=ScaleExperimentSpec, description="The sweep.")
    status: ScaleExperimentStatus | None = Field(default=None, description="Observed state.")


# ---------------------------------------------------------------------------------- trials


class TrialProgress(ApiModel):
    """Live progress a trial's rank 0 patches (rate-limited)."""

    epoch: int | None = Field(default=None, ge=0, description="Epochs finished. Unit: epochs.")
    steps: int | None = Field(default=None, ge=0, description="Optimizer steps. Unit: steps.")
    loss: float | None = Field(default=None, description="Full-dataset loss at the last epoch end.")
    samples_per_second: float | None = Field(default=None, description="Unit: samples/second.")
    training_seconds: float | None = Field(
        default=None, ge=0, description="Training time from the first step. Unit: seconds."
    )
    updated_at: str | None = Field(default=None, description="RFC 3339 time of this progress.")


class ParamSummary(ApiModel):
    """Final parameters: w and b for the linear model on lab1-line, a summary otherwise."""

    w: float | None = Field(default=None, description="Slope (linear model on lab1-line).")
    b: float | None = Field(default=None, description="Intercept (linear model on lab1-line).")
    norm: float | None = Field(default=None, description="L2 norm of all weights (other models).")
    count: int | None = Field(default=None, ge=0, description="Number of weights (other models).")


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
