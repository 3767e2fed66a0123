"""One trial → one Kubeflow MPIJob (kubeflow.org/v2beta1), and the labels of everything made for
a trial. Pure: no API calls. kube/apply.py creates what `render` returns.

Everything that depends on the trial's GPU count comes from one number N (= spec.gpus, the
Horovod process count, one GPU each: gpusPerProcess is 0 or 1, the planner refuses more):
`mpirun -np N`, `slotsPerWorker` (the largest divisor of N that is at most processesPerWorker),
worker replicas N / slots, and each worker's `nvidia.com/gpu` limit (slots × gpusPerProcess) — so
the workers together request exactly the N GPUs their ranks use. With GPUs the trainer gets
--gpus-per-process 1 and fails at start, with the reason, where it finds no GPU to compute on;
the workers get a memory-backed /dev/shm for NCCL (`SHM_PER_RANK_MIB`).
The launcher runs the planner's trainer command unchanged (`planner.trainer_flags`, the one
renderer of the trainer argv), so a trial runs the same way under `horovodrun` locally and
`mpirun` here.
Rank 0 runs in worker 0, reports ScaleTrial status and stores the trial's events (and lab1-line's
dataset) in a ConfigMap as the trainer ServiceAccount (or spec.resources.serviceAccountName).

Every rank runs in a worker (runLauncherAsWorker false), so the spec's data fields go there: the
workers get volumes, volumeMounts, env and envFrom; the launcher, which only runs mpirun, gets
none of them (a volume it never mounts would only attach, and a ReadWriteOnce claim would then
hold a worker back) and keeps no API token. Both pull the same image, so both get
imagePullSecrets. Ranks start in ssh sessions, which sshd gives a fresh environment, not the
worker container's: with env or envFrom set, the worker writes its environment (as the kubelet
resolved it, Secrets included) to a file only the trainer user can read before sshd starts, and
each rank sources it before the trainer (`ENV_FILE`). A worker with GPUs does the same, so
that what the device plugin set (the test node's SCALELAB_FAKE_GPUS, NVIDIA_VISIBLE_DEVICES)
reaches the ranks too.

Under Kueue (a LocalQueue from `Config.local_queue`: the spec's queueName, else the operator's
default queue) the MPIJob is created suspended with Kueue's labels, and with
spec.execution.topology its launcher and worker templates ask Kueue's Topology Aware Scheduling
to place both in one topology domain.
"""

from __future__ import annotations

from typing import Any

from scalelab.api import API_VERSION, GROUP, TRIAL_KIND, TopologyMode
from scalelab.kube.resources import KUEUE_GROUP, MPIJOB_API_VERSION
from scalelab.kube.settings import Config
from scalelab.planner import PlannedTrial, exports_data, trainer_command, trainer_flags

#: The labels of a trial and of everything made for it (kube/observed.py indexes by the first
#: two; the trainer labels its results ConfigMap with them too).
LABEL_EXPERIMENT = f"{GROUP}/experiment"
LABEL_TRIAL = f"{GROUP}/trial"
LABEL_BATCH_SIZE = f"{GROUP}/batch-size"
LABEL_GPUS = f"{GROUP}/gpus"
LABEL_REPEAT = f"{GROUP}/repeat"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
MANAGED_BY = "scalelab-operator"
#: Set ("true") on the ScaleTrials and MPIJobs of an experiment once it has finished and its
#: results archive exists (kube/apply.py `retire`): the operator's watches leave them out, so
#: its memory and its start-up do not grow with the finished experiments a cluster keeps.
LABEL_ARCHIVED = f"{GROUP}/archived"
KUEUE_QUEUE_LABEL = f"{KUEUE_GROUP}/queue-name"
#: Kueue counts a job's admitted time across evictions and requeues, deactivates the job once it
#: reaches this, and frees its quota (Kueue's "Setup maximum execution time" task): the trial's
#: activeDeadlineSeconds, which the launcher Job (Kubernetes resets a resumed Job's start time)
#: counts afresh at each admission.
KUEUE_MAX_EXEC_LABEL = f"{KUEUE_GROUP}/max-exec-time-seconds"
#: Kueue's Topology Aware Scheduling reads a podset's topology request from its pod template's
#: annotations (Kueue v0.19 apis/kueue/v1beta2/topology_types.go): all pods in one domain of the
#: level named by the value (required), or preferably so (preferred).
KUEUE_TOPOLOGY_ANNOTATIONS = {
    TopologyMode.REQUIRED: f"{KUEUE_GROUP}/podset-required-topology",
    TopologyMode.PREFERRED: f"{KUEUE_GROUP}/podset-preferred-topology",
}
#: Two podsets with the same group name are fitted into one topology domain together; Kueue
#: takes groups of exactly two, one of them a single pod, with the same topology request: the
#: launcher and the workers, so that mpirun's ssh to the workers stays inside the domain too.
KUEUE_PODSET_GROUP_ANNOTATION = f"{KUEUE_GROUP}/podset-group-name"
#: The group's name: any text but a number (Kueue refuses one), scoped to the one MPIJob.
PODSET_GROUP = "launcher-and-workers"
GPU_RESOURCE = "nvidia.com/gpu"
#: A measurement cut short by node consolidation is lost: Karpenter does not voluntarily disrupt a
#: node running a pod with do-not-disrupt (karpenter.sh docs, "Disruption"), and the cluster
#: autoscaler does not scale down a node with a pod that is not safe to evict (its FAQ). Only
#: with Config.do_not_disrupt_trials (the default): an admin may trade them for a pool that
#: scales down sooner (`pod_annotations`).
POD_ANNOTATIONS = {
    "karpenter.sh/do-not-disrupt": "true",
    "cluster-autoscaler.kubernetes.io/safe-to-evict": "false",
}

#: The image contract (images/sshd_config): workers serve sshd unprivileged on port 2222.
WORKER_COMMAND = ["/usr/sbin/sshd", "-De", "-f", "/home/mpiuser/.sshd_config"]
#: Where a worker keeps its container environment for the ranks (with env or envFrom only); the
#: trial's uid keeps it apart from any other trial's (as the exported dataset's path does).
ENV_FILE = "/tmp/scalelab-env-{uid}.sh"
TRAINER_UID = 1000
#: NCCL's ranks in one pod exchange data through /dev/shm when they cannot reach each other's
#: GPU memory directly, and a container's default /dev/shm is 64 MiB, which NCCL exhausts with a
#: few ranks ("unhandled system error" at the first allreduce). Each connection holds about
#: 9 MiB of buffers per channel (NCCL_BUFFSIZE 4 MiB for the Simple protocol, about 4.6 MiB for
#: LL128, 0.25 MiB for LL); a ring rank has two peers, and with 16 channels that is ~290 MiB. So
#: 512 MiB per rank, memory-backed (a tmpfs counts against the pod's memory limit only as used).
SHM_PER_RANK_MIB = 512
SHM_VOLUME = "scalelab-shm"
#: Under Kueue the launcher starts with its workers (launcherCreationPolicy AtStartup: see render),
#: and mpirun fails at once if a worker's sshd does not answer yet; the MPI operator retries only
#: through the launcher Job's backoffLimit, which a sweep may set to 0. So the launcher first
#: waits until sshd answers on every host of the hostfile the MPI operator mounts
#: (/etc/mpi/hostfile, "<host> slots=N" lines), as WaitForWorkersReady would have waited. Bounded
#: by the Job's activeDeadlineSeconds and by Kueue's WaitForPodsReady where that is on.
WAIT_FOR_WORKERS = (
    'for h in $(cut -d" " -f1 /etc/mpi/hostfile); do '
    'until ssh -o ConnectTimeout=5 -o BatchMode=yes "$h" true 2>/dev/null; do sleep 2; done; '
    'done; exec "$@"'
)

#: mpirun flags from the MPI operator's Horovod example: no core binding (Horovod threads), one
#: rank per slot in hostfile order, and the environment every rank needs. Ranks start in ssh
#: sessions, which do not inherit the worker container's environment: rank 0 finds the API server
#: (in-cluster config) only through the launcher's KUBERNETES_SERVICE_* (the same Service).
MPIRUN_FLAGS = [
    "-bind-to", "none", "-map-by", "slot",
    "-x", "PATH", "-x", "LD_LIBRARY_PATH", "-x", "NCCL_DEBUG=WARN",
    "-x", "KUBERNETES_SERVICE_HOST", "-x", "KUBERNETES_SERVICE_PORT",
    "-mca", "pml", "ob1", "-mca", "btl", "^openib",
]  # fmt: skip


def trial_labels(trial: PlannedTrial) -> dict[str, str]:
    """Labels of a trial and of everything made for it (bounded values: names and numbers)."""
    return {
        LABEL_EXPERIMENT: trial.spec.experiment,
        LABEL_TRIAL: trial.name,
        LABEL_BATCH_SIZE: str(trial.batch_size),
        LABEL_GPUS: str(trial.gpus),
        LABEL_REPEAT: str(trial.repeat),
        LABEL_MANAGED_BY: MANAGED_BY,
    }


def workers(processes: int, processes_per_worker: int) -> tuple[int, int]:
    """(worker replicas, slots per worker) for N processes, replicas × slots = N exactly.

    An MPIJob has one worker template, so every worker gets the same slots and GPUs. With
    ceil(N / ppw) workers of ppw slots, N = 6 and ppw = 4 would request 8 GPUs and use 6; the
    slots are instead the largest divisor of N that is at most ppw (6 → 2 workers of 3), so no
    GPU is requested that no rank uses. processesPerWorker is therefore an upper bound; a prime
    N above it runs one process per worker (docs/design-changes.md).
    """
    slots = max(d for d in range(1, min(processes_per_worker, processes) + 1) if processes % d == 0)
    return processes // slots, slots


def gpus_per_worker(trial: PlannedTrial) -> int:
    """nvidia.com/gpu limit of one worker pod: its slots × gpusPerProcess."""
    _, slots = workers(trial.gpus, trial.spec.resources.processes_per_worker)
    return slots * trial.spec.resources.gpus_per_process


def image(trial: PlannedTrial, config: Config) -> str:
    """The trainer image: the spec's, or the operator's configured one when the spec has none."""
    chosen = trial.spec.resources.image
    return config.trainer_image if chosen is None else chosen


def launcher_command(
    trial: PlannedTrial, namespace: str, trial_uid: str, config: Config
) -> list[str]:
    """`mpirun -np N <flags> python -m scalelab_trainer <trainer flags>` of the launcher."""
    flags = trainer_flags(
        trial.spec,
        trial.name,
        namespace=namespace,
        report_status=True,
        store_results=True,
        metrics_port=config.trainer_metrics_port,
        gpus_per_process=trial.spec.resources.gpus_per_process,
    )
    if exports_data(trial.spec):
        # Rank 0 writes it in worker 0 and stores it with the results; the trial's uid keeps
        # the path apart from any other trainer sharing that /tmp.
        flags += ["--export-data", f"/tmp/scalelab-data-{trial_uid}.npz"]
    program = trainer_command(flags)
    if _has_env(trial):
        # Sourced after mpirun's -x, so the worker's values (the user's) win.
        source = f'. {ENV_FILE.format(uid=trial_uid)} && exec "$@"'
        program = ["sh", "-c", source, "sh", *program]
    return ["mpirun", "-np", str(trial.gpus), *MPIRUN_FLAGS, *program]


def _has_env(trial: PlannedTrial) -> bool:
    """Whether the ranks need the worker container's environment: the spec gives the trainer
    variables (env or envFrom), or the workers hold GPUs (the device plugin's variables)."""
    res = trial.spec.resources
    return bool(res.env or res.env_from) or gpus_per_worker(trial) > 0


def worker_command(trial: PlannedTrial, trial_uid: str) -> list[str]:
    """sshd; with env or envFrom, first the container's environment into `ENV_FILE` (umask 077:
    it may hold Secrets' values) for the ranks to source."""
    if not _has_env(trial):
        return list(WORKER_COMMAND)
    save = f'umask 077 && export -p > {ENV_FILE.format(uid=trial_uid)} && exec "$@"'
    return ["sh", "-c", save, "sh", *WORKER_COMMAND]


def _pod_spec(trial: PlannedTrial, container: dict[str, Any]) -> dict[str, Any]:
    res = trial.spec.resources
    spec: dict[str, Any] = {
        "securityContext": {
            "runAsUser": TRAINER_UID,
            "runAsGroup": TRAINER_UID,
            "runAsNonRoot": True,
            "fsGroup": TRAINER_UID,
            # With the containers' settings: Pod Security "restricted" compliant.
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [container],
    }
    if res.node_selector:
        spec["nodeSelector"] = dict(res.node_selector)
    if res.tolerations:
        spec["tolerations"] = [
            t.model_dump(by_alias=True, mode="json", exclude_none=True) for t in res.tolerations
        ]
    if res.priority_class_name:
        spec["priorityClassName"] = res.priority_class_name
    if res.image_pull_secrets:
        spec["imagePullSecrets"] = res.pod_fields()["imagePullSecrets"]
    return spec


def _container_security() -> dict[str, Any]:
    return {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}


def _worker_pod(trial: PlannedTrial, trial_uid: str, config: Config, slots: int) -> dict[str, Any]:
    """A worker: sshd for mpirun, `slots` ranks, their GPUs, metrics ports and data (volumes,
    mounts, environment); rank 0 reports."""
    res = trial.spec.resources
    worker_resources: dict[str, dict[str, str]] = {
        "requests": {"cpu": res.cpu, "memory": res.memory},
        "limits": {"cpu": res.cpu, "memory": res.memory},
    }
    if gpus_per_worker(trial):
        for part in worker_resources.values():
            part[GPU_RESOURCE] = str(gpus_per_worker(trial))
    metrics_port = config.trainer_metrics_port
    container: dict[str, Any] = {
        "name": "worker",
        "image": image(trial, config),
        "command": worker_command(trial, trial_uid),
        "resources": worker_resources,
        "securityContext": _container_security(),
        "ports": [{"name": "ssh", "containerPort": 2222}],
        **res.container_fields(),
    }
    if metrics_port:
        container["ports"] += [
            {"name": f"metrics-{i}", "containerPort": metrics_port + i} for i in range(slots)
        ]
    pod = _pod_spec(trial, container)
    if res.volumes:
        pod["volumes"] = res.pod_fields()["volumes"]
    if gpus_per_worker(trial):
        _add_shm(pod, container, slots)
    # Rank 0 runs in worker 0 and patches ScaleTrial status with this account's token.
    pod["serviceAccountName"] = res.service_account_name or config.trainer_service_account
    return pod


def _add_shm(pod: dict[str, Any], container: dict[str, Any], slots: int) -> None:
    """A memory-backed /dev/shm of SHM_PER_RANK_MIB per rank, for NCCL."""
    size = {"medium": "Memory", "sizeLimit": f"{SHM_PER_RANK_MIB * slots}Mi"}
    pod.setdefault("volumes", []).append({"name": SHM_VOLUME, "emptyDir": size})
    mount = {"name": SHM_VOLUME, "mountPath": "/dev/shm"}
    container["volumeMounts"] = [*container.get("volumeMounts", []), mount]


def _launcher_pod(
    trial: PlannedTrial, namespace: str, trial_uid: str, config: Config, queued: bool
) -> dict[str, Any]:
    """The launcher: mpirun only, small, without an API token; under Kueue it first waits for
    its workers (WAIT_FOR_WORKERS)."""
    command = launcher_command(trial, namespace, trial_uid, config)
    container = {
        "name": "launcher",
        "image": image(trial, config),
        "command": ["sh", "-c", WAIT_FOR_WORKERS, "sh", *command] if queued else command,
        "resources": {
            "requests": {"cpu": config.launcher_cpu, "memory": config.launcher_memory},
            "limits": {"memory": config.launcher_memory},
        },
        "securityContext": _container_security(),
    }
    pod = _pod_spec(trial, container)
    pod["automountServiceAccountToken"] = False  # mpirun needs no API access
    return pod


def pod_annotations(config: Config) -> dict[str, str]:
    """The annotations every trial pod carries: POD_ANNOTATIONS, or none where the operator's
    do_not_disrupt_trials is off."""
    return dict(POD_ANNOTATIONS) if config.do_not_disrupt_trials else {}


def _pod_metadata(labels: dict[str, str], annotations: dict[str, str]) -> dict[str, Any]:
    return {"labels": dict(labels), "annotations": dict(annotations)}


def _kueue_labels(trial: PlannedTrial, queue: str | None) -> dict[str, str]:
    """The MPIJob's Kueue labels: its LocalQueue (`Config.local_queue`) and maximum execution
    time; none without a queue."""
    if queue is None:
        return {}
    return {
        KUEUE_QUEUE_LABEL: queue,
        KUEUE_MAX_EXEC_LABEL: str(trial.spec.execution.active_deadline_seconds),
    }


def _topology_annotations(trial: PlannedTrial, queue: str | None) -> dict[str, str]:
    """The launcher's and the workers' podset annotations asking Kueue to place them together in
    one domain of spec.execution.topology's level; none without a topology or a queue (Kueue
    reads them only from the jobs it admits)."""
    topology = trial.spec.execution.topology
    if topology is None or queue is None:
        return {}
    return {
        KUEUE_TOPOLOGY_ANNOTATIONS[topology.mode]: topology.level,
        KUEUE_PODSET_GROUP_ANNOTATION: PODSET_GROUP,
    }


def _run_policy(trial: PlannedTrial, queued: bool) -> dict[str, Any]:
    """Retries, deadline and pod cleanup; suspended under Kueue, which admits the job by
    unsuspending it."""
    execution = trial.spec.execution
    policy: dict[str, Any] = {
        # Stop the sshd workers as soon as the launcher finishes; keep failed pods' logs.
        "cleanPodPolicy": "Running",
        "backoffLimit": execution.backoff_limit,
        "activeDeadlineSeconds": execution.active_deadline_seconds,
    }
    if queued:
        policy["suspend"] = True
    return policy


def render(trial: PlannedTrial, namespace: str, trial_uid: str, config: Config) -> dict[str, Any]:
    """The MPIJob of one trial, owned by the ScaleTrial (garbage-collected with it)."""
    replicas, slots = workers(trial.gpus, trial.spec.resources.processes_per_worker)
    labels = trial_labels(trial)
    queue = config.local_queue(trial.spec.execution)  # the spec's queueName, else the default
    queued = queue is not None
    annotations = {**pod_annotations(config), **_topology_annotations(trial, queue)}
    worker_pod = _worker_pod(trial, trial_uid, config, slots)
    launcher_pod = _launcher_pod(trial, namespace, trial_uid, config, queued)
    return {
        "apiVersion": MPIJOB_API_VERSION,
        "kind": "MPIJob",
        "metadata": {
            "name": trial.name,
            "namespace": namespace,
            "labels": {**labels, **_kueue_labels(trial, queue)},
            "ownerReferences": [
                {
                    "apiVersion": API_VERSION,
                    "kind": TRIAL_KIND,
                    "name": trial.name,
                    "uid": trial_uid,
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        },
        "spec": {
            "slotsPerWorker": slots,
            "runLauncherAsWorker": False,
            "mpiImplementation": "OpenMPI",
            "sshAuthMountPath": config.ssh_auth_mount_path,
            # WaitForWorkersReady avoids the launcher's ssh racing worker DNS (mpi-operator
            # #386/#443); under Kueue it is AtStartup because suspend + WaitForWorkersReady
            # leaves the job stuck (#615).
            "launcherCreationPolicy": "AtStartup" if queued else "WaitForWorkersReady",
            "runPolicy": _run_policy(trial, queued),
            "mpiReplicaSpecs": {
                "Launcher": {
                    "replicas": 1,
                    "restartPolicy": "Never",  # retries are the launcher Job's backoffLimit
                    "template": {
                        "metadata": _pod_metadata(labels, annotations),
                        "spec": launcher_pod,
                    },
                },
                "Worker": {
                    "replicas": replicas,
                    "restartPolicy": "Never",
                    "template": {
                        "metadata": _pod_metadata(labels, annotations),
                        "spec": worker_pod,
                    },
                },
            },
        },
    }
