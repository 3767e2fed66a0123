"""The images hack/build-images.sh builds from the Dockerfile and from the example teams'
(examples/spirals-plugin/, examples/image-files-plugin/) with buildah, no registry and no
daemon, do what the real node needs of them. Each check runs inside the exported archive — the
very file the node's containerd imports — in a throwaway buildah container (chroot isolation, its
own store under the test's temporary folder), so no container runtime or daemon is involved.

Cold, the build takes minutes (hack/build-images.sh caches archives keyed by their inputs; warm,
it returns at once); each image is then unpacked once per session.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

pytestmark = [pytest.mark.node, pytest.mark.images_only, pytest.mark.timeout(3600)]

REPO = Path(__file__).resolve().parents[2]
BUILD = REPO / "hack" / "build-images.sh"


@dataclass
class Container:
    """A buildah working container made from an image archive."""

    buildah: list[str]
    name: str

    def run(
        self, script: str, user: str | None = None, check: bool = True, timeout: float = 300
    ) -> subprocess.CompletedProcess[str]:
        """`sh -c script` in the container (as the image's USER unless `user` is given)."""
        cmd = [*self.buildah, "run", "--isolation", "chroot"]
        if user is not None:
            cmd += ["--user", user]
        r = subprocess.run(
            [*cmd, self.name, "--", "/bin/sh", "-c", script],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check:
            assert r.returncode == 0, f"{script!r} exited {r.returncode}:\n{r.stdout}\n{r.stderr}"
        return r

    def config(self) -> dict[str, object]:
        out = subprocess.run(
            [*self.buildah, "inspect", "--type", "container", self.name],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        cfg: dict[str, object] = json.loads(out)["OCIv1"]["config"]
        return cfg


@pytest.fixture(scope="session")
def archives() -> dict[str, Path]:
    """name → archive, from hack/build-images.sh (stdout: one NAME=PATH per line)."""
    out = subprocess.run(
        ["bash", str(BUILD)], check=True, stdout=subprocess.PIPE, text=True, timeout=3000
    ).stdout
    found = dict(line.split("=", 1) for line in out.splitlines())
    assert set(found) == {"base", "pause", "operator", "trainer", "spirals", "shapes"}, out
    return {k: Path(v) for k, v in found.items()}


@pytest.fixture(scope="session")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[str]]:
    """A buildah command line with its own store, removed afterwards. overlay where the kernel
    has it: the trainer unpacks in ~40 s, against ~100 s for vfs, which copies every layer."""
    root = tmp_path_factory.mktemp("buildah")
    cmd = ["buildah", "--root", str(root / "root"), "--runroot", str(root / "run")]
    overlay = "overlay" in Path("/proc/filesystems").read_text().split()
    cmd += ["--storage-driver", "overlay" if overlay else "vfs"]
    yield cmd
    subprocess.run([*cmd, "rm", "--all"], capture_output=True, check=False)
    subprocess.run([*cmd, "rmi", "--all", "--force"], capture_output=True, check=False)
    shutil.rmtree(root, ignore_errors=True)


def container(store: list[str], archive: Path) -> Container:
    name = subprocess.run(
        [*store, "from", "--pull-never", "--quiet", f"docker-archive:{archive}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    return Container(store, name)


@pytest.fixture(scope="session")
def operator(archives: dict[str, Path], store: list[str]) -> Container:
    return container(store, archives["operator"])


@pytest.fixture(scope="session")
def trainer(archives: dict[str, Path], store: list[str]) -> Container:
    return container(store, archives["trainer"])


#: The teams' derived images (examples/<folder>/Dockerfile): archive key → (package, module).
DERIVED = {
    "spirals": ("scalelab-example-spirals", "spirals"),
    "shapes": ("scalelab-example-shapes", "shapes"),
}


def test_each_archive_carries_the_name_the_node_runs_it_by(archives: dict[str, Path]) -> None:
    """`ctr -n k8s.io images import` takes the name from the archive's manifest."""
    names = {
        "base": "localhost/scalelab/base:bookworm",
        "pause": "localhost/scalelab/pause:3.10",
        "operator": "localhost/scalelab/operator:test",
        "trainer": "localhost/scalelab/trainer:test",
        "spirals": "localhost/scalelab/trainer-spirals:test",
        "shapes": "localhost/scalelab/trainer-shapes:test",
    }
    for key, archive in archives.items():
        with tarfile.open(archive) as tar:
            manifest = tar.extractfile("manifest.json")
            assert manifest is not None, archive
            assert json.load(manifest)[0]["RepoTags"] == [names[key]], archive


def test_the_operator_image_has_no_training_or_report_stack(operator: Container) -> None:
    r = operator.run(
        "python -c 'import importlib.util as u; "
        'print([m for m in ("tensorflow", "horovod", "matplotlib", "rich") if u.find_spec(m)])\''
    )
    assert r.stdout.strip() == "[]", r.stdout
    dists = json.loads(operator.run("pip list --format=json").stdout)
    names = {d["name"].lower() for d in dists}
    assert not {n for n in names if n.startswith("tensorflow")}, names
    assert not names & {"matplotlib", "rich", "horovod"}, names


def test_the_operator_image_runs_the_operator_as_non_root(operator: Container) -> None:
    cfg = operator.config()
    assert cfg["User"] == "10001"
    assert cfg["Entrypoint"] == ["scalelab", "operator"]
    r = operator.run("id -u && scalelab --help && python -c 'import scalelab.kube.main'")
    assert r.stdout.splitlines()[0] == "10001"


def test_the_trainer_image_has_horovod_with_tensorflow_gloo_and_mpi(trainer: Container) -> None:
    r = trainer.run(
        "python -c 'import tensorflow as tf, horovod.tensorflow as hvd; "
        "print(tf.__version__, hvd.mpi_built(), hvd.gloo_built())'"
    )
    assert r.stdout.split() == ["2.15.1", "True", "True"], r.stdout + r.stderr


def test_mpirun_runs_a_horovod_allreduce_in_the_trainer_image(trainer: Container) -> None:
    """Two ranks over MPI on one host, as mpiuser: the launcher's own tools, no ssh yet."""
    r = trainer.run(
        "command -v mpirun && mpirun -np 2 --oversubscribe -x PATH python -c "
        "'import tensorflow as tf, horovod.tensorflow as hvd; hvd.init(); "
        "s = hvd.allreduce(tf.constant(hvd.rank() + 1.0), op=hvd.Sum); "
        'hvd.rank() or print("size", hvd.size(), "mpi", hvd.mpi_enabled(), "sum", float(s))\'',
        timeout=300,
    )
    lines = r.stdout.splitlines()
    assert lines[0] == "/usr/bin/mpirun", r.stdout
    assert "size 2 mpi True sum 3.0" in lines, r.stdout + r.stderr


def test_the_trainer_cli_starts(trainer: Container) -> None:
    r = trainer.run("/usr/local/bin/scalelab-trainer-entrypoint python -m scalelab_trainer --help")
    assert "usage" in r.stdout.lower(), r.stdout + r.stderr


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def test_sshd_serves_mpiuser_with_the_mpi_operator_key_layout(trainer: Container) -> None:
    """What an MPIJob worker does: the job's key pair mounted (root-owned, world-readable, as a
    Secret volume is) at /home/mpiuser/.ssh; sshd as mpiuser with the image's config; the
    launcher's ssh client (the image's ssh_config) runs a command through it."""
    cfg = trainer.config()
    assert cfg["User"] == "1000"
    trainer.run(
        "mkdir -p /home/mpiuser/.ssh && cd /home/mpiuser/.ssh && rm -f id_rsa* authorized_keys"
        " && ssh-keygen -q -t ecdsa -b 521 -N '' -f id_rsa && cp id_rsa.pub authorized_keys"
        " && chmod 0644 id_rsa id_rsa.pub authorized_keys",
        user="0",
    )
    port = free_port()
    r = trainer.run(
        f"/usr/sbin/sshd -De -f /home/mpiuser/.sshd_config -p {port} & pid=$!; "
        f"for i in $(seq 50); do ssh -p {port} 127.0.0.1 true 2>/dev/null && break; "
        "sleep 0.2; done; "
        f"ssh -p {port} 127.0.0.1 'id -un; command -v mpirun orted python'; rc=$?; "
        "kill $pid; exit $rc",
        timeout=120,
    )
    lines = r.stdout.split()
    assert lines[0] == "mpiuser", r.stdout + r.stderr
    assert "/usr/bin/orted" in lines, r.stdout


def test_the_pause_image_is_one_static_binary(archives: dict[str, Path], store: list[str]) -> None:
    c = container(store, archives["pause"])
    assert c.config()["Entrypoint"] == ["/pause"]
    mount = subprocess.run(
        [*store, "mount", c.name], capture_output=True, text=True, check=True
    ).stdout.strip()
    try:
        files = [p.relative_to(mount) for p in Path(mount).rglob("*") if p.is_file()]
        assert files == [Path("pause")], files
        pause = subprocess.Popen([str(Path(mount) / "pause")])
        try:
            with pytest.raises(subprocess.TimeoutExpired):
                pause.wait(timeout=0.5)
        finally:
            pause.terminate()
        assert pause.wait(timeout=5) == 0
    finally:
        subprocess.run([*store, "umount", c.name], capture_output=True, check=False)


@pytest.mark.parametrize("key", sorted(DERIVED))
def test_the_derived_image_is_the_trainer_plus_the_teams_package_only(
    key: str, archives: dict[str, Path], store: list[str], trainer: Container
) -> None:
    """examples/<package>/Dockerfile as its README builds it: the trainer's packages kept
    (--no-deps), the example's added, the trainer's user and entrypoint unchanged. Unpacked
    after the trainer, whose layers it shares, so only its own layer unpacks."""
    package, module = DERIVED[key]
    derived = container(store, archives[key])
    ours = set(trainer.run("pip freeze --all").stdout.splitlines())
    theirs = set(derived.run("pip freeze --all").stdout.splitlines())
    assert ours - theirs == set(), ours - theirs
    added = theirs - ours
    assert [a.split(" ")[0] for a in added] == [package], added
    r = derived.run(
        f"python -c 'import {module}, scalelab_trainer.plugin; print({module}.__file__)'"
    )
    site = f"/opt/venv/lib/python3.11/site-packages/{module}/"
    assert r.stdout.strip().startswith(site), r.stdout
    for field in ("User", "Entrypoint", "Cmd", "Env"):
        assert derived.config()[field] == trainer.config()[field], field
