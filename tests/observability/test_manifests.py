"""The monitoring component is well formed and agrees with what it monitors: generated files match
generate.py, the rules pass promtool, the PodMonitor/ServiceMonitor select what the operator
creates, and the dashboard is portable (datasource variable, no hard-coded datasource uid)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from scalelab.kube import mpijob
from scalelab.kube.settings import Config
from scalelab.planner import plan
from scalelab.validation import load_experiment
from tests.harness.controlplane import control_plane_bin
from tests.harness.prometheus import PROMTOOL
from tests.observability.scene import MONITORING, ROOT, TEST_WINDOWS, load_generator, sanitize

pytestmark = pytest.mark.prometheus
GRAFANA_BUILTINS = {"__rate_interval", "__interval", "__range"}


@pytest.fixture(scope="module")
def gen() -> Any:
    return load_generator()


def kustomize(overlay: Path, **extra: Any) -> list[dict[str, Any]]:
    """`kubectl kustomize` of an overlay that adds the component to the base, as users do."""
    overlay.mkdir(parents=True, exist_ok=True)
    kustomization = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": [os.path.relpath(ROOT / "manifests", overlay)],
        "components": [os.path.relpath(MONITORING, overlay)],
        **extra,
    }
    (overlay / "kustomization.yaml").write_text(yaml.safe_dump(kustomization))
    # The control plane's kubectl when none is installed (hack/build-control-plane.sh caches it;
    # only kubectl is built for this tier).
    kubectl = shutil.which("kubectl") or str(control_plane_bin("kubectl") / "kubectl")
    out = subprocess.run(
        [kubectl, "kustomize", str(overlay)], capture_output=True, text=True, check=False
    )
    assert out.returncode == 0, out.stderr
    return [d for d in yaml.safe_load_all(out.stdout) if d]


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    return kustomize(tmp_path_factory.mktemp("overlay"))


def test_the_documented_window_patch_changes_the_alert(tmp_path: Path) -> None:
    """The overlay patch in docs/monitoring.md applies and changes what it says it changes."""
    doc = (ROOT / "docs" / "monitoring.md").read_text()
    block = next(b for b in re.findall(r"```yaml\n(.*?)```", doc, re.S) if "patches:" in b)
    docs = kustomize(tmp_path / "overlay", **yaml.safe_load(block))
    rule = _one(docs, "PrometheusRule")["spec"]["groups"][1]["rules"][1]
    assert rule["alert"] == "ScalelabGPUDemandPending"
    assert rule["for"] == "1h"


def _one(docs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = [d for d in docs if d["kind"] == kind]
    assert len(found) == 1, kind
    return found[0]


def test_generated_files_match_generate_py(gen: Any) -> None:
    drifted = [str(p) for p, text in gen.outputs().items() if p.read_text() != text]
    assert not drifted, f"run `python manifests/monitoring/generate.py`: {drifted}"


def test_the_prometheus_rule_carries_the_rules_file_groups() -> None:
    rules = yaml.safe_load((MONITORING / "rules" / "scalelab.rules.yaml").read_text())
    resource = yaml.safe_load((MONITORING / "prometheusrule.yaml").read_text())
    assert resource["spec"] == rules


def test_promtool_accepts_the_shipped_rules_and_their_test_rendering(
    gen: Any, tmp_path: Path
) -> None:
    rendered = tmp_path / "test.rules.yaml"
    rendered.write_text(gen.rules_text(**TEST_WINDOWS))
    for path in (MONITORING / "rules" / "scalelab.rules.yaml", rendered):
        done = subprocess.run(
            [PROMTOOL, "check", "rules", str(path)], capture_output=True, text=True, check=False
        )
        assert done.returncode == 0, done.stdout + done.stderr


def test_the_component_is_a_kustomize_component() -> None:
    kust = yaml.safe_load((MONITORING / "kustomization.yaml").read_text())
    assert kust["kind"] == "Component"
    assert kust["apiVersion"] == "kustomize.config.k8s.io/v1alpha1"


def test_the_dashboard_configmap_is_labelled_for_the_grafana_sidecar(
    built: list[dict[str, Any]],
) -> None:
    cm = next(d for d in built if d["kind"] == "ConfigMap" and "scalelab.json" in d["data"])
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert cm["data"]["scalelab.json"] == (MONITORING / "dashboards" / "scalelab.json").read_text()
    kinds = {d["kind"] for d in built}
    assert {"PodMonitor", "ServiceMonitor", "PrometheusRule", "Deployment"} <= kinds


def test_the_pod_monitor_selects_trial_pods_and_keeps_every_rank_port(
    built: list[dict[str, Any]],
) -> None:
    monitor = _one(built, "PodMonitor")["spec"]
    experiment = load_experiment(ROOT / "examples" / "lab2-horovod.yaml")
    config = Config()
    trial = max(plan(experiment), key=lambda t: t.gpus)
    job = mpijob.render(trial, "lab", "uid", config)
    selector = monitor["selector"]["matchExpressions"]
    assert selector == [{"key": mpijob.LABEL_EXPERIMENT, "operator": "Exists"}]
    for role in ("Launcher", "Worker"):
        labels = job["spec"]["mpiReplicaSpecs"][role]["template"]["metadata"]["labels"]
        assert mpijob.LABEL_EXPERIMENT in labels
        assert set(monitor["podTargetLabels"]) <= set(labels)
    wanted = set(mpijob.trial_labels(trial)) - {mpijob.LABEL_MANAGED_BY}
    assert set(monitor["podTargetLabels"]) == wanted
    keep = monitor["podMetricsEndpoints"][0]["relabelings"][0]
    assert keep["action"] == "keep"
    assert keep["sourceLabels"] == ["__meta_kubernetes_pod_container_port_name"]
    worker = job["spec"]["mpiReplicaSpecs"]["Worker"]["template"]["spec"]["containers"][0]
    launcher = job["spec"]["mpiReplicaSpecs"]["Launcher"]["template"]["spec"]["containers"][0]
    names = [p["name"] for p in worker["ports"]] + [p["name"] for p in launcher.get("ports", [])]
    kept = [n for n in names if re.fullmatch(keep["regex"], n)]
    assert kept == [f"metrics-{i}" for i in range(len(kept))]
    assert len(kept) == min(trial.gpus, trial.spec.resources.processes_per_worker)


def test_the_service_monitor_selects_the_operator_metrics_service(
    built: list[dict[str, Any]],
) -> None:
    monitor = _one(built, "ServiceMonitor")["spec"]
    services = [d for d in built if d["kind"] == "Service"]
    matched = [
        s
        for s in services
        if s["metadata"]["namespace"] in monitor["namespaceSelector"]["matchNames"]
        and monitor["selector"]["matchLabels"].items() <= s["metadata"]["labels"].items()
    ]
    assert len(matched) == 1
    ports = {p["name"] for p in matched[0]["spec"]["ports"]}
    assert {e["port"] for e in monitor["endpoints"]} <= ports
    assert all(e["honorLabels"] for e in monitor["endpoints"])


def test_rules_and_panels_name_only_metrics_that_exist(gen: Any) -> None:
    from prometheus_client import CollectorRegistry

    from scalelab.kube.handlers import RECONCILING
    from scalelab.kube.metrics import OperatorMetrics
    from scalelab_trainer.metrics import Metrics

    registry = CollectorRegistry()
    OperatorMetrics(registry, RECONCILING)
    Metrics(registry)
    exported = set()
    for family in registry.collect():
        exported |= {family.name, f"{family.name}_total", f"{family.name}_bucket"}
    texts = json.dumps(gen.dashboard()) + json.dumps(gen.rule_groups())
    used = set(re.findall(r"\bscalelab_[a-z_]+", texts)) - {"scalelab_dev_trial"}
    used = {u for u in used if not u.startswith("scalelab_dev_")}
    assert used <= exported, used - exported
    # The scalelab_dev_* labels the rules read are the ones the PodMonitor writes.
    monitor = yaml.safe_load((MONITORING / "podmonitor.yaml").read_text())["spec"]
    written = {sanitize(label) for label in monitor["podTargetLabels"]}
    assert set(re.findall(r"\bscalelab_dev_[a-z_]+", texts)) <= written


def _walk(node: Any, path: str = "") -> list[tuple[str, Any]]:
    if isinstance(node, dict):
        return [x for k, v in node.items() for x in _walk(v, f"{path}.{k}")]
    if isinstance(node, list):
        return [x for i, v in enumerate(node) for x in _walk(v, f"{path}[{i}]")]
    return [(path, node)]


def test_the_dashboard_uses_a_datasource_variable_and_no_hard_coded_uid() -> None:
    board = json.loads((MONITORING / "dashboards" / "scalelab.json").read_text())
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    assert "experiment" in variables
    uids = [(p, v) for p, v in _walk(board) if p.endswith(".uid") and p != ".uid"]
    assert uids
    assert all(v == "${datasource}" for _, v in uids), uids
    for panel in board["panels"]:
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == panel["datasource"], panel["title"]


def test_the_dashboard_names_only_defined_variables_and_lays_out_panels_without_overlap() -> None:
    board = json.loads((MONITORING / "dashboards" / "scalelab.json").read_text())
    defined = {v["name"] for v in board["templating"]["list"]} | GRAFANA_BUILTINS
    text = json.dumps(board["panels"]) + json.dumps(board["templating"])
    used = set(re.findall(r"\$\{?([a-zA-Z_]\w*)", text))
    assert used <= defined, used - defined
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids))
    cells: dict[tuple[int, int], str] = {}
    for p in board["panels"]:
        g = p["gridPos"]
        assert g["x"] >= 0, p["title"]
        assert g["x"] + g["w"] <= 24, p["title"]
        assert p["title"]
        assert p["type"] == "row" or p["description"], p["title"]
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                assert (x, y) not in cells, f"{p['title']} overlaps {cells[(x, y)]}"
                cells[(x, y)] = p["title"]
