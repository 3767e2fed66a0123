"""spec.execution: how trials are scheduled and bounded (concurrency, GPU budget, deadlines)."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from scalelab.api.base import MAX_INT, MAX_TRIALS, SpecModel
from scalelab.rules import QUEUE_NAME


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
