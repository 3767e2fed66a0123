"""The operator's one settings object, read from environment variables (crate-operator style).

Every setting has a default that works in the shipped Deployment and is read from
SCALELAB_<FIELD_NAME_UPPER> by pydantic-settings, which converts and validates it (a bool reads
"false", "0" and "no" as False; a number that is not one is an error naming the variable).
`Config.from_env()` is called once in `scalelab operator` and the result is passed down, never
read from globals; `Config(...)` alone takes only its arguments and the defaults.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, ValidationInfo, field_validator
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from scalelab.api import Execution
from scalelab.rules import IMAGE, QUEUE_NAME

PREFIX = "SCALELAB_"


class Config(BaseSettings):
    """Operator settings; each field is read from SCALELAB_<FIELD_NAME_UPPER>."""

    model_config = SettingsConfigDict(
        env_prefix=PREFIX, env_ignore_empty=True, frozen=True, extra="forbid"
    )

    #: Trainer image of trials whose spec.resources.image is null (the API default).
    trainer_image: Annotated[str, IMAGE] = "ghcr.io/scalelab/trainer:0.1.0"
    #: ServiceAccount trainer pods run as; created per namespace with a RoleBinding to
    #: trainer_cluster_role, which may only patch scaletrials/status and create configmaps.
    trainer_service_account: str = "scalelab-trainer"
    #: ClusterRole bound in each experiment namespace for the trainer ServiceAccount.
    trainer_cluster_role: str = "scalelab-trainer"
    #: Kueue LocalQueue of the trials of experiments without spec.execution.queueName, in each
    #: experiment's own namespace: where every GPU is behind Kueue, sweeps go through it without
    #: each team writing queueName (and are rendered as queued, which Kueue's own defaulting to a
    #: LocalQueue named "default" would not tell the operator). Unset: they are made outside Kueue.
    default_queue_name: Annotated[str, QUEUE_NAME] | None = None
    #: Trial pods carry karpenter.sh/do-not-disrupt and the cluster autoscaler's safe-to-evict
    #: "false", so that node consolidation never ends a measurement; the price is that a node
    #: running a trial is not scaled down until the trial ends. False: pods carry neither, and
    #: a scale-down kills the trial's pods (docs/gpu-pools.md, section 4).
    do_not_disrupt_trials: bool = True
    #: Directory the MPI operator mounts the job's SSH key pair at (the trainer image's contract).
    ssh_auth_mount_path: str = "/home/mpiuser/.ssh"
    #: Port every trainer rank serves /metrics on (plus its local rank). 0 turns it off.
    trainer_metrics_port: int = Field(default=9400, ge=0, le=65535)
    #: Seconds between reconciliations of a running experiment (admission, phases, status).
    reconcile_interval_seconds: float = Field(default=2.0, gt=0)
    #: A Running trial without a progress report for this long is flagged stalled (Event,
    #: TrialsStalled condition, metric); longer than the slowest epoch. 0 turns it off. Unit: s.
    stall_seconds: float = Field(default=900.0, ge=0)
    #: Port of the operator's own /metrics. 0 turns it off.
    metrics_port: int = Field(default=8080, ge=0, le=65535)
    #: CPU request of the MPIJob launcher pod (it only runs mpirun). Unit: Kubernetes quantity.
    launcher_cpu: str = "100m"
    #: Memory request and limit of the launcher pod. Unit: Kubernetes quantity.
    launcher_memory: str = "256Mi"
    #: How long a served prerequisite (MPIJob API, Kueue API, trainer account) is trusted, and
    #: the longest wait before asking again for a missing one (5 s, doubling up to this). Unit: s.
    prerequisites_recheck_seconds: float = Field(default=60.0, gt=0)
    #: How long a handler call may take before kopf retries it. Unit: seconds.
    handler_timeout_seconds: float = Field(default=300.0, gt=0)
    #: Run only while holding a coordination.k8s.io Lease (kube/leader.py), so that replicas
    #: beyond the first stand by; on in the shipped Deployment, off for a hand-run operator.
    leader_elect: bool = False
    #: Name of the Lease the replicas contend for.
    lease_name: str = "scalelab-operator"
    #: The operator pod's namespace (downward API): where its Lease lives.
    pod_namespace: str = "scalelab-system"
    #: The operator pod's name (downward API): its Lease holder identity is this plus a random
    #: suffix. Empty: the host name (which in a pod is the pod's name).
    pod_name: str = ""
    #: How long a Lease not renewed stays held: the longest takeover after the holder dies.
    #: Unit: s.
    lease_duration_seconds: int = Field(default=10, ge=2)
    #: The holder that has not renewed for this long stops (exits), before the Lease expires for
    #: the others; less than lease_duration_seconds. Unit: s.
    lease_renew_deadline_seconds: float = Field(default=7.0, gt=0)
    #: Seconds between a holder's renewals, and between a standby's attempts to acquire.
    lease_retry_seconds: float = Field(default=2.0, gt=0)

    @field_validator("lease_renew_deadline_seconds")
    @classmethod
    def _renew_before_expiry(cls, value: float, info: ValidationInfo) -> float:
        """A holder must stop before its Lease expires for the standby: never two active."""
        duration = info.data.get("lease_duration_seconds")
        if duration is not None and value >= duration:
            raise ValueError(f"must be less than lease_duration_seconds ({duration})")
        return value

    def local_queue(self, execution: Execution) -> str | None:
        """The Kueue LocalQueue that trials of `execution` go through: its queueName, else the
        operator's default queue, else None (no Kueue).

        The one answer for everything that depends on it (the MPIJob's suspend, labels and
        launcher policy, the Kueue prerequisite, queue positions, the metrics' queue label), so
        no two of them can disagree; the spec stays as its author wrote it."""
        return self.default_queue_name if execution.queue_name is None else execution.queue_name

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Arguments only: the environment is read by `from_env`, explicitly, once."""
        return (init_settings,)

    @classmethod
    def from_env(cls) -> Config:
        """Settings from SCALELAB_* variables; unset or empty ones keep their defaults.

        Raises pydantic.ValidationError naming each variable that does not convert."""
        return cls(**EnvSettingsSource(cls)())
