"""spec.execution: how trials are scheduled and bounded (concurrency, GPU budget, deadlines), and
the Kueue LocalQueue and topology they are placed by."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

from pydantic import Field

from scalelab.api.base import MAX_INT, MAX_TRIALS, SpecModel
from scalelab.rules import QUEUE_NAME, TOPOLOGY_LEVEL, Rule, has


class TopologyMode(StrEnum):
    """How strictly Kueue keeps a trial's pods in one topology domain."""

    REQUIRED = "Required"
    PREFERRED = "Preferred"


class Topology(SpecModel):
    """Where Kueue's Topology Aware Scheduling places a trial's launcher and workers: all in one
    domain (rack, block, ...) of `level`.

    A mode and a level rather than Kueue's own `required` / `preferred` pair of fields: one level
    field, whose meaning the mode qualifies, needs no "exactly one of" rule, and the mode reads
    as what it decides. It has no default: Required can hold a trial until one domain has room
    for all its pods (forever, where no domain is ever that large), Preferred lets it spread
    over domains and measure the network between them; which one a sweep wants is its author's
    choice, not ours.
    """

    mode: TopologyMode = Field(
        ...,
        description="Required: every pod of the trial in one domain of `level`, or the trial "
        "waits (Kueue's kueue.x-k8s.io/podset-required-topology). Preferred: one domain if one "
        "has room, else the next level up, else spread over domains "
        "(kueue.x-k8s.io/podset-preferred-topology). Required.",
    )
    level: Annotated[str, TOPOLOGY_LEVEL] = Field(
        ...,
        description="The node label key of one level of the Kueue Topology that the "
        "LocalQueue's ResourceFlavor names (e.g. cloud.google.com/gce-topology-block, "
        "kubernetes.io/hostname); at most 63 characters. Required.",
    )


class Execution(SpecModel):
    """How trials are scheduled and bounded."""

    rules = (
        Rule(
            ~has("topology") | has("queueName"),
            "topology is carried out by Kueue's Topology Aware Scheduling, so it needs "
            "spec.execution.queueName (a LocalQueue whose ClusterQueue has a ResourceFlavor with "
            "a topologyName); set queueName, or remove topology to place trials without Kueue",
            "topology",
        ),
    )

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
        "kueue.x-k8s.io/queue-name label. Default: null (the operator's default queue, "
        "SCALELAB_DEFAULT_QUEUE_NAME, if it has one; else no Kueue).",
    )
    topology: Topology | None = Field(
        default=None,
        description="Kueue Topology Aware Scheduling: keep each trial's launcher and workers "
        "in one domain (rack, block) of a node label, so that every GPU count is measured over "
        "the same kind of links. Needs queueName. Default: null (Kueue places pods freely).",
    )
