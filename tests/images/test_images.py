"""The container images are built from exactly what CI installs and tests: same requirement
files, same pins, same Horovod build flags, same Debian packages; and the Dockerfile lints clean.

No container runtime runs here, so these checks are what keeps the images honest.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = (REPO / "Dockerfile").read_text()
INSTALL_PY = (REPO / "hack" / "install-python.sh").read_text()
INSTALL_SYS = (REPO / "hack" / "install.sh").read_text()
REQUIREMENTS = REPO / "images" / "requirements"


def run_instructions(dockerfile: str) -> list[str]:
    """RUN instructions with continuation lines joined and comments dropped."""
    joined = re.sub(r"\\\n", " ", dockerfile)
    return [line[4:] for line in joined.splitlines() if line.startswith("RUN ")]


def pip_installs(dockerfile: str) -> list[list[str]]:
    out = []
    for run in run_instructions(dockerfile):
        for part in re.split(r"&&|;", run):
            words = shlex.split(part)
            if "pip" in words and "install" in words:
                out.append(words[words.index("install") + 1 :])
    return out


def test_every_requirement_is_pinned_exactly() -> None:
    for f in REQUIREMENTS.glob("*.txt"):
        for line in f.read_text().splitlines():
            spec = line.split("#", 1)[0].strip()
            if spec:
                assert re.fullmatch(r"[A-Za-z0-9_.\-\[\]]+==[A-Za-z0-9_.+\-]+", spec), (
                    f.name,
                    spec,
                )


def test_the_dockerfile_installs_python_packages_only_from_the_shared_requirement_files() -> None:
    installs = pip_installs(DOCKERFILE)
    assert installs, "no pip install found in the Dockerfile"
    for args in installs:
        for a in args:
            if a.startswith("-") or a in {"./operator", "./trainer"}:
                continue
            assert a.startswith("images/requirements/") or a == "/tmp/trainer-gpu.txt", (
                f"Dockerfile installs {a!r} outside images/requirements/"
            )


def test_ci_installs_the_same_requirement_files_the_images_use() -> None:
    for name in ("trainer.txt", "operator.txt", "horovod.txt"):
        assert name in DOCKERFILE, name
    for name in ("trainer.txt", "operator.txt", "dev.txt", "horovod.txt"):
        assert f'"$REQ/{name}"' in INSTALL_PY, name


def test_the_gpu_image_gets_the_same_tensorflow_version_as_ci() -> None:
    m = re.search(r"sed '(s/[^']+)' images/requirements/trainer.txt", DOCKERFILE)
    assert m, "the trainer stage must derive its TensorFlow pin from trainer.txt"
    pattern, replacement = m.group(1).split("/")[1:3]
    ci_pin = next(
        line for line in (REQUIREMENTS / "trainer.txt").read_text().splitlines()
        if line.startswith("tensorflow-cpu==")
    )  # fmt: skip
    gpu_pin = re.sub(pattern, replacement, ci_pin)
    assert (
        gpu_pin.split("#")[0].strip() == "tensorflow[and-cuda]==" + ci_pin.split("==")[1].split()[0]
    )


def test_horovod_is_built_with_the_same_frameworks_and_controllers_in_ci_and_the_image() -> None:
    flags = {"HOROVOD_WITH_TENSORFLOW=1", "HOROVOD_WITHOUT_PYTORCH=1", "HOROVOD_WITHOUT_MXNET=1",
             "HOROVOD_WITH_GLOO=1", "HOROVOD_WITH_MPI=1"}  # fmt: skip
    for f in flags:
        assert f in INSTALL_PY, f
        assert f in DOCKERFILE, f
    assert "HOROVOD_GPU_OPERATIONS=NCCL" in DOCKERFILE
    assert "--no-build-isolation" in INSTALL_PY
    assert "--no-build-isolation" in DOCKERFILE


def test_the_image_and_ci_install_the_same_mpi_packages() -> None:
    for pkg in ("openmpi-bin", "libopenmpi-dev"):
        assert pkg in INSTALL_SYS, pkg
        assert pkg in DOCKERFILE, pkg


def test_the_images_run_as_non_root() -> None:
    users = re.findall(r"^USER (\S+)", DOCKERFILE, re.M)
    assert len(users) == 2
    assert all(u.isdigit() and int(u) != 0 for u in users)


def test_hadolint_passes_on_the_dockerfile() -> None:
    hadolint = Path(sys.executable).parent / "hadolint"
    r = subprocess.run(
        [str(hadolint), str(REPO / "Dockerfile")], capture_output=True, text=True, check=False
    )
    assert r.returncode == 0, r.stdout + r.stderr
