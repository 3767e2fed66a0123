"""spec.resources: what every trial pod gets on a cluster (image, GPUs, CPU, memory, placement)."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from scalelab.api.base import MAX_INT, SpecModel
from scalelab.api.enums import TaintEffect, TolerationOperator
from scalelab.rules import (
    CPU_QUANTITY,
    DNS_SUBDOMAIN,
    IMAGE,
    LABEL_KEY,
    LABEL_VALUE,
    MEMORY_QUANTITY,
    Rule,
    at,
    has,
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
