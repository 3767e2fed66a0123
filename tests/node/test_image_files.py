"""A team's model on its real dataset on real pods: examples/image-files.yaml (trimmed to seconds
per trial) applied with kubectl, its trials run by the real MPI operator in pods of the team's
derived trainer image (examples/image-files-plugin/Dockerfile; hack/build-images.sh builds it
offline as localhost/scalelab/trainer-shapes:test), streaming PNG files from a read-only
PersistentVolume, with a credential from a Secret (`spec.resources.envFrom`).

The files are written on the host by `python -m shapes.generate` and reach the pods through a
hostPath PersistentVolume bound to the claim the example names, mounted at the same path, so the
same file run by `scalelab run` here (the package on PYTHONPATH, the credential in the
environment) is the reference. The example's `requireEnvSha256` parameter fails a rank whose
environment lacks the Secret's value; the value itself must appear in no object, result or log.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import pytest
import yaml

from tests.cluster.processes import cluster_report
from tests.harness.controlplane import ControlPlane
from tests.harness.objects import get
from tests.node.conftest import REPO, finished
from tests.node.test_real_pods import trial_diagnostics
from tests.node.test_user_workload import local_run

pytestmark = [pytest.mark.node, pytest.mark.usefixtures("team_images")]

EXAMPLE = REPO / "examples" / "image-files.yaml"
PLUGIN_SRC = REPO / "examples" / "image-files-plugin" / "src"
DERIVED_IMAGE = "localhost/scalelab/trainer-shapes:test"
CLAIM = "shapes-data"  # the claim examples/image-files.yaml mounts
SECRET, TOKEN_VARIABLE = "shapes-credentials", "SHAPES_TOKEN"
TRAIN_FILES, TEST_FILES = 768, 192
# 24 steps of 32 per epoch, 3 epochs: 72 steps, under the ~100 after which the L2 penalty's
# run-to-run jitter on one process (~1e-7) grows; 1 and 2 processes then agree to ~2e-8.
BATCH_SIZE, EPOCHS = 32, 3
OPERATOR_ACCOUNT = "system:serviceaccount:scalelab-system:scalelab-operator"


def generate(folder: Path) -> Path:
    """The data set, as a team writes it: `python -m shapes.generate`, fewer files than the
    example's 3000 + 600; readable by the pods' user (1000), as pytest's folders are not."""
    env = {**os.environ, "PYTHONPATH": str(PLUGIN_SRC)}
    subprocess.run(
        [sys.executable, "-m", "shapes.generate", str(folder),
         "--train", str(TRAIN_FILES), "--test", str(TEST_FILES)],
        check=True, capture_output=True, env=env, timeout=300,
    )  # fmt: skip
    for p in [folder, *folder.rglob("*")]:
        p.chmod(0o755 if p.is_dir() else 0o644)
    return folder


def data_volume(namespace: str, folder: Path) -> list[dict[str, Any]]:
    """A hostPath PersistentVolume of `folder` (the node is this machine), pre-bound to the
    example's claim in `namespace`: no provisioner, no storage class."""
    pv_name = f"{namespace}-shapes"
    pv = {
        "apiVersion": "v1",
        "kind": "PersistentVolume",
        "metadata": {"name": pv_name},
        "spec": {
            "capacity": {"storage": "1Gi"},
            "accessModes": ["ReadOnlyMany"],
            "persistentVolumeReclaimPolicy": "Retain",
            "storageClassName": "",
            "hostPath": {"path": str(folder), "type": "Directory"},
            "claimRef": {"namespace": namespace, "name": CLAIM},
        },
    }
    pvc = {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": CLAIM, "namespace": namespace},
        "spec": {
            "accessModes": ["ReadOnlyMany"],
            "storageClassName": "",
            "volumeName": pv_name,
            "resources": {"requests": {"storage": "1Gi"}},
        },
    }
    return [pv, pvc]


def trimmed_example(path: Path, folder: Path, token_sha256: str) -> Path:
    """examples/image-files.yaml cut to one batch size and 72 steps, the team's image, the
    files mounted where dataDir says, the Secret as environment, and the check that it
    arrived; written to `path`."""
    doc = yaml.safe_load(EXAMPLE.read_text())
    doc["metadata"]["name"] = "shapes"
    spec = doc["spec"]
    spec["workload"]["parameters"].update(
        dataDir=str(folder), requireEnvSha256=[f"{TOKEN_VARIABLE}={token_sha256}"]
    )
    spec["workload"]["datasetSize"] = TRAIN_FILES
    spec["sweep"] = {"batchSizes": [BATCH_SIZE], "gpus": [1, 2]}
    spec["training"]["maxEpochs"] = EPOCHS
    resources = spec["resources"]
    resources.update(image=DERIVED_IMAGE, cpu="500m", memory="1Gi")
    resources["envFrom"] = [{"secretRef": {"name": SECRET}}]
    (mount,) = resources["volumeMounts"]
    mount["mountPath"] = str(folder)  # the same path as here: one file for both runs
    spec["execution"].update(backoffLimit=0)
    path.write_text(yaml.safe_dump(doc))
    return path


def _pod_trainers() -> list[psutil.Process]:
    """Trainer processes in containers, seen from the host (the node runs on this machine):
    `python -m scalelab_trainer` in a mount namespace other than ours (not the local run's)."""
    ours = os.readlink("/proc/self/ns/mnt")
    found = []
    for p in psutil.process_iter(["cmdline"]):
        argv = p.info["cmdline"] or []
        if "scalelab_trainer" in argv and "python" in Path(argv[0]).name:
            with contextlib.suppress(OSError):
                if os.readlink(f"/proc/{p.pid}/ns/mnt") != ours:
                    found.append(p)
    return found


@dataclass
class Seen:
    """What a watcher saw of the trial pods while they ran (workers are deleted at the end)."""

    pods: dict[str, dict[str, Any]] = field(default_factory=dict)
    logs: dict[str, str] = field(default_factory=dict)
    # per trainer process (pid): its trial, whether its environment held the token, and the
    # mount options of the data folder inside its container
    ranks: dict[int, tuple[str, bool, str]] = field(default_factory=dict)


class Watcher(threading.Thread):
    """Records the namespace's pods, their logs and the trainer processes, once a second."""

    def __init__(self, cp: ControlPlane, namespace: str, folder: Path, token: str) -> None:
        super().__init__(daemon=True)
        self.cp, self.namespace, self.folder, self.token = cp, namespace, folder, token
        self.seen, self.stopped = Seen(), threading.Event()

    def run(self) -> None:
        while not self.stopped.is_set():
            self.look()
            self.stopped.wait(1.0)
        self.look()

    def look(self) -> None:
        r = self.cp.kubectl("get", "pods", "-n", self.namespace, "-o", "json", check=False)
        pods = json.loads(r.stdout)["items"] if r.returncode == 0 else []
        for pod in pods:
            name = pod["metadata"]["name"]
            self.seen.pods[name] = pod
            log = self.cp.kubectl("logs", "-n", self.namespace, name, check=False)
            if log.returncode == 0 and len(log.stdout) >= len(self.seen.logs.get(name, "")):
                self.seen.logs[name] = log.stdout
        for p in _pod_trainers():
            try:
                argv = p.cmdline()
                environ = p.environ()
                mountinfo = Path(f"/proc/{p.pid}/mountinfo").read_text()
            except (psutil.Error, OSError):
                continue
            trial = argv[argv.index("--trial") + 1] if "--trial" in argv else "?"
            options = next(
                (line.split()[5] for line in mountinfo.splitlines()
                 if line.split()[4] == str(self.folder)),
                "not mounted",
            )  # fmt: skip
            self.seen.ranks[p.pid] = (trial, environ.get(TOKEN_VARIABLE) == self.token, options)


def assert_same_training(remote: dict[str, Any], local: dict[str, Any]) -> None:
    """Both trials trained the team's model on the files: the per-epoch losses of 1 and 2
    processes agree with each other and with the local run of the same file."""
    there = {t["name"]: t for t in remote["trials"]}
    here = {t["name"]: t for t in local["trials"]}
    assert sorted(there) == sorted(here) == ["shapes-b32-g1", "shapes-b32-g2"]
    reference = here["shapes-b32-g1"]["curves"]["epochLoss"]
    assert len(reference) == EPOCHS
    spread = max(
        abs(a - b) / abs(b)
        for t in [*there.values(), *here.values()]
        for a, b in zip(t["curves"]["epochLoss"], reference, strict=False)
    )
    print(f"image files: epoch losses of pods and local run within {spread:.1e} relative")
    for trial in [*there.values(), *here.values()]:
        assert trial["phase"] == "Succeeded", trial
        assert trial["steps"] == EPOCHS * TRAIN_FILES // BATCH_SIZE
        assert trial["curves"]["epochLoss"] == pytest.approx(reference, rel=1e-6), trial["name"]
        assert trial["finalLoss"] < trial["initialLoss"]
        # Read from the files through tf.data, so the input's share of the time is measured.
        assert trial["inputWaitFraction"] is not None, trial


def assert_pods(seen: Seen, folder: Path) -> None:
    """Every pod ran the team's image; every worker mounted the claim read-only, and inside
    the containers the kernel has it read-only; every rank had the credential (the plugin's
    check passed too, or the trials would have failed)."""
    assert any("-launcher" in p for p in seen.pods), sorted(seen.pods)
    images = {c["image"] for p in seen.pods.values() for c in p["spec"]["containers"]}
    assert images == {DERIVED_IMAGE}, images
    workers = [p for name, p in seen.pods.items() if "-worker-" in name]
    assert len(workers) == 3, sorted(seen.pods)  # one for 1 process, two for 2
    for w in workers:
        mounts = w["spec"]["containers"][0]["volumeMounts"]
        (mount,) = (m for m in mounts if m["name"] == "shapes")
        assert mount["mountPath"] == str(folder), mount
        assert mount["readOnly"] is True, mount
    ranks = seen.ranks.values()
    assert sorted(t for t, _, _ in ranks) == ["shapes-b32-g1"] + ["shapes-b32-g2"] * 2, ranks
    for trial, has_token, options in ranks:
        assert has_token, trial
        assert "ro" in options.split(","), (trial, options)


def test_a_teams_model_trains_on_its_files_from_a_volume_with_a_secret_on_real_pods(
    installed: ControlPlane, namespace: str, tmp_path: Path
) -> None:
    cp = installed
    folder = generate(tmp_path / "shapes")
    token = secrets.token_hex(16)
    token_sha256 = hashlib.sha256(token.encode()).hexdigest()
    cp.kubectl("create", "secret", "generic", SECRET, "-n", namespace,
               f"--from-literal={TOKEN_VARIABLE}={token}")  # fmt: skip
    objects = data_volume(namespace, folder)
    cp.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(objects))
    watcher = Watcher(cp, namespace, folder, token)
    try:
        spec_file = trimmed_example(tmp_path / "shapes.yaml", folder, token_sha256)
        cp.kubectl("apply", "-n", namespace, "-f", str(spec_file))
        watcher.start()
        # The credential in the environment: a local run reads no Secret.
        local = local_run(spec_file, tmp_path / "local", PLUGIN_SRC, {TOKEN_VARIABLE: token})
        phase = finished(cp, "shapes", namespace)
        watcher.stopped.set()
        watcher.join()
        assert phase == "Succeeded", trial_diagnostics(cp, namespace)
        assert get(cp, "pvc", CLAIM, namespace)["status"]["phase"] == "Bound"

        out = tmp_path / "cluster"
        report = cluster_report(cp, "shapes", namespace, out)
        assert report.returncode == 0, report.stderr
        results_text = (out / "results.json").read_text()
        assert_same_training(json.loads(results_text), local)
        assert_pods(watcher.seen, folder)

        # The Secret's value is nowhere: not in the objects, the results or any pod's log.
        places = {
            "ScaleExperiment": cp.kubectl("get", "sx", "-n", namespace, "-o", "json").stdout,
            "ScaleTrials": cp.kubectl("get", "st", "-n", namespace, "-o", "json").stdout,
            "MPIJobs": cp.kubectl("get", "mpijobs", "-n", namespace, "-o", "json").stdout,
            "results.json": results_text,
            **{f"log of {name}": log for name, log in watcher.seen.logs.items()},
        }
        assert set(watcher.seen.pods) - set(watcher.seen.logs) == set(), "pods without a log"
        assert [where for where, text in places.items() if token in text] == []
        assert token_sha256 in places["ScaleExperiment"]  # the check's digest, not the value
    finally:
        watcher.stopped.set()
        cp.kubectl("delete", "pv", objects[0]["metadata"]["name"], "--wait=false", check=False)

    # The operator still cannot read Secrets: only the pods it creates can.
    for verb in ("get", "list", "watch"):
        for scope in (["-n", namespace], ["-A"]):
            r = cp.kubectl("auth", "can-i", verb, "secrets", *scope, f"--as={OPERATOR_ACCOUNT}",
                           check=False)  # fmt: skip
            assert r.stdout.strip() == "no", (verb, scope, r.stdout, r.stderr)
