"""Which device a process computes on: one GPU per process by local rank, declared CPU-backed test
GPUs accepted, and a clear refusal where GPUs were requested and TensorFlow sees fewer."""

from __future__ import annotations

import pytest

from scalelab_trainer.devices import FAKE_GPUS_VARIABLE, DeviceError, choose

pytestmark = pytest.mark.unit

GPUS = ["/physical_device:GPU:0", "/physical_device:GPU:1"]


def test_each_process_of_a_pod_takes_the_gpu_of_its_local_rank() -> None:
    given = [choose(1, r, 2, GPUS, environ={}, cuda_built=True) for r in range(2)]
    assert [p.device for p in given] == GPUS
    assert all(p.on_gpu and not p.warnings for p in given)


def test_fewer_gpus_than_processes_in_a_pod_is_refused_when_gpus_were_requested() -> None:
    with pytest.raises(DeviceError, match="TensorFlow sees 2"):
        choose(1, 0, 3, GPUS, environ={}, cuda_built=True)


def test_gpus_left_idle_in_a_pod_are_named_in_a_warning() -> None:
    [note] = choose(1, 0, 1, GPUS, environ={}, cuda_built=True).warnings
    assert "1 GPU(s) of this node idle" in note


def test_a_trial_asking_for_a_gpu_where_tensorflow_sees_none_fails_with_the_reason() -> None:
    env = {"NVIDIA_VISIBLE_DEVICES": "GPU-1234"}
    with pytest.raises(DeviceError) as caught:
        choose(1, 0, 1, [], environ=env, cuda_built=False)
    message = str(caught.value)
    assert "sees no GPU" in message
    assert "built with CUDA: False" in message
    assert "NVIDIA_VISIBLE_DEVICES=GPU-1234" in message
    assert "rather than measuring the CPU" in message


def test_declared_cpu_backed_test_gpus_are_accepted_one_per_local_rank() -> None:
    env = {FAKE_GPUS_VARIABLE: "fake-gpu-2,fake-gpu-3"}
    given = [choose(1, r, 2, [], environ=env, cuda_built=False) for r in range(2)]
    assert [(p.kind, p.device) for p in given] == [
        ("fake-gpu", "fake-gpu-2"),
        ("fake-gpu", "fake-gpu-3"),
    ]
    assert not any(p.on_gpu for p in given)


def test_too_few_declared_test_gpus_for_the_pods_processes_is_refused() -> None:
    with pytest.raises(DeviceError, match="declares 1 CPU-backed"):
        choose(1, 0, 2, [], environ={FAKE_GPUS_VARIABLE: "fake-gpu-0"}, cuda_built=False)


def test_a_cpu_trial_computes_on_the_cpu_and_requires_nothing() -> None:
    placement = choose(0, 0, 1, [], environ={}, cuda_built=False)
    assert (placement.kind, placement.device, placement.on_gpu) == ("cpu", None, False)
