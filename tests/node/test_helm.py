"""The Helm install on a real node, as a user runs it: `helm install` of charts/scalelab with the
images built on the node, an experiment Succeeded on real pods, `helm uninstall` — and nothing
of ours left but the CRDs, which Helm never deletes (its policy, so that uninstalling cannot
delete users' experiments); the test deletes those as docs/install.md says.

Runs before the session's kustomize install (`installed`, the other node tests): the two
installs own the same objects."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.harness.cluster import Cluster
from tests.harness.controlplane import ControlPlane
from tests.harness.helm import CHART, helm
from tests.harness.objects import wait_for
from tests.node.conftest import OPERATOR_NS, apply, finished, operator_diagnostics
from tests.node.test_real_pods import experiment, trial_diagnostics

pytestmark = pytest.mark.node
#: tests/conftest.py runs this module before any test that uses the kustomize install.
RUNS_BEFORE_INSTALL = True
RELEASE = "scalelab"
CRDS = {"scaleexperiments.scalelab.dev", "scaletrials.scalelab.dev"}
#: Cluster-scoped kinds and namespaced kinds an install of ours makes.
CLUSTER_KINDS = "namespaces,clusterroles,clusterrolebindings,customresourcedefinitions"
NAMESPACED_KINDS = (
    "deployments,replicasets,pods,services,serviceaccounts,roles,rolebindings,"
    "poddisruptionbudgets,leases,configmaps,secrets"
)


def ours(cp: ControlPlane) -> set[str]:
    """Every object of ours: labelled part-of scalelab, or in the operator's namespace, or
    Helm's release record; as kind/namespace/name."""
    found = set()
    for kinds, extra in ((CLUSTER_KINDS, []), (NAMESPACED_KINDS, ["-A"])):
        listed = cp.kubectl("get", kinds, *extra, "-o", "json").stdout
        for o in json.loads(listed)["items"]:
            m = o["metadata"]
            labels = m.get("labels") or {}
            if (
                labels.get("app.kubernetes.io/part-of") == "scalelab"
                or m.get("namespace") == OPERATOR_NS
                or m["name"] == OPERATOR_NS
                or labels.get("owner") == "helm"
            ):
                found.add(f"{o['kind']}/{m.get('namespace', '')}/{m['name']}")
    return found


def test_helm_install_runs_an_experiment_and_helm_uninstall_leaves_only_the_crds(
    node_cluster: Cluster, mpi_operator: object, tmp_path: Path
) -> None:
    cp = node_cluster.cp
    assert not ours(cp), "scalelab is installed already: run this test first, or alone"
    kube = ["--kubeconfig", str(cp.kubeconfig)]
    helm(
        "install", RELEASE, str(CHART), *kube, "--wait", "--timeout=240s",
        "--set", "operator.image.repository=localhost/scalelab/operator",
        "--set", "operator.image.tag=test", "--set", "operator.image.pullPolicy=Never",
        "--set", "trainer.image=localhost/scalelab/trainer:test",
        home=tmp_path,
    )  # fmt: skip
    installed = ours(cp)
    assert {f"CustomResourceDefinition//{c}" for c in CRDS} <= installed
    assert f"Deployment/{OPERATOR_NS}/scalelab-operator" in installed, operator_diagnostics(cp)

    namespace = "helm-experiment"
    cp.kubectl("create", "namespace", namespace)
    name = apply(cp, namespace, experiment("helm-installed"))
    assert finished(cp, name, namespace) == "Succeeded", trial_diagnostics(cp, namespace)
    cp.kubectl("delete", "namespace", namespace, "--wait=true", "--timeout=180s")

    helm("uninstall", RELEASE, *kube, "--wait", "--timeout=180s", home=tmp_path)
    wait_for(
        lambda: ours(cp) == {f"CustomResourceDefinition//{c}" for c in CRDS} or None,
        120, "everything of ours but the CRDs to be deleted",
    )  # fmt: skip
    assert not helm("list", "-A", *kube, "-q", home=tmp_path).stdout.strip()
    cp.kubectl("delete", "crd", *sorted(CRDS), "--wait=true")
    assert not ours(cp)
