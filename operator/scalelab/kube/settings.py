"""The operator's one settings object, read from environment variables (crate-operator style).

Every setting has a default that works in the shipped Deployment; `Config.from_env()` is called
once in `scalelab operator` and the result is passed down, never read from globals.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, fields

PREFIX = "SCALELAB_"


@dataclass(frozen=True)
class Config:
    """Operator settings; each field is read from SCALELAB_<FIELD_NAME_UPPER>."""

    #: Trainer image of trials whose spec.resources.image is null (the API default).
    trainer_image: str = "ghcr.io/scalelab/trainer:0.1.0"
    #: Image of the operator itself (documentation and the Deployment; not used at runtime).
    operator_image: str = "ghcr.io/scalelab/operator:0.1.0"
    #: ServiceAccount trainer pods run as; created per namespace with a RoleBinding to
    #: trainer_cluster_role, which may only patch scaletrials/status.
    trainer_service_account: str = "scalelab-trainer"
    #: ClusterRole bound in each experiment namespace for the trainer ServiceAccount.
    trainer_cluster_role: str = "scalelab-trainer"
    #: Directory the MPI operator mounts the job's SSH key pair at (the trainer image's contract).
    ssh_auth_mount_path: str = "/home/mpiuser/.ssh"
    #: Port every trainer rank serves /metrics on (plus its local rank). 0 turns it off.
    trainer_metrics_port: int = 9400
    #: Seconds between reconciliations of a running experiment (admission, phases, status).
    reconcile_interval_seconds: float = 2.0
    #: A Running trial without a progress report for this long is flagged stalled (Event,
    #: TrialsStalled condition, metric); longer than the slowest epoch. 0 turns it off. Unit: s.
    stall_seconds: float = 900.0
    #: Port of the operator's own /metrics. 0 turns it off.
    metrics_port: int = 8080
    #: CPU request of the MPIJob launcher pod (it only runs mpirun). Unit: Kubernetes quantity.
    launcher_cpu: str = "100m"
    #: Memory request and limit of the launcher pod. Unit: Kubernetes quantity.
    launcher_memory: str = "256Mi"
    #: How long a handler call may take before kopf retries it. Unit: seconds.
    handler_timeout_seconds: float = 300.0

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Config:
        """Settings from SCALELAB_* variables; unset ones keep their defaults."""
        env = os.environ if env is None else env
        values: dict[str, object] = {}
        for f in fields(cls):
            raw = env.get(PREFIX + f.name.upper())
            if raw is None or raw == "":
                continue
            kind = type(getattr(cls, f.name))
            try:
                values[f.name] = kind(raw)
            except ValueError:
                raise ValueError(
                    f"{PREFIX}{f.name.upper()}={raw!r} is not a valid {kind.__name__}"
                ) from None
        return cls(**values)  # type: ignore[arg-type]
