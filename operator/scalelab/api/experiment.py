"""The ScaleExperiment resource: its spec (the spec sections together), metadata and status."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from scalelab.api.base import SpecModel
from scalelab.api.execution import Execution
from scalelab.api.measurement import Measurement
from scalelab.api.objective import Objective
from scalelab.api.resources import Resources
from scalelab.api.status import ScaleExperimentStatus
from scalelab.api.sweep import Sweep
from scalelab.api.training import Training
from scalelab.api.workload import Workload
from scalelab.rules import DNS_LABEL, LABEL_KEY, LABEL_VALUE


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
    objective: Objective = Field(
        default_factory=Objective,
        description="What the recommendation optimises. Default: goal fastest, tolerance 0.05.",
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
