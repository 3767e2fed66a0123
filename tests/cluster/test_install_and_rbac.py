"""The kustomize base installs, the CRDs refuse invalid specs with the rule's message, the
spec-edit policy holds, and the trainer's ServiceAccount can do one thing only."""

from __future__ import annotations

import json
from typing import Any

import pytest
import yaml
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from scalelab_trainer import store_results
from tests.cluster.conftest import Operator, get, wait_for
from tests.harness.controlplane import ControlPlane
from tests.validity.downstream import downstream

pytestmark = pytest.mark.cluster

G, V, TRIALS = "scalelab.dev", "v1alpha1", "scaletrials"
MERGE = "application/merge-patch+json"


def _doc(name: str, spec: dict[str, Any]) -> str:
    return yaml.safe_dump(
        {
            "apiVersion": "scalelab.dev/v1alpha1",
            "kind": "ScaleExperiment",
            "metadata": {"name": name},
            "spec": spec,
        }
    )


#: (case id, spec, a fragment of the message kubectl must print)
INVALID = [
    ("negative batch", {"sweep": {"batchSizes": [-4]}}, "should be greater than 0"),
    ("empty sweep", {"sweep": {"batchSizes": []}}, "should have at least 1 items"),
    ("zero gpus", {"sweep": {"gpus": [0]}}, "should be greater than 0"),
    ("unknown optimizer", {"training": {"optimizer": "adagrad"}}, 'supported values: "sgd"'),
    ("unknown model", {"workload": {"model": "transformer"}}, 'supported values: "linear"'),
    ("zero learning rate", {"training": {"learningRate": 0}}, "should be greater than 0"),
    ("repeated batch sizes", {"sweep": {"batchSizes": [8, 8]}}, "must not repeat values"),
    ("repeated gpus", {"sweep": {"gpus": [2, 2], "batchSizes": [8]}}, "must not repeat values"),
    (
        "model and dataset mismatch",
        {"workload": {"model": "cnn", "dataset": "lab1-line"}},
        "cnn trains on synthetic-images",
    ),
    (
        "no runnable grid point",
        {"sweep": {"batchSizes": [3], "gpus": [2]}, "resources": {"gpusPerProcess": 0}},
        "no grid point can run",
    ),
    (
        "every point over the GPU budget",
        {"sweep": {"gpus": [8]}, "execution": {"maxGPUs": 4}},
        "no grid point can run",
    ),
    ("bad cpu quantity", {"resources": {"cpu": "two"}}, "must be a CPU quantity"),
    ("too many repeats", {"sweep": {"repeats": 101}}, "should be less than or equal to 100"),
    ("typo in a field name", {"sweep": {"batchSize": [8]}}, 'unknown field "spec.sweep.batchSize"'),
    (
        "custom model without an entry point",
        {"workload": {"model": "custom", "dataset": "custom"}},
        "spec.workload.entryPoint: Invalid value: required with model custom",
    ),
    (
        "entry point that is a path",
        {"workload": {"model": "custom", "dataset": "custom", "entryPoint": "team/model.py"}},
        "spec.workload.entryPoint: Invalid value",
    ),
    ("momentum of one", {"training": {"momentum": 1}}, "should be less than 1"),
    (
        "unknown cnn architecture",
        {"workload": {"cnnArch": "vgg"}},
        'supported values: "resnet-small"',
    ),
    (
        "negative backoff",
        {"execution": {"backoffLimit": -1}},
        "should be greater than or equal to 0",
    ),
]


def test_kubectl_apply_k_installs_the_crds_operator_rbac_and_deployment(
    cluster: ControlPlane,
) -> None:
    names = cluster.kubectl(
        "get", "crd,clusterrole,clusterrolebinding", "-l", "app.kubernetes.io/part-of=scalelab",
        "-o", "name",
    ).stdout.split()  # fmt: skip
    assert "customresourcedefinition.apiextensions.k8s.io/scaleexperiments.scalelab.dev" in names
    assert "clusterrole.rbac.authorization.k8s.io/scalelab-trainer" in names
    deploy = get(cluster, "deployment", "scalelab-operator", "scalelab-system")
    pod = deploy["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    container = pod["containers"][0]
    assert container["image"] == "ghcr.io/scalelab/operator:0.1.0"
    assert {"livenessProbe", "readinessProbe", "resources"} <= container.keys()
    shorts = cluster.kubectl("api-resources", "--api-group=scalelab.dev", "-o", "wide").stdout
    assert " sx " in shorts
    assert " st " in shorts
    assert "scalelab" in shorts


def test_the_operator_role_grants_no_secrets(cluster: ControlPlane) -> None:
    sa = "system:serviceaccount:scalelab-system:scalelab-operator"
    for verb in ("get", "list", "watch"):
        allowed = cluster.kubectl("auth", "can-i", verb, "secrets", "-A", "--as", sa, check=False)
        assert allowed.stdout.strip() == "no"
    # No pods or their logs (the MPI operator makes pods), nothing of other APIs' objects, no
    # deletes of our own objects or CRD writes: the real authorizer says no.
    for verb, what in (
        ("get", "pods"), ("get", "pods/log"), ("create", "pods/exec"), ("get", "deployments.apps"),
        ("list", "configmaps"), ("create", "customresourcedefinitions.apiextensions.k8s.io"),
        ("delete", "scaleexperiments.scalelab.dev"), ("delete", "scaletrials.scalelab.dev"),
        ("create", "workloads.kueue.x-k8s.io"), ("list", "localqueues.kueue.x-k8s.io"),
        ("bind", "clusterroles.rbac.authorization.k8s.io/cluster-admin"),
    ):  # fmt: skip
        resource, _, sub = what.partition("/")
        args = ["auth", "can-i", verb, resource, "-A", "--as", sa]
        if sub and resource.startswith("clusterroles"):
            args = ["auth", "can-i", verb, f"{resource}/{sub}", "--as", sa]
        elif sub:
            args += ["--subresource", sub]
        answer = cluster.kubectl(*args, check=False).stdout.strip()
        assert answer == "no", (verb, what, answer)
    for verb, what, answer in (
        ("create", "mpijobs.kubeflow.org", "yes"),
        ("delete", "mpijobs.kubeflow.org", "yes"),  # Kueue can never admit it; pruned
        ("patch", "scaletrials.scalelab.dev/status", "yes"),
        # The label that retires a finished, archived experiment's objects from its watches.
        ("patch", "scaletrials.scalelab.dev", "yes"),
        ("patch", "mpijobs.kubeflow.org", "yes"),
    ):
        whole = what.split("/")
        args = ["auth", "can-i", verb, whole[0], "-A", "--as", sa]
        if len(whole) > 1:
            args += ["--subresource", whole[1]]
        assert cluster.kubectl(*args, check=False).stdout.strip() == answer, (verb, what)


def test_trial_pods_pass_the_restricted_pod_security_profile(
    cluster: ControlPlane, namespace: str
) -> None:
    """Pod Security admission `restricted` enforced on a namespace: the launcher and worker pods
    scalelab renders (non-root, no privilege escalation, no capabilities, RuntimeDefault
    seccomp) are admitted without a warning; a root pod is refused, so the check is live."""
    cluster.kubectl(
        "label", "namespace", namespace, "pod-security.kubernetes.io/enforce=restricted",
        "pod-security.kubernetes.io/warn=restricted",
    )  # fmt: skip
    spec = {"sweep": {"batchSizes": [8], "gpus": [2]}, "resources": {"gpusPerProcess": 1},
            "execution": {"queueName": "q"}}  # fmt: skip
    pods = [obj for kind, obj in downstream(yaml.safe_load(_doc("psa", spec))) if kind == "Pod"]
    assert {p["metadata"]["name"].rsplit("-", 1)[1] for p in pods} == {"launcher", "worker"}
    for pod in pods:
        out = cluster.kubectl(
            "create", "--dry-run=server", "-n", namespace, "-f", "-", input=json.dumps(pod)
        )
        assert "Warning" not in out.stderr, out.stderr
    launcher = next(p for p in pods if p["metadata"]["name"].endswith("launcher"))
    assert launcher["spec"]["automountServiceAccountToken"] is False  # no token for mpirun
    root = json.loads(json.dumps(pods[0]))
    root["spec"]["securityContext"] = {"runAsUser": 0}
    refused = cluster.kubectl(
        "create", "--dry-run=server", "-n", namespace, "-f", "-", input=json.dumps(root),
        check=False,
    )  # fmt: skip
    assert refused.returncode != 0
    assert 'violates PodSecurity "restricted' in refused.stderr, refused.stderr


@pytest.mark.parametrize(("case", "spec", "message"), INVALID, ids=[c[0] for c in INVALID])
def test_an_invalid_spec_is_refused_by_kubectl_apply_with_the_rules_message(
    cluster: ControlPlane, case: str, spec: dict[str, Any], message: str
) -> None:
    name = case.replace(" ", "-")
    result = cluster.kubectl(
        "apply", "-n", "default", "-f", "-", input=_doc(name, spec), check=False
    )
    assert result.returncode != 0, f"{case} was accepted"
    assert message in result.stderr, result.stderr


def test_a_name_that_is_not_a_dns_label_is_refused(cluster: ControlPlane) -> None:
    result = cluster.kubectl(
        "apply", "-n", "default", "-f", "-", input=_doc("a" * 70, {}), check=False
    )
    assert result.returncode != 0
    assert "must be a DNS label" in result.stderr


def test_the_sweep_is_immutable_and_max_concurrent_trials_may_change(
    cluster: ControlPlane, namespace: str
) -> None:
    spec = {"sweep": {"batchSizes": [8]}, "resources": {"gpusPerProcess": 0},
            "execution": {"maxConcurrentTrials": 1}}  # fmt: skip
    # No operator needed: the API server enforces the policy.
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=_doc("frozen", spec))
    for patch, where in (
        ({"sweep": {"batchSizes": [8, 16]}}, "spec.sweep is immutable"),
        ({"training": {"learningRate": 0.5}}, "spec.training is immutable"),
        ({"resources": {"cpu": "4"}}, "spec.resources is immutable"),
        ({"execution": {"maxGPUs": 2}}, "other than maxConcurrentTrials are immutable"),
    ):
        out = cluster.kubectl(
            "patch", "sx", "frozen", "-n", namespace, "--type=merge",
            "-p", json.dumps({"spec": patch}), check=False,
        )  # fmt: skip
        assert out.returncode != 0, patch
        assert where in out.stderr, (patch, out.stderr)
    cluster.kubectl(
        "patch", "sx", "frozen", "-n", namespace, "--type=merge",
        "-p", json.dumps({"spec": {"execution": {"maxConcurrentTrials": 3}}}),
    )  # fmt: skip
    assert get(cluster, "sx", "frozen", namespace)["spec"]["execution"]["maxConcurrentTrials"] == 3


def test_a_custom_workload_keeps_its_free_form_parameters_and_they_are_immutable(
    cluster: ControlPlane, namespace: str
) -> None:
    parameters = {"depth": 3, "act": "gelu", "wide": True, "sizes": [1, 2.5, "x"]}
    workload = {"model": "custom", "dataset": "custom", "entryPoint": "team.models:build",
                "parameters": parameters}  # fmt: skip
    spec = {"workload": workload, "sweep": {"batchSizes": [8]}, "resources": {"gpusPerProcess": 0}}
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=_doc("custom", spec))
    stored = get(cluster, "sx", "custom", namespace)["spec"]["workload"]
    assert stored["parameters"] == parameters
    out = cluster.kubectl(
        "patch", "sx", "custom", "-n", namespace, "--type=merge",
        "-p", json.dumps({"spec": {"workload": {"parameters": {"depth": 4}}}}), check=False,
    )  # fmt: skip
    assert out.returncode != 0
    assert "spec.workload is immutable" in out.stderr
    many = {"workload": {**workload, "parameters": {f"p{i}": i for i in range(65)}}}
    result = cluster.kubectl(
        "apply", "-n", namespace, "-f", "-", input=_doc("many", {**spec, **many}), check=False
    )
    assert result.returncode != 0
    assert "must have at most 64 items" in result.stderr


def test_an_explicit_null_entry_point_is_no_entry_point_for_the_api_server_too(
    cluster: ControlPlane, namespace: str
) -> None:
    spec = {"workload": {"entryPoint": None}, "resources": {"gpusPerProcess": 0}}
    result = cluster.kubectl(
        "apply", "-n", namespace, "-f", "-", input=_doc("null-entry", spec), check=False
    )
    assert result.returncode == 0, result.stderr


def test_defaults_from_the_models_are_applied_by_the_api_server(
    cluster: ControlPlane, namespace: str
) -> None:
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=_doc("defaults", {}))
    spec = get(cluster, "sx", "defaults", namespace)["spec"]
    assert spec["sweep"] == {
        "batchSizes": [100], "gpus": [1], "repeats": 1, "batchScope": "global",
        "strategy": "grid", "adaptive": {"width": 4, "minPoints": 3},
    }  # fmt: skip
    assert spec["training"]["convergence"] == {"relativeTolerance": 0.001, "stoppingLoss": "full"}
    assert spec["measurement"]["gradientNoiseScale"] is True
    assert spec["workload"]["parameters"] == {}
    assert spec["execution"]["maxGPUs"] == 16


def test_the_trainer_account_may_patch_trial_status_and_store_results_in_its_namespace_only(
    cluster: ControlPlane, operator: Operator, namespace: str
) -> None:
    other = f"{namespace}-other"
    cluster.kubectl("create", "namespace", other)
    spec = {"sweep": {"batchSizes": [8]}, "resources": {"gpusPerProcess": 0},
            "execution": {"maxConcurrentTrials": 1, "maxGPUs": 1}}  # fmt: skip
    # Trials only: keep the stand-in away (queueName suspends the MPIJobs, which it skips).
    spec["execution"]["queueName"] = "nowhere"
    for ns in (namespace, other):
        cluster.kubectl("apply", "-n", ns, "-f", "-", input=_doc("rbac", spec))
    wait_for(
        lambda: (
            cluster.kubectl(
                "get", "sa", "scalelab-trainer", "-n", namespace, check=False
            ).returncode
            == 0
            and cluster.kubectl("get", "st", "rbac-b8-g1", "-n", other, check=False).returncode == 0
        ),
        60,
        "the trainer account and the trials",
    )
    trainer = cluster.service_account_kubeconfig(namespace, "scalelab-trainer")
    # What rank 0 does (trainer/scalelab_trainer/report_status.py): one merge patch, no read.
    api = client.CustomObjectsApi(config.new_client_from_config(config_file=str(trainer)))
    body = {"status": {"progress": {"epoch": 1}}}

    def forbidden(call: Any, *args: Any, **kwargs: Any) -> bool:
        try:
            call(*args, **kwargs)
        except ApiException as e:
            return e.status == 403
        return False

    api.patch_namespaced_custom_object_status(
        G, V, namespace, TRIALS, "rbac-b8-g1", body, _content_type=MERGE
    )
    assert get(cluster, "st", "rbac-b8-g1", namespace)["status"]["progress"]["epoch"] == 1
    assert forbidden(
        api.patch_namespaced_custom_object_status, G, V, other, TRIALS, "rbac-b8-g1", body,
        _content_type=MERGE,
    )  # fmt: skip
    for change in ({"metadata": {"labels": {"x": "y"}}}, {"spec": {"batchSize": 16}}):
        assert forbidden(
            api.patch_namespaced_custom_object, G, V, namespace, TRIALS, "rbac-b8-g1", change,
            _content_type=MERGE,
        )  # fmt: skip
    assert forbidden(  # nor the experiment's status, here or elsewhere
        api.patch_namespaced_custom_object_status, G, V, namespace, "scaleexperiments", "rbac",
        {"status": {"phase": "Succeeded"}}, _content_type=MERGE,
    )  # fmt: skip
    assert forbidden(api.list_namespaced_custom_object, G, V, namespace, TRIALS)
    core = client.CoreV1Api(config.new_client_from_config(config_file=str(trainer)))
    assert forbidden(core.list_namespaced_secret, namespace)
    assert forbidden(core.read_namespaced_secret, "anything", namespace)

    # Rank 0 stores the trial's events (store_results.py): create a ConfigMap owned by its trial,
    # its owner's uid from the patch answer; never read, change or delete one, nor elsewhere.
    answer = api.patch_namespaced_custom_object_status(
        G, V, namespace, TRIALS, "rbac-b8-g1", body, _content_type=MERGE
    )
    owned = store_results.configmap(
        "rbac", "rbac-b8-g1", namespace, answer["metadata"]["uid"], {"events.jsonl.gz": b"x"}
    )
    made = core.create_namespaced_config_map(namespace, owned)
    assert made.metadata.name.startswith("rbac-b8-g1-results-")
    assert made.metadata.owner_references[0].uid == answer["metadata"]["uid"]
    elsewhere = {**owned, "metadata": {**owned["metadata"], "namespace": other}}
    assert forbidden(core.create_namespaced_config_map, other, elsewhere)
    assert forbidden(core.read_namespaced_config_map, made.metadata.name, namespace)
    assert forbidden(core.list_namespaced_config_map, namespace)
    assert forbidden(
        core.patch_namespaced_config_map, made.metadata.name, namespace, {"data": {"a": "b"}}
    )
    assert forbidden(core.delete_namespaced_config_map, made.metadata.name, namespace)
