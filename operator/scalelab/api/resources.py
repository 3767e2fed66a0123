"""spec.resources: what every trial pod gets on a cluster (image, GPUs, CPU, memory, placement,
and the data it can reach: volumes, environment, pull secrets, ServiceAccount)."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field

from scalelab.api.base import MAX_INT, SpecModel
from scalelab.api.enums import TaintEffect, TolerationOperator
from scalelab.api.pod import (
    MAX_ITEMS,
    VOLUME_RULES,
    EnvFromSource,
    EnvVar,
    LocalObjectReference,
    Volume,
    VolumeMount,
)
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

    rules = VOLUME_RULES

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
    volumes: list[Volume] = Field(
        default_factory=list,
        max_length=MAX_ITEMS,
        description="Volumes of the worker pods, mounted by volumeMounts: persistentVolumeClaim, "
        "configMap, secret, emptyDir, csi or hostPath (one each), as in a pod spec. Cluster "
        "only: the local executor mounts nothing. Default: [].",
    )
    volume_mounts: list[VolumeMount] = Field(
        default_factory=list,
        max_length=MAX_ITEMS,
        description="Where the volumes appear in the trainer container, as in a container spec "
        "(e.g. {name: data, mountPath: /data, readOnly: true}). Default: [].",
    )
    env: list[EnvVar] = Field(
        default_factory=list,
        max_length=MAX_ITEMS,
        description="Environment variables of the trainer processes, as in a container spec: a "
        "value, or valueFrom a Secret or ConfigMap key. The local executor passes the plain "
        "values and nothing from valueFrom. Default: [].",
    )
    env_from: list[EnvFromSource] = Field(
        default_factory=list,
        max_length=MAX_ITEMS,
        description="Whole Secrets or ConfigMaps as environment variables of the trainer "
        "processes (e.g. object-storage credentials), as in a container spec. Cluster only. "
        "Default: [].",
    )
    image_pull_secrets: list[LocalObjectReference] = Field(
        default_factory=list,
        max_length=MAX_ITEMS,
        description="Secrets (docker-registry type) to pull the trainer image with, as in a pod "
        "spec: [{name: regcred}]. Cluster only. Default: [].",
    )
    service_account_name: Annotated[str, DNS_SUBDOMAIN] | None = Field(
        default=None,
        description="ServiceAccount of the worker pods (e.g. one with a cloud identity that can "
        "read the dataset). Rank 0 reports progress and stores results with its token, so it "
        "needs the scalelab-trainer ClusterRole bound in the namespace too (patch "
        "scaletrials/status, create configmaps). Cluster only. Default: null (the operator's "
        "trainer ServiceAccount, scalelab-trainer).",
    )

    def pod_fields(self) -> dict[str, Any]:
        """`volumes` and `imagePullSecrets` of a trial pod's spec as Kubernetes takes them (the
        wire form: every field has its Kubernetes name); empty ones are left out."""
        return _present(volumes=self.volumes, imagePullSecrets=self.image_pull_secrets)

    def container_fields(self) -> dict[str, Any]:
        """`volumeMounts`, `env` and `envFrom` of the trainer container as Kubernetes takes
        them; empty ones are left out."""
        return _present(volumeMounts=self.volume_mounts, env=self.env, envFrom=self.env_from)

    def cluster_only(self) -> list[str]:
        """The set fields that take effect on a cluster only (the local executor cannot mount
        a volume or read a Secret), by wire name."""
        found = [
            name
            for name, value in (
                ("volumes", self.volumes),
                ("volumeMounts", self.volume_mounts),
                ("envFrom", self.env_from),
                ("imagePullSecrets", self.image_pull_secrets),
                ("serviceAccountName", self.service_account_name),
            )
            if value
        ]
        if any(e.value_from is not None for e in self.env):
            found.insert(2, "env[].valueFrom")
        return found

    def plain_env(self) -> dict[str, str]:
        """The variables of `env` that have a plain value (none from valueFrom); a variable with
        neither is set to "", as Kubernetes sets it."""
        return {e.name: e.value or "" for e in self.env if e.value_from is None}


def _present(**lists: list[Any]) -> dict[str, Any]:
    return {
        key: [item.model_dump(by_alias=True, mode="json", exclude_none=True) for item in items]
        for key, items in lists.items()
        if items
    }
