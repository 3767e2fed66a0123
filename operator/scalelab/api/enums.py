"""The closed sets of values the API uses: models, datasets, optimizers, phases, conditions.

Each is a StrEnum whose values are the wire form; the CRD lists them as OpenAPI enums.
"""

from __future__ import annotations

from enum import StrEnum


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
