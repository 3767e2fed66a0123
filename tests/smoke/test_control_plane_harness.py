"""The control-plane harness is real: the apiserver stores objects, RBAC refuses, the controller
manager garbage-collects."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from tests.harness.controlplane import REPO, ControlPlane
from tests.harness.ports import wait_until

pytestmark = pytest.mark.cluster

WIDGET_CRD = """
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: widgets.smoke.scalelab.dev}
spec:
  group: smoke.scalelab.dev
  scope: Namespaced
  names: {plural: widgets, singular: widget, kind: Widget}
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            properties:
              size: {type: integer, minimum: 1}
"""


def test_a_custom_resource_applies_and_reads_back(control_plane: ControlPlane) -> None:
    control_plane.kubectl("apply", "-f", "-", input=WIDGET_CRD)
    control_plane.kubectl(
        "wait", "--for=condition=Established", "crd/widgets.smoke.scalelab.dev", "--timeout=60s"
    )
    widget = (
        "apiVersion: smoke.scalelab.dev/v1\nkind: Widget\n"
        "metadata: {name: w1, namespace: default}\nspec: {size: 3}\n"
    )
    # Discovery of a new CRD can lag Established by a moment.
    wait_until(
        lambda: (
            control_plane.kubectl("apply", "-f", "-", input=widget, check=False).returncode == 0
        ),
        30,
        "widget apply",
    )
    got = json.loads(control_plane.kubectl("get", "widget", "w1", "-o", "json").stdout)
    assert got["spec"] == {"size": 3}
    bad = widget.replace("size: 3", "size: 0")
    refused = control_plane.kubectl("apply", "-f", "-", input=bad, check=False)
    assert refused.returncode != 0
    assert "spec.size" in refused.stderr


def test_a_service_account_without_a_role_binding_is_refused_by_rbac(
    control_plane: ControlPlane,
) -> None:
    control_plane.kubectl("create", "namespace", "rbac-smoke")
    control_plane.kubectl("create", "serviceaccount", "nobody", "-n", "rbac-smoke")
    kubeconfig = control_plane.service_account_kubeconfig("rbac-smoke", "nobody")
    r = control_plane.kubectl(
        "get", "configmaps", "-n", "rbac-smoke", kubeconfig=kubeconfig, check=False
    )
    assert r.returncode != 0
    assert "forbidden" in r.stderr.lower()
    assert (
        'User "system:serviceaccount:rbac-smoke:nobody" cannot list resource "configmaps"'
        in r.stderr
    )
    # Allowed once a RoleBinding grants it: the refusal was RBAC's, not a broken token.
    control_plane.kubectl(
        "create", "rolebinding", "nobody-view", "--clusterrole=view",
        "--serviceaccount=rbac-smoke:nobody", "-n", "rbac-smoke",
    )  # fmt: skip
    wait_until(
        lambda: (
            control_plane.kubectl(
                "get", "configmaps", "-n", "rbac-smoke", kubeconfig=kubeconfig, check=False
            ).returncode
            == 0
        ),
        30,
        "rolebinding takes effect",
    )


def test_the_controller_manager_garbage_collects_an_object_whose_owner_is_deleted(
    control_plane: ControlPlane,
) -> None:
    control_plane.kubectl("create", "namespace", "gc-smoke")
    control_plane.kubectl("create", "configmap", "owner", "-n", "gc-smoke")
    uid = control_plane.kubectl(
        "get", "configmap", "owner", "-n", "gc-smoke", "-o", "jsonpath={.metadata.uid}"
    ).stdout
    owned = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": "owned",
            "namespace": "gc-smoke",
            "ownerReferences": [
                {"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": uid}
            ],
        },
    }
    control_plane.kubectl("apply", "-f", "-", input=json.dumps(owned))
    control_plane.kubectl("delete", "configmap", "owner", "-n", "gc-smoke", "--wait=false")
    wait_until(
        lambda: (
            control_plane.kubectl(
                "get", "configmap", "owned", "-n", "gc-smoke", check=False
            ).returncode
            != 0
        ),
        60,
        "garbage collection of the owned ConfigMap",
    )


def test_the_harness_started_by_hand_tears_down_on_sigterm_as_on_ctrl_c() -> None:
    """`timeout` and CI runners stop with SIGTERM: no etcd or API server may outlive it."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.harness.controlplane"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=REPO,
    )  # fmt: skip
    assert proc.stdout is not None
    first = proc.stdout.readline()
    assert first.startswith("export KUBECONFIG="), first
    workdir = Path(first.split("=", 1)[1].strip()).parent
    children = psutil.Process(proc.pid).children(recursive=True)
    assert {c.name() for c in children} >= {"etcd", "kube-apiserver"}
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 0
    _gone, alive = psutil.wait_procs(children, timeout=10)
    assert not alive, [c.name() for c in alive]
    assert not workdir.exists()
