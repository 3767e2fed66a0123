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
            assert a.startswith("images/requirements/") or a == "/tmp/trainer.txt", (
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


@pytest.mark.parametrize("dockerfile", ["Dockerfile", "examples/spirals-plugin/Dockerfile"])
def test_hadolint_passes_on_the_dockerfile(dockerfile: str) -> None:
    hadolint = Path(sys.executable).parent / "hadolint"
    r = subprocess.run(
        [str(hadolint), str(REPO / dockerfile)], capture_output=True, text=True, check=False
    )
    assert r.returncode == 0, r.stdout + r.stderr


def stages(dockerfile: str) -> dict[str, str]:
    """Each `FROM … AS name` stage's text, by name."""
    parts = re.split(r"^FROM ", dockerfile, flags=re.M)[1:]
    return {p.split("\n", 1)[0].split(" AS ")[1].strip(): "FROM " + p for p in parts}


def test_the_operator_image_installs_only_the_operator_requirements() -> None:
    """No TensorFlow, no report stack: the operator stage reads operator.txt and nothing else."""
    operator = stages(DOCKERFILE)["operator"]
    files = {a for args in pip_installs(operator) for a in args if a.startswith("images/")}
    assert files == {"images/requirements/operator.txt"}, files
    assert re.findall(r"^COPY (\S+)", operator, re.M) == [
        "images/requirements/operator.txt",
        "operator/",
    ]


def test_both_targets_build_from_one_base_image_argument_defaulting_to_the_public_bases() -> None:
    froms = dict(
        (name, re.search(r"^FROM (\S+)", text).group(1))  # type: ignore[union-attr]
        for name, text in stages(DOCKERFILE).items()
    )
    assert froms == {
        "operator": "${BASE_IMAGE:-python:3.11-slim-bookworm}",
        # Every CUDA library comes from pip (tensorflow[and-cuda]): no CUDA base image.
        "trainer": "${BASE_IMAGE:-debian:bookworm-slim}",
    }
    assert re.search(r"^ARG BASE_IMAGE$", DOCKERFILE, re.M)


def test_the_trainer_defaults_to_the_gpu_build_and_its_cpu_build_is_ci_exactly() -> None:
    trainer = stages(DOCKERFILE)["trainer"]
    assert re.search(r"^ARG ACCELERATOR=cuda$", trainer, re.M)
    assert "cpu) cp images/requirements/trainer.txt /tmp/trainer.txt" in trainer
    # Only the CPU build may take a prebuilt Horovod wheel; the CUDA build compiles with NCCL.
    assert re.search(
        r'if \[ "\$ACCELERATOR" = cuda \]; then export HOROVOD_GPU_OPERATIONS=NCCL; \\\n'
        r"\s+else export PIP_FIND_LINKS=/tmp/wheels; fi",
        trainer,
    )


def test_build_images_passes_pip_settings_as_secrets_and_builds_the_cpu_trainer() -> None:
    script = (REPO / "hack" / "build-images.sh").read_text()
    assert "--build-arg ACCELERATOR=cpu" in script
    assert '"BASE_IMAGE=${NAME[base]}"' in script
    for secret in ("pip.conf", "pip-ca.crt"):
        assert f"id={secret}," in script
    # Every pip install of the Dockerfile sees both (optional) secrets.
    for run in run_instructions(DOCKERFILE):
        if re.search(r"\bpip install\b", run):
            assert "--mount=type=secret,id=pip.conf,target=/etc/pip.conf" in run, run
            assert "--mount=type=secret,id=pip-ca.crt,target=/run/secrets/pip-ca.crt" in run, run


def test_build_images_stages_exactly_the_files_each_target_reads() -> None:
    """hack/build-images.sh builds from a staged context keyed by its hash: a file the Dockerfile
    reads but the script does not stage would fail the build; one staged but unread would make
    needless rebuilds."""
    script = (REPO / "hack" / "build-images.sh").read_text()
    joined = re.sub(r"\\\n\s*", " ", script)
    for name, text in stages(DOCKERFILE).items():
        m = re.search(rf"^\s*{name}\) set -- {name} ([^;]+);;", joined, re.M)
        assert m, f"no staged file list for {name}"
        staged = set(m.group(1).split())
        read = set(re.findall(r"--mount=type=bind,source=(\S+),", text))
        for line in re.findall(r"^COPY (.+)$", text, re.M):
            read |= {w for w in line.split()[:-1] if not w.startswith("--")}
        read = {r.rstrip("/") for r in read} - {"images/wheels"}  # filled by the script
        assert staged == read, (name, staged ^ read)
