"""kopf entry points, and nothing else: each validates or snapshots its input and hands off to
kube/operations.py at once; kube/main.py registers them. Handler ids are constants: kopf stores
progress under them, so renaming one loses state on running experiments.

- PLAN (on create) / RESUME (on operator start) of a ScaleExperiment: validate, ensure the
  trainer account, first reconciliation (creates the ScaleTrials); InvalidSpec → Ready=False +
  PermanentError. RESUME of a finished experiment only puts its results back into /metrics.
- RECONCILE (timer on planned, unfinished ScaleExperiments): admission, MPIJobs, phases, status.
- TRIAL_INDEX / JOB_INDEX: in-memory views of scalelab's ScaleTrials and MPIJobs by experiment,
  filled by kopf's watches before any handler runs, so a restarted operator sees what exists.
- QUEUE_INDEX: Kueue Workloads of MPIJobs by namespace (why Kueue holds a trial back); empty,
  and its watch idle, where Kueue is not installed.
- LOGIN: in-cluster ServiceAccount token, else KUBECONFIG (through lightkube, kube/rest.py).
- FORGET (event): drop a deleted experiment's metric series, and a finished one's plan and pass
  memory (nothing of a finished experiment's trials stays in memory but its metrics).
No deletion handler: owner references and the garbage collector remove trials and MPIJobs, and
no finalizer blocks a deletion while the operator is down (the timer's finalizer goes when the
experiment finishes).
"""

from __future__ import annotations

from typing import Any

import kopf

from scalelab.kube import operations, rest
from scalelab.kube.mpijob import LABEL_MANAGED_BY, MANAGED_BY
from scalelab.kube.observed import (
    JobState,
    Key,
    QueueState,
    TrialState,
    job_entry,
    trial_entry,
    workload_entry,
)
from scalelab.kube.resources import (
    EXPERIMENT_RESOURCE,
    MPIJOB_RESOURCE,
    TRIAL_RESOURCE,
    WORKLOAD_RESOURCE,
)
from scalelab.kube.settings import Config
from scalelab.kube.status import is_active

#: What the handlers watch or index; kube/resolve.py keeps kopf watching those that appear late.
WATCHED = (EXPERIMENT_RESOURCE, TRIAL_RESOURCE, MPIJOB_RESOURCE, WORKLOAD_RESOURCE)
OURS = {LABEL_MANAGED_BY: MANAGED_BY}

LOGIN = "login"
PLAN = "plan"
RESUME = "resume"
RECONCILE = "reconcile"
TRIAL_INDEX = "scalelab_trials"  # kopf passes each index as the kwarg of its id
JOB_INDEX = "scalelab_mpijobs"
QUEUE_INDEX = "scalelab_workloads"
FORGET = "forget"
#: The handlers that run reconciliation passes: the `handler` label values of the operator's
#: reconcile metrics (kube/metrics.py), all exported at 0 from the start.
RECONCILING = (PLAN, RESUME, RECONCILE)


def _active(status: kopf.Status, **_: Any) -> bool:
    return is_active(status)


def _indexes(kwargs: dict[str, Any]) -> operations.Indexes:
    return operations.Indexes(kwargs[TRIAL_INDEX], kwargs[JOB_INDEX], kwargs[QUEUE_INDEX])


def register(registry: kopf.OperatorRegistry, config: Config) -> None:
    """Register every handler in `registry` (intervals and timeouts come from `config`)."""
    timeout = config.handler_timeout_seconds

    @kopf.on.login(id=LOGIN, registry=registry)
    def login(settings: kopf.OperatorSettings, **_: Any) -> kopf.ConnectionInfo | None:
        try:
            config = rest.load_config()
        except rest.ConfigError as error:  # as kopf.login_via_client says it
            raise kopf.LoginError(f"no in-cluster nor kubeconfig credentials: {error}") from None
        return rest.login(config, settings.networking.trust_env)

    @kopf.index(*TRIAL_RESOURCE, id=TRIAL_INDEX, labels=OURS, registry=registry)
    def scalelab_trials(body: kopf.Body, **_: Any) -> dict[Key, TrialState]:
        return trial_entry(body)

    @kopf.index(*MPIJOB_RESOURCE, id=JOB_INDEX, labels=OURS, registry=registry)
    def scalelab_mpijobs(body: kopf.Body, **_: Any) -> dict[Key, JobState]:
        return job_entry(body)

    @kopf.index(*WORKLOAD_RESOURCE, id=QUEUE_INDEX, registry=registry)
    def scalelab_workloads(body: kopf.Body, **_: Any) -> dict[str, QueueState]:
        return workload_entry(body)

    @kopf.on.create(*EXPERIMENT_RESOURCE, id=PLAN, timeout=timeout, backoff=5, registry=registry)
    async def plan(body: kopf.Body, memo: kopf.Memo, **kwargs: Any) -> None:
        await operations.plan(memo, body, _indexes(kwargs), PLAN)

    @kopf.on.resume(*EXPERIMENT_RESOURCE, id=RESUME, timeout=timeout, backoff=5, registry=registry)
    async def resume(body: kopf.Body, memo: kopf.Memo, **kwargs: Any) -> None:
        await operations.plan(memo, body, _indexes(kwargs), RESUME)

    @kopf.timer(
        *EXPERIMENT_RESOURCE,
        id=RECONCILE,
        interval=config.reconcile_interval_seconds,
        when=_active,
        timeout=timeout,
        backoff=5,
        registry=registry,
    )
    async def reconcile(body: kopf.Body, memo: kopf.Memo, **kwargs: Any) -> None:
        await operations.reconcile(memo, body, _indexes(kwargs), RECONCILE)

    @kopf.on.event(*EXPERIMENT_RESOURCE, id=FORGET, registry=registry)
    def forget(type: str, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
        if type == "DELETED":
            operations.forget(memo, body)
        else:
            operations.unload(memo, body)
