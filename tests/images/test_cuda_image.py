"""The trainer image's CUDA build — the Dockerfile's default (`ACCELERATOR=cuda`), as a GPU user
builds it — built here by hack/build-images.sh without a registry or a CUDA base image: TensorFlow's
CUDA build with the CUDA wheels pinned in images/requirements/cuda.txt, and Horovod compiled with
NCCL by a CUDA compiler that the build removes again (images/cuda-toolchain.sh).

No GPU here, so these checks are what the build put into the image and that the image still
trains on the CPU (TensorFlow without a visible GPU) through the entrypoint and mpirun the pods
use. Each runs inside the exported archive, in a throwaway buildah container, as
tests/images/test_built_images.py does for the other images.

Cold, the build downloads a few GB and compiles Horovod's CUDA kernels (tens of minutes on two
cores); the archive is cached by its inputs, so a warm run returns at once.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import tarfile
from pathlib import Path
from typing import Any

import pytest

from tests.images.test_built_images import BUILD, Container, container, store  # noqa: F401

pytestmark = [pytest.mark.node, pytest.mark.images_only, pytest.mark.timeout(7200)]

REPO = Path(__file__).resolve().parents[2]
CUDA_PINS = REPO / "images" / "requirements" / "cuda.txt"
NAME = "localhost/scalelab/trainer-cuda:test"


def cuda_archive() -> Path:
    """The CUDA trainer image's archive from hack/build-images.sh (built once, then cached)."""
    out = subprocess.run(
        ["bash", str(BUILD)],
        env={**os.environ, "SCALELAB_IMAGES": "cuda"},
        check=True,
        stdout=subprocess.PIPE,
        text=True,
        timeout=6600,
    ).stdout
    found = dict(line.split("=", 1) for line in out.splitlines())
    assert list(found) == ["cuda"], out
    return Path(found["cuda"])


def pins() -> dict[str, str]:
    """cuda.txt: distribution name → pinned version."""
    out = {}
    for line in CUDA_PINS.read_text().splitlines():
        spec = line.split("#", 1)[0].strip()
        if spec:
            name, version = spec.split("==")
            out[name.lower()] = version
    return out


@pytest.fixture(scope="session")
def archive() -> Path:
    return cuda_archive()


@pytest.fixture(scope="session")
def cuda(archive: Path, store: list[str]) -> Container:  # noqa: F811 - the shared store
    return container(store, archive)


def test_the_archive_carries_the_name_the_node_runs_it_by(archive: Path) -> None:
    with tarfile.open(archive) as tar:
        manifest = tar.extractfile("manifest.json")
        assert manifest is not None
        assert json.load(manifest)[0]["RepoTags"] == [NAME]


def test_tensorflow_is_the_cuda_build_and_horovod_has_nccl_mpi_and_gloo(cuda: Container) -> None:
    r = cuda.run(
        "python -c 'import tensorflow as tf, horovod.tensorflow as hvd; "
        "print(tf.__version__, tf.test.is_built_with_cuda(), hvd.nccl_built(), "
        'hvd.mpi_built(), hvd.gloo_built(), len(tf.config.list_physical_devices("GPU")))\''
    )
    version, with_cuda, nccl, mpi, gloo, gpus = r.stdout.split()
    assert (version, with_cuda, mpi, gloo) == ("2.15.1", "True", "True", "True"), r.stdout
    # NCCL_VERSION_CODE of the header Horovod compiled against: the pinned wheel's.
    major, minor, patch = (int(p) for p in pins()["nvidia-nccl-cu12"].split("."))
    assert int(nccl) == major * 10000 + minor * 100 + patch, r.stdout
    assert gpus == "0", "no GPU here: TensorFlow must see none"


def test_the_cuda_wheels_are_the_pinned_ones(cuda: Container) -> None:
    freeze = cuda.run("pip freeze --all").stdout.splitlines()
    installed = dict(line.lower().split("==", 1) for line in freeze if "==" in line)
    assert {n: installed.get(n) for n in pins()} == pins()
    assert installed.get("tensorflow") == "2.15.1"
    assert "tensorflow-cpu" not in installed


def test_no_cuda_compiler_or_driver_is_left_in_the_image(cuda: Container) -> None:
    """nvcc and Debian's toolkit served the Horovod build only; the driver library must come
    from the host at run time (the NVIDIA container toolkit mounts it), never from the image."""
    r = cuda.run(
        "command -v nvcc gcc-11; dpkg-query -W -f '${Package}\\n' | grep -i -e nvidia -e cuda; "
        "ls /etc/apt/sources.list.d; find / -xdev -name 'libcuda.so*' 2>/dev/null; true"
    )
    assert r.stdout.split() == [], r.stdout


def test_horovods_library_finds_every_library_it_links(cuda: Container) -> None:
    """NCCL from the pinned wheel (through ld.so.conf), the CUDA runtime linked statically.
    TensorFlow's own two libraries are in the process before Horovod's (horovod.tensorflow
    imports tensorflow first), so ldd gets their folder as the loader effectively has it."""
    r = cuda.run(
        "LD_LIBRARY_PATH=/opt/venv/lib/python3.11/site-packages/tensorflow "
        "ldd $(python -c 'import horovod.tensorflow.mpi_lib as m; print(m.__file__)' "
        "2>/dev/null || ls /opt/venv/lib/python3.11/site-packages/horovod/tensorflow/mpi_lib*.so)"
    )
    assert "not found" not in r.stdout, r.stdout
    nccl = re.search(r"libnccl\.so\.2 => (\S+)", r.stdout)
    assert nccl, r.stdout
    assert nccl.group(1).startswith("/opt/venv/lib/python3.11/site-packages/nvidia/nccl/lib/")
    assert "libcudart" not in r.stdout, r.stdout


def result_events(stdout: str) -> list[dict[str, Any]]:
    """The trainer's `result` events among mpirun's output lines."""
    events = [json.loads(line[line.index("{") :]) for line in stdout.splitlines()
              if "{" in line and '"schema"' in line]  # fmt: skip
    return [e for e in events if e["event"] == "result"]


def test_a_two_process_trial_completes_on_the_cpu(cuda: Container) -> None:
    """Two ranks under mpirun through the image's entrypoint, as a launcher pod runs them; the
    CUDA build trains on the CPU when TensorFlow sees no GPU (a trial that asks for none)."""
    r = cuda.run(
        "/usr/local/bin/scalelab-trainer-entrypoint mpirun -np 2 --oversubscribe -x PATH "
        "python -m scalelab_trainer --trial cpu --dataset lab1-line --dataset-size 200 "
        "--batch-size 50 --learning-rate 0.01 --reference-batch-size 50 --max-epochs 3 "
        "--relative-tolerance 0",
        timeout=900,
    )
    results = result_events(r.stdout)
    assert results, r.stdout + r.stderr
    result = results[-1]
    assert result["phase"] == "Succeeded", result
    assert (result["processes"], result["epochs"]) == (2, 3), result
    assert result["finalLoss"] < result["initialLoss"], result
