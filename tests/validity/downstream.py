"""Nothing bad gets in: what a spec the CLI accepts becomes downstream (a trial's MPIJob pods,
its labels, its PriorityClass) must be acceptable to the API server where it ends up, so an
accepted spec never fails later at MPIJob or pod creation, far from the user."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from scalelab.kube import mpijob
from scalelab.kube.settings import Config
from scalelab.planner import plan
from scalelab.validation import parse_experiment

Object = tuple[str, dict[str, Any]]


def downstream(document: dict[str, Any]) -> list[Object]:
    """(kind, object) of what the operator would create for the first runnable trial: the
    launcher and worker pods of its MPIJob, a ConfigMap carrying the MPIJob's name and labels
    (the Kueue queue label too), and the PriorityClass the pods name (the pods go without it:
    admission would refuse a class this control plane does not have)."""
    experiment = parse_experiment(document)
    trial = next(t for t in plan(experiment) if not t.skipped)
    job = mpijob.render(trial, "default", "0000", Config())
    out: list[Object] = []
    for role, replica in job["spec"]["mpiReplicaSpecs"].items():
        spec = {k: v for k, v in replica["template"]["spec"].items() if k != "priorityClassName"}
        meta = {"name": f"{trial.name}-{role.lower()}", **replica["template"]["metadata"]}
        out.append(("Pod", {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": spec}))
    meta = {"name": job["metadata"]["name"], "labels": job["metadata"]["labels"]}
    out.append(("ConfigMap", {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta}))
    if trial.spec.resources.priority_class_name:
        meta = {"name": trial.spec.resources.priority_class_name}
        priority = {"apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass", "value": 1}
        out.append(("PriorityClass", {**priority, "metadata": meta}))
    return out


def _refusal(api: client.ApiClient, kind: str, body: dict[str, Any]) -> str:
    core, scheduling = client.CoreV1Api(api), client.SchedulingV1Api(api)
    create = {
        "Pod": lambda: core.create_namespaced_pod("default", body, dry_run="All"),
        "ConfigMap": lambda: core.create_namespaced_config_map("default", body, dry_run="All"),
        "PriorityClass": lambda: scheduling.create_priority_class(body, dry_run="All"),
    }[kind]
    try:
        create()
    except ApiException as error:
        return f"{kind} {body['metadata']['name']}: {error.status} {error.body}"
    return ""


def refusals(api: client.ApiClient, documents: list[dict[str, Any]]) -> list[str]:
    """What the API server refuses of the downstream objects of accepted `documents`."""
    objects = [obj for d in documents for obj in downstream(d)]
    with ThreadPoolExecutor(max_workers=8) as pool:
        found = list(pool.map(lambda o: _refusal(api, *o), objects))
    return [f for f in found if f]
