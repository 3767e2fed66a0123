"""The scalelab API: pydantic models of ScaleExperiment and ScaleTrial (scalelab.dev/v1alpha1).

One source of truth for the custom resources. The local executor validates YAML files with
these models, the kopf operator validates every body with them, and the CRD OpenAPI schemas in
`manifests/` are generated from (or tested against) them. Every model is therefore expressible
as a structural OpenAPI schema: closed enums, no unions of objects, and no free-form maps except
`resources.nodeSelector` (string → string) and `workload.parameters` (a user workload's own
parameters: names checked here, values kept by Kubernetes as written). Every field carries a
description that states its default and unit; names are camelCase on the wire (snake_case in
Python).

One module per concept: `base` (group, kinds, bounds, the base models), `enums`, the spec
sections (`workload`, `sweep`, `training`, `measurement`, `resources`, `execution`), `status`,
and the two resources (`experiment`, `trial`). Import from `scalelab.api`, which re-exports
every public name; the submodules are how the package is laid out, not separate interfaces.
"""

from scalelab.api.base import (
    API_VERSION,
    EXPERIMENT_KIND,
    GROUP,
    MAX_INT,
    MAX_TRIALS,
    TRIAL_KIND,
    VERSION,
    ApiModel,
    PositiveInt,
    SpecModel,
)
from scalelab.api.enums import (
    FINISHED_TRIAL_PHASES,
    BatchScope,
    CnnArch,
    ConditionStatus,
    ConditionType,
    Dataset,
    ExperimentPhase,
    LrScaling,
    Model,
    Optimizer,
    StoppingLoss,
    SweepStrategy,
    TaintEffect,
    TolerationOperator,
    TrialPhase,
)
from scalelab.api.execution import Execution
from scalelab.api.experiment import ObjectMeta, ScaleExperiment, ScaleExperimentSpec
from scalelab.api.measurement import Measurement
from scalelab.api.resources import Resources, Toleration
from scalelab.api.status import (
    BatchSteps,
    Condition,
    CriticalBatch,
    EfficiencyInterval,
    GpuUsage,
    ParetoPoint,
    Recommendation,
    ResultRow,
    ScaleExperimentStatus,
    TrialCounts,
)
from scalelab.api.sweep import AdaptiveSweep, Sweep
from scalelab.api.training import Convergence, Training
from scalelab.api.trial import (
    ParamSummary,
    ScaleTrialSpec,
    ScaleTrialStatus,
    TrialProgress,
    TrialResult,
    read_trial_result,
)
from scalelab.api.workload import (
    ENTRY_POINT_PATTERN,
    FREE_FORM_VALUES,
    MAX_PARAMETER_LIST,
    MAX_PARAMETER_STRING,
    MAX_PARAMETERS,
    MODEL_DATASETS,
    PARAMETER_NAME,
    PARAMETER_VALUE_MESSAGE,
    ParameterName,
    ParameterValue,
    Workload,
)

__all__ = [
    "API_VERSION",
    "ENTRY_POINT_PATTERN",
    "EXPERIMENT_KIND",
    "FINISHED_TRIAL_PHASES",
    "FREE_FORM_VALUES",
    "GROUP",
    "MAX_INT",
    "MAX_PARAMETERS",
    "MAX_PARAMETER_LIST",
    "MAX_PARAMETER_STRING",
    "MAX_TRIALS",
    "MODEL_DATASETS",
    "PARAMETER_NAME",
    "PARAMETER_VALUE_MESSAGE",
    "TRIAL_KIND",
    "VERSION",
    "AdaptiveSweep",
    "ApiModel",
    "BatchScope",
    "BatchSteps",
    "CnnArch",
    "Condition",
    "ConditionStatus",
    "ConditionType",
    "Convergence",
    "CriticalBatch",
    "Dataset",
    "EfficiencyInterval",
    "Execution",
    "ExperimentPhase",
    "GpuUsage",
    "LrScaling",
    "Measurement",
    "Model",
    "ObjectMeta",
    "Optimizer",
    "ParamSummary",
    "ParameterName",
    "ParameterValue",
    "ParetoPoint",
    "PositiveInt",
    "Recommendation",
    "Resources",
    "ResultRow",
    "ScaleExperiment",
    "ScaleExperimentSpec",
    "ScaleExperimentStatus",
    "ScaleTrialSpec",
    "ScaleTrialStatus",
    "SpecModel",
    "StoppingLoss",
    "Sweep",
    "SweepStrategy",
    "TaintEffect",
    "Toleration",
    "TolerationOperator",
    "Training",
    "TrialCounts",
    "TrialPhase",
    "TrialProgress",
    "TrialResult",
    "Workload",
    "read_trial_result",
]
