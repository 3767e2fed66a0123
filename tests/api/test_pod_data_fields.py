"""Pods that can reach data: spec.resources.volumes, volumeMounts, env, envFrom, imagePullSecrets
and serviceAccountName take the Kubernetes types and refuse what the API server would refuse (with
a message naming the field); their wire form is what a pod takes; a local run passes plain env
values and warns once about the rest."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from scalelab import api, rules
from scalelab.kube import crd
from scalelab.local.executor import LocalRun, cluster_only_warning, trainer_env
from scalelab.validation import InvalidExperimentError, parse_experiment

pytestmark = pytest.mark.unit

DATA = {"name": "data", "persistentVolumeClaim": {"claimName": "imagenet"}}
TYPICAL = {
    "volumes": [DATA],
    "volumeMounts": [{"name": "data", "mountPath": "/data", "readOnly": True}],
    "envFrom": [{"secretRef": {"name": "s3-credentials"}}],
    "env": [
        {"name": "S3_ENDPOINT", "value": "https://storage.example.com"},
        {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "s3-credentials", "key": "t"}}},
    ],
    "imagePullSecrets": [{"name": "regcred"}],
    "serviceAccountName": "dataset-reader",
}


def experiment(**spec: Any) -> api.ScaleExperiment:
    return parse_experiment(
        {
            "apiVersion": api.API_VERSION,
            "kind": "ScaleExperiment",
            "metadata": {"name": "x"},
            "spec": spec,
        }
    )


def problems(**spec: Any) -> list[str]:
    with pytest.raises(InvalidExperimentError) as caught:
        experiment(**spec)
    return [p.render("x.yaml") for p in caught.value.problems]


def test_a_pvc_mounted_read_only_an_env_from_secret_and_a_pull_secret_are_accepted() -> None:
    res = experiment(resources=TYPICAL).spec.resources
    assert res.volumes[0].persistent_volume_claim is not None
    assert res.volumes[0].persistent_volume_claim.claim_name == "imagenet"
    assert res.volume_mounts[0].read_only is True
    assert res.service_account_name == "dataset-reader"


def test_the_wire_form_is_what_the_pod_and_its_container_take() -> None:
    res = experiment(resources=TYPICAL).spec.resources
    assert res.pod_fields() == {
        "volumes": [
            {**DATA, "persistentVolumeClaim": {"claimName": "imagenet", "readOnly": False}}
        ],
        "imagePullSecrets": [{"name": "regcred"}],
    }
    assert res.container_fields() == {
        "volumeMounts": TYPICAL["volumeMounts"],
        "env": TYPICAL["env"],
        "envFrom": TYPICAL["envFrom"],
    }
    assert experiment().spec.resources.pod_fields() == {}
    assert experiment().spec.resources.container_fields() == {}


def test_a_mount_naming_an_undeclared_volume_is_refused_naming_the_mounts() -> None:
    (message,) = problems(
        resources={"volumes": [DATA], "volumeMounts": [{"name": "dta", "mountPath": "/data"}]}
    )
    assert message.startswith(
        "x.yaml: spec.resources.volumeMounts: every volumeMount must name a volume declared in "
        "resources.volumes, got "
    )
    assert "name: dta" in message


def test_a_relative_mount_path_is_refused() -> None:
    (message,) = problems(
        resources={"volumes": [DATA], "volumeMounts": [{"name": "data", "mountPath": "data"}]}
    )
    assert message.startswith("x.yaml: spec.resources.volumeMounts[0].mountPath: must be an abs")
    assert message.endswith("got 'data'")


@pytest.mark.parametrize(
    ("volume", "got"),
    [({**DATA, "emptyDir": {}}, 2), ({"name": "data"}, 0), ({**DATA, "secret": None}, 1)],
)
def test_a_volume_needs_exactly_one_source(volume: dict[str, Any], got: int) -> None:
    if got == 1:  # a null source is no source, as the API server reads it
        experiment(resources={"volumes": [volume]})
        return
    (message,) = problems(resources={"volumes": [volume]})
    assert message == (
        "x.yaml: spec.resources.volumes[0]: must have exactly one source: persistentVolumeClaim, "
        f"configMap, secret, emptyDir, csi or hostPath, got {got}"
    )


def test_names_and_paths_are_unique_and_not_the_mpi_operators() -> None:
    found = problems(
        resources={
            "volumes": [{"name": "ssh-auth", "emptyDir": {}}, {"name": "ssh-auth", "emptyDir": {}}],
            "volumeMounts": [
                {"name": "ssh-auth", "mountPath": "/etc/mpi"},
                {"name": "ssh-auth", "mountPath": "/etc/mpi"},
            ],
        }
    )
    assert "x.yaml: spec.resources.volumes: volume names must be unique" in found
    assert "x.yaml: spec.resources.volumeMounts: mountPath must be unique" in found
    assert any("mpi-job-config and ssh-auth are the MPI operator's own" in m for m in found)
    assert any("/etc/mpi and /home/mpiuser/.ssh are where the MPI" in m for m in found)


@pytest.mark.parametrize(
    ("resources", "expected"),
    [
        ({"env": [{"name": "1A", "value": "x"}]}, "spec.resources.env[0].name: must be an env"),
        (
            {"env": [{"name": "A", "value": "x", "valueFrom": {"configMapKeyRef": TYPICAL["env"][1]
             ["valueFrom"]["secretKeyRef"]}}]},
            "spec.resources.env[0].valueFrom: valueFrom cannot go with a non-empty value",
        ),
        ({"env": [{"name": "A", "valueFrom": {}}]}, "exactly one of secretKeyRef and configMap"),
        ({"envFrom": [{}]}, "spec.resources.envFrom[0]: must have exactly one of configMapRef"),
        ({"envFrom": [{"secretRef": {"name": "Bad_Name"}}]}, "secretRef.name: must be a DNS sub"),
        ({"imagePullSecrets": ["regcred"]}, "imagePullSecrets[0]: must be a mapping"),
        ({"serviceAccountName": "Reader"}, "serviceAccountName: must be a DNS subdomain"),
        (
            {"volumes": [{"name": "c", "configMap": {"name": "c", "items": [{"key": "..k",
             "path": "a/../b"}], "defaultMode": 512}}]},
            "configMap.items[0].key: must be a ConfigMap or Secret key",
        ),
        ({"volumes": [{"name": "h", "hostPath": {"path": "/a/.."}}]}, "hostPath.path: must be"),
    ],
)  # fmt: skip
def test_bad_env_and_references_are_refused_where_they_are(
    resources: dict[str, Any], expected: str
) -> None:
    assert any(expected in m for m in problems(resources=resources)), problems(resources=resources)


def _validations(node: Any) -> list[dict[str, str]]:
    if isinstance(node, dict):
        found = list(node.get("x-kubernetes-validations", []))
        return found + [r for value in node.values() for r in _validations(value)]
    if isinstance(node, list):
        return [r for value in node for r in _validations(value)]
    return []


def test_the_pod_rules_are_cel_rules_of_both_generated_crds() -> None:
    for made in crd.manifests_objects():
        rendered = {(r["rule"], r["message"]) for r in _validations(made)}
        for model in (api.Resources, api.Volume, api.EnvVar, api.EnvVarSource, api.EnvFromSource):
            for rule in model.rules:
                assert (rule.check.cel, rule.message) in rendered, rule.message
    assert api.Resources.rules[2].check.cel == (
        "self.volumeMounts.all(m, self.volumes.exists(v, (v.name == m.name)))"
    )


def test_path_formats_refuse_a_backstep_in_python_and_in_cel() -> None:
    assert rules.ABSOLUTE_PATH.valid("/data/..x")
    assert not rules.ABSOLUTE_PATH.valid("/a/../b")
    assert not rules.ABSOLUTE_PATH.valid("/..")
    assert not rules.ABSOLUTE_PATH.valid("a")
    assert rules.RELATIVE_PATH.valid("a/b..c")
    assert not rules.RELATIVE_PATH.valid("../a")
    assert not rules.CONFIG_KEY.valid(".")
    assert rules.CONFIG_KEY.valid(".a")
    assert rules.ABSOLUTE_PATH.cel("self") == (
        "self.matches('^(?:/.*)$') && !self.matches('(^|/)[.][.](/|$)')"
    )


def test_a_local_run_passes_plain_env_values_and_warns_once_about_the_rest() -> None:
    res = experiment(resources={**TYPICAL, "env": [*TYPICAL["env"], {"name": "EMPTY"}]}).spec
    env = trainer_env(res.resources)
    assert env["S3_ENDPOINT"] == "https://storage.example.com"
    assert env["EMPTY"] == ""
    assert "TOKEN" not in env
    assert env["PYTHONUNBUFFERED"] == "1"
    assert cluster_only_warning(res.resources) == (
        "warning: spec.resources volumes, volumeMounts, env[].valueFrom, envFrom, "
        "imagePullSecrets, serviceAccountName apply on a cluster only: this run mounts no "
        "volume and reads no Secret or ConfigMap; of env, only entries with a plain value reach "
        "the trainer"
    )
    plain = experiment(resources={"env": [{"name": "A", "value": "1"}]}).spec.resources
    assert cluster_only_warning(plain) is None
    unbuffered = experiment(resources={"env": [{"name": "PYTHONUNBUFFERED", "value": "0"}]})
    assert trainer_env(unbuffered.spec.resources)["PYTHONUNBUFFERED"] == "1"


class _Notes:
    """A Progress that keeps the notes."""

    def __init__(self) -> None:
        self.notes: list[str] = []

    def __enter__(self) -> _Notes:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def trial_started(self, record: Any) -> None:
        return None

    def epoch(self, record: Any, event: dict[str, Any]) -> None:
        return None

    def trial_finished(self, record: Any) -> None:
        return None

    def note(self, text: str) -> None:
        self.notes.append(text)


def test_scalelab_run_says_the_warning_once_for_the_whole_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    exp = experiment(resources=TYPICAL, sweep={"batchSizes": [10, 20], "gpus": [1, 2]})
    progress = _Notes()
    run = LocalRun(exp, tmp_path, progress=progress)
    monkeypatch.setattr(run, "run_group", lambda processes, trials: None)
    run.run()
    assert [n for n in progress.notes if "cluster only" in n] == [
        cluster_only_warning(exp.spec.resources)
    ]
