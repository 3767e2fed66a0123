"""The Helm chart charts/scalelab is the kustomize install, object for object: the committed
chart is what charts/generate.py writes from manifests/, `helm template` with the default
values renders exactly `kubectl kustomize manifests/` (and, with monitoring on, the monitoring
component's objects too), and each value changes what it says and nothing else. Also the
example overlay that sets both images declaratively."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.harness.controlplane import REPO
from tests.harness.helm import CHART, by_key, helm, kubectl_bin, objects

pytestmark = pytest.mark.cluster
RELEASE = "scalelab"
Key = tuple[str, str, str]


def kustomize(target: Path) -> list[dict[str, Any]]:
    out = subprocess.run(
        [kubectl_bin(), "kustomize", str(target)], capture_output=True, text=True, check=True
    )
    return objects(out.stdout)


def template(home: Path, *values: str) -> dict[Key, dict[str, Any]]:
    """`helm template` of the chart with its CRDs, `--set` each of `values`."""
    sets = [a for v in values for a in ("--set", v)]
    r = helm("template", RELEASE, str(CHART), "--include-crds", *sets, home=home)
    return by_key(objects(r.stdout))


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("helm-home")


@pytest.fixture(scope="module")
def defaults(home: Path) -> dict[Key, dict[str, Any]]:
    return template(home)


def operator_container(objs: dict[Key, dict[str, Any]]) -> dict[str, Any]:
    deploy = objs[("Deployment", "scalelab-system", "scalelab-operator")]
    container: dict[str, Any] = deploy["spec"]["template"]["spec"]["containers"][0]
    return container


def test_the_committed_chart_is_what_generate_py_writes_from_manifests() -> None:
    r = subprocess.run(
        [sys.executable, str(REPO / "charts" / "generate.py"), "--check"],
        capture_output=True, text=True, check=False,
        env={**os.environ, "PATH": f"{Path(kubectl_bin()).parent}:{os.environ['PATH']}"},
    )  # fmt: skip
    assert r.returncode == 0, f"run charts/generate.py:\n{r.stdout}{r.stderr}"


def test_helm_template_with_default_values_renders_the_objects_of_kubectl_kustomize(
    defaults: dict[Key, dict[str, Any]],
) -> None:
    expected = by_key(kustomize(REPO / "manifests"))
    assert sorted(defaults) == sorted(expected)
    for k, obj in expected.items():
        assert defaults[k] == obj, f"{k} differs between the chart and kustomize"


def test_monitoring_enabled_adds_the_monitoring_components_objects_with_extra_labels(
    home: Path, defaults: dict[Key, dict[str, Any]], tmp_path: Path
) -> None:
    overlay = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": [os.path.relpath(REPO / "manifests", tmp_path)],
        "components": [os.path.relpath(REPO / "manifests" / "monitoring", tmp_path)],
    }
    (tmp_path / "kustomization.yaml").write_text(yaml.safe_dump(overlay))
    expected = by_key(kustomize(tmp_path))
    rendered = template(home, "monitoring.enabled=true")
    assert rendered == expected
    added = set(rendered) - set(defaults)
    assert {k[0] for k in added} == {"PodMonitor", "ServiceMonitor", "PrometheusRule", "ConfigMap"}
    labelled = template(home, "monitoring.enabled=true", "monitoring.labels.release=kps")
    for k in added:
        assert labelled[k]["metadata"]["labels"]["release"] == "kps"
        assert (
            labelled[k]["metadata"]["labels"].items() >= rendered[k]["metadata"]["labels"].items()
        )


def test_values_set_images_watched_namespaces_stall_seconds_resources_and_namespace(
    home: Path, defaults: dict[Key, dict[str, Any]]
) -> None:
    objs = template(
        home,
        "operator.image.repository=r.example/op", "operator.image.tag=1.2",
        "trainer.image=r.example/tr:1.2", "watchNamespaces={team-a,team-b}",
        "stallSeconds=120", "operator.resources.limits.memory=1Gi", "operator.replicas=1",
    )  # fmt: skip
    c = operator_container(objs)
    env = {e["name"]: e.get("value") for e in c["env"]}
    assert c["image"] == "r.example/op:1.2"
    assert env["SCALELAB_TRAINER_IMAGE"] == "r.example/tr:1.2"
    assert env["SCALELAB_STALL_SECONDS"] == "120"
    assert "SCALELAB_STALL_SECONDS" not in {e["name"] for e in operator_container(defaults)["env"]}
    assert c["args"][:2] == ["--namespace=team-a", "--namespace=team-b"]
    assert "--all-namespaces" in operator_container(defaults)["args"]
    assert "--all-namespaces" not in c["args"]
    assert c["resources"] == {
        "limits": {"memory": "1Gi"},
        "requests": {"cpu": "100m", "memory": "128Mi"},
    }
    other = template(home, "namespace.name=lab", "namespace.create=false")
    assert ("Namespace", "", "scalelab-system") not in other
    binding = other[("ClusterRoleBinding", "", "scalelab-operator")]
    assert binding["subjects"][0]["namespace"] == "lab"
    assert {k[1] for k in other if k[1]} == {"lab"}


def test_kueue_disabled_drops_only_the_operators_reads_of_kueues_apis(
    home: Path, defaults: dict[Key, dict[str, Any]]
) -> None:
    role = ("ClusterRole", "", "scalelab-operator")
    rules = template(home, "kueue.enabled=false")[role]["rules"]
    dropped = [r for r in defaults[role]["rules"] if r not in rules]
    assert {"kueue.x-k8s.io", "visibility.kueue.x-k8s.io"} <= {
        g for r in dropped for g in r["apiGroups"]
    }
    assert all(g.endswith("kueue.x-k8s.io") for r in dropped for g in r["apiGroups"])
    assert all(set(r["verbs"]) <= {"get", "list", "watch"} for r in dropped)
    assert len(rules) + len(dropped) == len(defaults[role]["rules"])


def test_kueue_default_queue_name_sets_only_the_operators_default_queue(
    home: Path, defaults: dict[Key, dict[str, Any]]
) -> None:
    objs = template(home, "kueue.defaultQueueName=team")
    env = operator_container(objs)["env"]
    assert {"name": "SCALELAB_DEFAULT_QUEUE_NAME", "value": "team"} in env
    assert [e for e in env if e["name"] != "SCALELAB_DEFAULT_QUEUE_NAME"] == (
        operator_container(defaults)["env"]
    )
    deployment = ("Deployment", "scalelab-system", "scalelab-operator")
    assert {k: o for k, o in objs.items() if k != deployment} == {
        k: o for k, o in defaults.items() if k != deployment
    }


def test_do_not_disrupt_trials_false_sets_only_the_operators_setting_and_true_changes_nothing(
    home: Path, defaults: dict[Key, dict[str, Any]]
) -> None:
    objs = template(home, "doNotDisruptTrials=false")
    env = operator_container(objs)["env"]
    assert {"name": "SCALELAB_DO_NOT_DISRUPT_TRIALS", "value": "false"} in env
    assert [e for e in env if e["name"] != "SCALELAB_DO_NOT_DISRUPT_TRIALS"] == (
        operator_container(defaults)["env"]
    )
    deployment = ("Deployment", "scalelab-system", "scalelab-operator")
    assert {k: o for k, o in objs.items() if k != deployment} == {
        k: o for k, o in defaults.items() if k != deployment
    }
    assert template(home, "doNotDisruptTrials=true") == defaults


def test_helm_lint_finds_nothing_wrong_with_the_chart(home: Path) -> None:
    r = helm("lint", "--strict", str(CHART), home=home, check=False)
    assert r.returncode == 0, r.stdout + r.stderr


def test_the_install_overlay_example_sets_both_images_without_kubectl_set_env() -> None:
    objs = by_key(kustomize(REPO / "examples" / "install-overlay"))
    c = operator_container(objs)
    env = {e["name"]: e.get("value") for e in c["env"]}
    assert c["image"] == "registry.example.com/scalelab/operator:0.1.0"
    assert env["SCALELAB_TRAINER_IMAGE"] == "registry.example.com/scalelab/trainer:0.1.0"
    assert set(objs) == set(by_key(kustomize(REPO / "manifests")))
