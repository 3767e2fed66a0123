"""MPIJob rendering: one GPU count drives -np, replicas, slots and GPU limits; the launcher runs
the planner's trainer command; names, labels, owner, Kueue and scheduling fields."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest

from scalelab.api import ScaleExperiment
from scalelab.kube import mpijob
from scalelab.kube.settings import Config
from scalelab.planner import PlannedTrial, plan, trainer_command, trainer_flags

pytestmark = pytest.mark.unit


def _trial(gpus: int = 4, batch: int = 64, **resources: Any) -> PlannedTrial:
    spec: dict[str, Any] = {
        "sweep": {"batchSizes": [batch], "gpus": [gpus]},
        "resources": {"processesPerWorker": 2, **resources},
        "execution": {"maxGPUs": 64, "backoffLimit": 2, "activeDeadlineSeconds": 900},
    }
    experiment = ScaleExperiment.model_validate({"metadata": {"name": "exp"}, "spec": spec})
    [trial] = plan(experiment)
    return trial


def _render(trial: PlannedTrial, config: Config | None = None) -> dict[str, Any]:
    return mpijob.render(trial, "ns", "uid-1", config or Config())


def test_one_gpu_count_derives_np_replicas_slots_and_gpu_limits() -> None:
    job = _render(_trial(gpus=6, gpusPerProcess=1, processesPerWorker=4))
    spec = job["spec"]
    worker = spec["mpiReplicaSpecs"]["Worker"]
    command = spec["mpiReplicaSpecs"]["Launcher"]["template"]["spec"]["containers"][0]["command"]
    assert command[:3] == ["mpirun", "-np", "6"]
    assert spec["slotsPerWorker"] == 3  # the largest divisor of 6 that is at most 4
    assert worker["replicas"] == 2
    limits = worker["template"]["spec"]["containers"][0]["resources"]["limits"]
    assert limits["nvidia.com/gpu"] == "3"  # 3 slots, one GPU each


@pytest.mark.parametrize("ppw", range(1, 17))
def test_workers_request_exactly_the_gpus_the_ranks_use(ppw: int) -> None:
    for processes in range(1, 65):
        replicas, slots = mpijob.workers(processes, ppw)
        assert replicas * slots == processes  # no GPU requested that no rank uses
        assert slots <= ppw
        # and no layout with fewer, fuller workers exists
        assert not [d for d in range(slots + 1, ppw + 1) if processes % d == 0]


def test_a_prime_count_above_processes_per_worker_runs_one_process_per_worker() -> None:
    spec = _render(_trial(gpus=5))["spec"]  # processesPerWorker 2
    assert (spec["slotsPerWorker"], spec["mpiReplicaSpecs"]["Worker"]["replicas"]) == (1, 5)


def test_training_pods_are_not_disrupted_by_node_consolidation() -> None:
    for role in ("Launcher", "Worker"):
        template = _render(_trial())["spec"]["mpiReplicaSpecs"][role]["template"]
        assert template["metadata"]["annotations"] == {
            "karpenter.sh/do-not-disrupt": "true",
            "cluster-autoscaler.kubernetes.io/safe-to-evict": "false",
        }


def test_with_disruption_allowed_the_pods_carry_neither_annotation_nor_other_change() -> None:
    config = Config(do_not_disrupt_trials=False)
    for role in ("Launcher", "Worker"):
        template = _render(_trial(), config)["spec"]["mpiReplicaSpecs"][role]["template"]
        assert template["metadata"]["annotations"] == {}
    protected, allowed = _render(_trial()), _render(_trial(), config)
    for role in ("Launcher", "Worker"):
        protected["spec"]["mpiReplicaSpecs"][role]["template"]["metadata"]["annotations"] = {}
    assert allowed == protected
    # Kueue's placement annotations stay.
    topology = {"mode": "Required", "level": "topology.kubernetes.io/zone"}
    job = _render(_queued({"queueName": "gpus", "topology": topology}), config)
    for found in _templates_annotations(job):
        assert found == {
            "kueue.x-k8s.io/podset-required-topology": "topology.kubernetes.io/zone",
            "kueue.x-k8s.io/podset-group-name": "launcher-and-workers",
        }


def test_a_single_process_gets_one_slot_and_a_cpu_trial_no_gpu_limit() -> None:
    job = _render(_trial(gpus=1, gpusPerProcess=0))
    assert job["spec"]["slotsPerWorker"] == 1
    worker = job["spec"]["mpiReplicaSpecs"]["Worker"]
    assert worker["replicas"] == 1
    resources = worker["template"]["spec"]["containers"][0]["resources"]
    assert "nvidia.com/gpu" not in resources["limits"]
    assert resources["requests"] == {"cpu": "2", "memory": "4Gi"}


def test_the_launcher_runs_the_planners_trainer_command_with_status_and_stored_results() -> None:
    trial = _trial(gpusPerProcess=0)
    command = _render(trial)["spec"]["mpiReplicaSpecs"]["Launcher"]["template"]["spec"]
    argv = command["containers"][0]["command"]
    flags = trainer_flags(
        trial.spec,
        trial.name,
        namespace="ns",
        report_status=True,
        store_results=True,
        metrics_port=9400,
    )
    # lab1-line's dataset goes with the results (the report's loss surface), as in a local run.
    expected = trainer_command([*flags, "--export-data", "/tmp/scalelab-data-uid-1.npz"])
    assert argv[-len(expected) :] == expected
    assert argv[: -len(expected)] == ["mpirun", "-np", "4", *mpijob.MPIRUN_FLAGS]
    assert command["automountServiceAccountToken"] is False


def test_workers_run_unprivileged_sshd_as_the_trainer_account() -> None:
    pod = _render(_trial(gpusPerProcess=0))["spec"]["mpiReplicaSpecs"]["Worker"]["template"]["spec"]
    assert pod["serviceAccountName"] == "scalelab-trainer"
    assert pod["containers"][0]["command"] == mpijob.WORKER_COMMAND
    assert pod["securityContext"]["runAsUser"] == 1000
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["containers"][0]["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    ports = {p["name"]: p["containerPort"] for p in pod["containers"][0]["ports"]}
    assert ports == {"ssh": 2222, "metrics-0": 9400, "metrics-1": 9401}


def test_labels_owner_name_and_run_policy() -> None:
    trial = _trial()
    job = _render(trial)
    meta = job["metadata"]
    assert meta["name"] == trial.name == "exp-b64-g4"
    assert meta["labels"][mpijob.LABEL_EXPERIMENT] == "exp"
    assert meta["labels"][mpijob.LABEL_BATCH_SIZE] == "64"
    assert meta["labels"][mpijob.LABEL_GPUS] == "4"
    assert meta["ownerReferences"] == [
        {
            "apiVersion": "scalelab.dev/v1alpha1",
            "kind": "ScaleTrial",
            "name": trial.name,
            "uid": "uid-1",
            "controller": True,
            "blockOwnerDeletion": True,
        }
    ]
    assert job["spec"]["runPolicy"] == {
        "cleanPodPolicy": "Running",
        "backoffLimit": 2,
        "activeDeadlineSeconds": 900,
    }
    assert job["spec"]["sshAuthMountPath"] == "/home/mpiuser/.ssh"
    assert job["spec"]["launcherCreationPolicy"] == "WaitForWorkersReady"


def test_a_queue_name_creates_a_suspended_job_with_the_kueue_label() -> None:
    experiment = ScaleExperiment.model_validate(
        {"metadata": {"name": "q"},
         "spec": {"execution": {"queueName": "gpus", "activeDeadlineSeconds": 900}}}
    )  # fmt: skip
    job = _render(plan(experiment)[0])
    assert job["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "gpus"
    # Kueue's maximum execution time (admitted time, across requeues) is the trial's deadline.
    assert job["metadata"]["labels"]["kueue.x-k8s.io/max-exec-time-seconds"] == "900"
    unqueued = _render(plan(ScaleExperiment.model_validate({"metadata": {"name": "u"}}))[0])
    assert not any(k.startswith("kueue.x-k8s.io/") for k in unqueued["metadata"]["labels"])
    assert job["spec"]["runPolicy"]["suspend"] is True
    assert job["spec"]["launcherCreationPolicy"] == "AtStartup"


def test_a_queued_launcher_waits_for_every_workers_sshd_before_mpirun() -> None:
    """AtStartup starts the launcher beside its workers: mpirun must not race their sshd."""
    queued = ScaleExperiment.model_validate(
        {"metadata": {"name": "q"}, "spec": {"sweep": {"batchSizes": [32], "gpus": [4]},
                                             "execution": {"queueName": "gpus"}}}
    )  # fmt: skip
    unqueued = ScaleExperiment.model_validate(
        {"metadata": {"name": "q"}, "spec": {"sweep": {"batchSizes": [32], "gpus": [4]}}}
    )
    launcher = _render(plan(queued)[0])["spec"]["mpiReplicaSpecs"]["Launcher"]
    argv = launcher["template"]["spec"]["containers"][0]["command"]
    plain = _render(plan(unqueued)[0])["spec"]["mpiReplicaSpecs"]["Launcher"]
    plain_argv = plain["template"]["spec"]["containers"][0]["command"]
    assert argv == ["sh", "-c", mpijob.WAIT_FOR_WORKERS, "sh", *plain_argv]
    assert plain_argv[:3] == ["mpirun", "-np", "4"]
    assert "/etc/mpi/hostfile" in mpijob.WAIT_FOR_WORKERS
    assert mpijob.WAIT_FOR_WORKERS.endswith('exec "$@"')


def test_the_wait_for_workers_script_tries_each_host_of_a_hostfile_then_runs_the_command(
    tmp_path: Path,
) -> None:
    """The script as sh runs it, against a hostfile of the MPI operator's format and an `ssh`
    that answers on its second try per host."""
    hostfile = tmp_path / "hostfile"
    hostfile.write_text("j-worker-0.j.ns.svc slots=2\nj-worker-1.j.ns.svc slots=2\n")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    tries = tmp_path / "tries"
    ssh = bin_dir / "ssh"
    ssh.write_text(
        "#!/bin/sh\n"  # ssh -o ConnectTimeout=5 -o BatchMode=yes HOST true
        f'echo "$5" >> {tries}\n'
        f'[ "$(grep -c "^$5$" {tries})" -ge 2 ]\n'
    )
    ssh.chmod(0o755)
    sleep = bin_dir / "sleep"
    sleep.write_text("#!/bin/sh\n")
    sleep.chmod(0o755)
    script = mpijob.WAIT_FOR_WORKERS.replace("/etc/mpi/hostfile", str(hostfile))
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin"}
    out = subprocess.run(
        ["sh", "-c", script, "sh", "echo", "ran"], env=env, capture_output=True, text=True,
        check=True, timeout=30,
    )  # fmt: skip
    assert out.stdout == "ran\n"
    assert tries.read_text().split() == [
        "j-worker-0.j.ns.svc", "j-worker-0.j.ns.svc", "j-worker-1.j.ns.svc", "j-worker-1.j.ns.svc"
    ]  # fmt: skip


def test_scheduling_fields_are_copied_to_every_pod() -> None:
    trial = _trial(
        nodeSelector={"gpu": "a100"},
        tolerations=[{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
        priorityClassName="research",
    )
    for role in ("Launcher", "Worker"):
        pod = _render(trial)["spec"]["mpiReplicaSpecs"][role]["template"]["spec"]
        assert pod["nodeSelector"] == {"gpu": "a100"}
        assert pod["tolerations"] == [
            {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
        ]
        assert pod["priorityClassName"] == "research"


def test_no_image_in_the_spec_means_the_operators_trainer_image() -> None:
    assert _trial().spec.resources.image is None
    assert mpijob.image(_trial(), Config(trainer_image="reg/t:1")) == "reg/t:1"
    assert mpijob.image(_trial(image=None), Config(trainer_image="reg/t:1")) == "reg/t:1"
    assert mpijob.image(_trial(image="mine:2"), Config(trainer_image="reg/t:1")) == "mine:2"
    # The former API default is an image name like any other now, not a magic "unset".
    latest = _trial(image="scalelab-trainer:latest")
    assert mpijob.image(latest, Config(trainer_image="reg/t:1")) == "scalelab-trainer:latest"
    for role in ("Launcher", "Worker"):
        pod = _render(_trial(), Config(trainer_image="reg/t:1"))["spec"]["mpiReplicaSpecs"][role]
        assert pod["template"]["spec"]["containers"][0]["image"] == "reg/t:1"


def test_worker_pod_names_stay_dns_labels_for_long_experiment_names() -> None:
    experiment = ScaleExperiment.model_validate(
        {
            "metadata": {"name": "a" * 63},
            "spec": {
                "sweep": {"batchSizes": [65536], "gpus": [64]},
                "workload": {"datasetSize": 65536},
                "execution": {"maxGPUs": 64},
            },
        }
    )
    job = _render(plan(experiment)[0])
    replicas = job["spec"]["mpiReplicaSpecs"]["Worker"]["replicas"]
    assert len(f"{job['metadata']['name']}-worker-{replicas - 1}") <= 63
    assert len(f"{job['metadata']['name']}-launcher-abcde") <= 63


_DATA: dict[str, Any] = {
    "volumes": [
        {"name": "data", "persistentVolumeClaim": {"claimName": "imagenet", "readOnly": True}},
        {"name": "cache", "emptyDir": {}},
    ],
    "volumeMounts": [
        {"name": "data", "mountPath": "/data", "readOnly": True},
        {"name": "cache", "mountPath": "/cache"},
    ],
    "env": [
        {"name": "DATA_DIR", "value": "/data"},
        {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "s3", "key": "token"}}},
    ],
    "envFrom": [{"secretRef": {"name": "s3-credentials"}, "prefix": "S3_"}],
    "imagePullSecrets": [{"name": "regcred"}],
    "serviceAccountName": "reads-the-bucket",
}


def _pods(trial: PlannedTrial) -> tuple[dict[str, Any], dict[str, Any]]:
    specs = _render(trial)["spec"]["mpiReplicaSpecs"]
    launcher = specs["Launcher"]["template"]["spec"]
    worker = specs["Worker"]["template"]["spec"]
    return launcher, worker


def test_workers_get_the_specs_volumes_mounts_and_environment_as_kubernetes_takes_them() -> None:
    _, worker = _pods(_trial(gpusPerProcess=0, **_DATA))
    container = worker["containers"][0]
    assert worker["volumes"] == [
        {"name": "data", "persistentVolumeClaim": {"claimName": "imagenet", "readOnly": True}},
        {"name": "cache", "emptyDir": {}},
    ]
    assert container["volumeMounts"] == [
        {"name": "data", "mountPath": "/data", "readOnly": True},
        {"name": "cache", "mountPath": "/cache", "readOnly": False},
    ]
    assert container["env"] == _DATA["env"]
    assert container["envFrom"] == _DATA["envFrom"]


def test_the_launcher_runs_mpirun_only_so_it_gets_pull_secrets_but_no_data_and_no_token() -> None:
    launcher, worker = _pods(_trial(**_DATA))
    assert launcher["imagePullSecrets"] == worker["imagePullSecrets"] == [{"name": "regcred"}]
    assert "volumes" not in launcher  # an unmounted claim would only attach it to a second node
    assert not {"volumeMounts", "env", "envFrom"} & launcher["containers"][0].keys()
    assert launcher["automountServiceAccountToken"] is False
    assert "serviceAccountName" not in launcher


def test_a_service_account_in_the_spec_runs_the_workers_instead_of_the_trainer_account() -> None:
    _, worker = _pods(_trial(**_DATA))
    assert worker["serviceAccountName"] == "reads-the-bucket"
    _, plain = _pods(_trial())
    assert plain["serviceAccountName"] == "scalelab-trainer"


def test_ranks_source_the_workers_environment_because_ssh_sessions_start_without_it() -> None:
    trial = _trial(env=[{"name": "DATA_DIR", "value": "/data"}])
    launcher, worker = _pods(trial)
    env_file = "/tmp/scalelab-env-uid-1.sh"
    assert worker["containers"][0]["command"] == [
        "sh", "-c", f'umask 077 && export -p > {env_file} && exec "$@"', "sh",
        *mpijob.WORKER_COMMAND,
    ]  # fmt: skip
    argv = launcher["containers"][0]["command"]
    program = argv[len(["mpirun", "-np", "4", *mpijob.MPIRUN_FLAGS]) :]
    assert program[:4] == ["sh", "-c", f'. {env_file} && exec "$@"', "sh"]
    flags = trainer_flags(
        trial.spec, trial.name, namespace="ns", report_status=True, store_results=True,
        metrics_port=9400, gpus_per_process=1,
    )  # fmt: skip
    expected = trainer_command([*flags, "--export-data", "/tmp/scalelab-data-uid-1.npz"])
    assert program[4:] == expected


def test_without_data_fields_the_pods_are_as_before() -> None:
    launcher, worker = _pods(_trial(gpusPerProcess=0))
    for pod in (launcher, worker):
        assert not {"volumes", "imagePullSecrets"} & pod.keys()
        assert not {"volumeMounts", "env", "envFrom"} & pod["containers"][0].keys()
    assert worker["containers"][0]["command"] == mpijob.WORKER_COMMAND
    assert "sh" not in launcher["containers"][0]["command"]


def _queued(execution: dict[str, Any]) -> PlannedTrial:
    spec = {"sweep": {"gpus": [4]}, "resources": {"processesPerWorker": 2}, "execution": execution}
    [trial] = plan(ScaleExperiment.model_validate({"metadata": {"name": "t"}, "spec": spec}))
    return trial


def _templates_annotations(job: dict[str, Any]) -> list[dict[str, str]]:
    replicas = job["spec"]["mpiReplicaSpecs"]
    return [replicas[role]["template"]["metadata"]["annotations"] for role in replicas]


@pytest.mark.parametrize(
    ("mode", "annotation"),
    [
        ("Required", "kueue.x-k8s.io/podset-required-topology"),
        ("Preferred", "kueue.x-k8s.io/podset-preferred-topology"),
    ],
)
def test_a_topology_asks_kueue_to_place_launcher_and_workers_in_one_domain(
    mode: str, annotation: str
) -> None:
    level = "cloud.google.com/gce-topology-block"
    job = _render(_queued({"queueName": "gpus", "topology": {"mode": mode, "level": level}}))
    launcher, worker = _templates_annotations(job)
    # The same request and group on both podsets: Kueue fits a group of exactly two podsets,
    # one of a single pod, with equal topology requests, into one domain together.
    assert launcher == worker
    assert launcher == {
        **mpijob.POD_ANNOTATIONS,
        annotation: level,
        "kueue.x-k8s.io/podset-group-name": "launcher-and-workers",
    }
    assert job["spec"]["mpiReplicaSpecs"]["Launcher"]["replicas"] == 1
    assert not mpijob.PODSET_GROUP.isdigit()  # Kueue refuses a numeric group name


def test_without_a_topology_the_pods_carry_no_kueue_annotation() -> None:
    for execution in ({"queueName": "gpus"}, {}):
        for found in _templates_annotations(_render(_queued(execution))):
            assert found == mpijob.POD_ANNOTATIONS


def test_the_operators_default_queue_makes_a_trial_without_queue_name_a_queued_one() -> None:
    trial = _queued({"activeDeadlineSeconds": 900})
    assert trial.spec.execution.queue_name is None
    job = _render(trial, Config(default_queue_name="team"))
    queued = _render(_queued({"queueName": "team", "activeDeadlineSeconds": 900}))
    # Exactly as if the spec had named the queue: suspended, Kueue's labels, AtStartup.
    assert job == queued
    assert job["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "team"
    assert job["spec"]["runPolicy"]["suspend"] is True
    assert job["spec"]["launcherCreationPolicy"] == "AtStartup"
    assert trial.spec.execution.queue_name is None  # the spec is left as written


def test_a_queue_name_in_the_spec_wins_over_the_operators_default_queue() -> None:
    job = _render(_queued({"queueName": "mine"}), Config(default_queue_name="team"))
    assert job["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "mine"
    plain = _render(_queued({}))
    assert "suspend" not in plain["spec"]["runPolicy"]
    assert plain["spec"]["launcherCreationPolicy"] == "WaitForWorkersReady"
