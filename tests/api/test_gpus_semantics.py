"""What "GPUs" means, everywhere alike: Horovod's one process per GPU. sweep.gpus counts GPUs and
processes, gpusPerProcess is 0 (CPU) or 1, and the planner, the CRD rule, the MPIJob's GPU limits,
its trainer flags and its /dev/shm agree; mixedPrecision and jitCompile reach the trainer."""

from __future__ import annotations

from typing import Any

import pytest

from scalelab import api
from scalelab.kube import mpijob
from scalelab.kube.settings import Config
from scalelab.planner import RUNNABLE_GRID, devices_needed, plan, trainer_flags
from scalelab.validation import InvalidExperimentError, parse_experiment
from scalelab_trainer.config import parse_config

pytestmark = pytest.mark.unit


def _experiment(**sections: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "sweep": {"batchSizes": [64], "gpus": [16]},
        "execution": {"maxGPUs": 64},
        **sections,
    }
    return {"apiVersion": api.API_VERSION, "kind": "ScaleExperiment",
            "metadata": {"name": "gpus"}, "spec": spec}  # fmt: skip


def test_two_gpus_per_process_is_refused_with_the_reason_by_validate_and_the_crd_rule() -> None:
    body = _experiment(resources={"gpusPerProcess": 2})
    with pytest.raises(InvalidExperimentError) as caught:
        parse_experiment(body)
    assert "a Horovod process drives one GPU" in str(caught.value)
    for per_process, broken in ((2, True), (1, False)):
        spec = api.ScaleExperimentSpec.model_validate(
            body["spec"] | {"resources": {"gpusPerProcess": per_process}}
        )
        wire = spec.model_dump(by_alias=True, mode="json", exclude_none=True)
        assert RUNNABLE_GRID.broken(wire) is broken


def test_a_trial_of_sixteen_gpus_runs_sixteen_processes_and_needs_sixteen_gpus() -> None:
    experiment = parse_experiment(_experiment(resources={"gpusPerProcess": 1}))
    [trial] = plan(experiment)
    assert trial.gpus == 16
    assert devices_needed(experiment, trial.gpus) == 16
    job = mpijob.render(trial, "ns", "uid", Config())
    worker = job["spec"]["mpiReplicaSpecs"]["Worker"]
    limit = int(
        worker["template"]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"]
    )
    assert limit * worker["replicas"] == 16  # every GPU requested is a rank's


def _pods(resources: dict[str, Any]) -> tuple[list[str], dict[str, Any]]:
    experiment = parse_experiment(
        _experiment(sweep={"batchSizes": [64], "gpus": [4]}, resources=resources)
    )
    [trial] = plan(experiment)
    specs = mpijob.render(trial, "ns", "uid", Config())["spec"]["mpiReplicaSpecs"]
    launcher = specs["Launcher"]["template"]["spec"]["containers"][0]["command"]
    return launcher, specs["Worker"]["template"]["spec"]


def test_gpu_workers_get_a_memory_backed_dev_shm_sized_per_rank_and_the_ranks_require_a_gpu() -> (
    None
):
    launcher, worker = _pods({"gpusPerProcess": 1, "processesPerWorker": 2})
    assert launcher[launcher.index("--gpus-per-process") + 1] == "1"
    [shm] = [v for v in worker["volumes"] if v["name"] == mpijob.SHM_VOLUME]
    assert shm["emptyDir"] == {"medium": "Memory", "sizeLimit": "1024Mi"}  # 2 ranks × 512 MiB
    mounts = worker["containers"][0]["volumeMounts"]
    assert {"name": mpijob.SHM_VOLUME, "mountPath": "/dev/shm"} in mounts
    # The device plugin's variables (SCALELAB_FAKE_GPUS on the test node) reach the ranks,
    # which start in ssh sessions without the container's environment.
    assert worker["containers"][0]["command"][:2] == ["sh", "-c"]
    assert "export -p" in worker["containers"][0]["command"][2]


def test_cpu_workers_keep_the_default_shm_and_the_ranks_require_nothing() -> None:
    launcher, worker = _pods({"gpusPerProcess": 0, "processesPerWorker": 2})
    assert "--gpus-per-process" not in launcher
    assert "volumes" not in worker
    assert worker["containers"][0]["command"] == mpijob.WORKER_COMMAND


def test_the_local_executors_flags_do_not_require_a_gpu() -> None:
    [trial] = plan(parse_experiment(_experiment(resources={"gpusPerProcess": 1})))
    assert parse_config(trainer_flags(trial.spec, trial.name)).gpus_per_process == 0


@pytest.mark.parametrize("mode", ["off", "float16", "bfloat16"])
@pytest.mark.parametrize("jit", [False, True])
def test_mixed_precision_and_jit_compile_reach_the_trainer(mode: str, jit: bool) -> None:
    body = _experiment(training={"mixedPrecision": mode, "jitCompile": jit})
    [trial] = plan(parse_experiment(body))
    cfg = parse_config(trainer_flags(trial.spec, trial.name))
    assert (cfg.mixed_precision, cfg.jit_compile) == (mode, jit)


def test_an_unknown_precision_is_refused() -> None:
    with pytest.raises(InvalidExperimentError) as caught:
        parse_experiment(_experiment(training={"mixedPrecision": "float8"}))
    assert "mixedPrecision" in str(caught.value)
