"""Carries out a reconciliation's `Actions` (kube/state.py) against the Kubernetes API (the only
writer besides kopf itself and the trainer's status patches): the ScaleTrials (`trial_body`),
their MPIJobs (kube/mpijob.py), the trainer account, and status patches.

Every create is idempotent: names are deterministic, and 409 AlreadyExists means an earlier pass
(or an operator that was killed) already made the object, so a restart never duplicates a trial
or an MPIJob. Status writes are JSON merge patches of the `status` subresource. Called from the
kopf handlers in a worker thread (the API client, kube/rest.py, is synchronous).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

from lightkube import ApiError

from scalelab.api import API_VERSION, EXPERIMENT_KIND, GROUP, TRIAL_KIND, VERSION
from scalelab.kube import mpijob, rest
from scalelab.kube.resources import EXPERIMENTS, MPIJOB_GROUP, MPIJOB_VERSION, MPIJOBS, TRIALS
from scalelab.kube.rest import code, path
from scalelab.kube.settings import Config
from scalelab.kube.state import Actions, Memory
from scalelab.planner import PlannedTrial

CONFLICT, NOT_FOUND = 409, 404
T = TypeVar("T")


@dataclass
class Kube:
    """The API clients the operator uses, built once from the loaded configuration."""

    api: rest.Api
    parallelism: int = 8  # concurrent API calls within one step of a pass
    # Told of each API write as it is made, by (verb, resource) as the API server's request
    # metrics name them (the operator's metrics export them, scalelab_operator_api_writes_total:
    # counted per call, as passes of several experiments write at once).
    on_write: Callable[[str, str], None] | None = None

    def __post_init__(self) -> None:
        # One pooled connection per concurrent call (one beyond them is closed after its call).
        self.api.resize(self.parallelism)

    def wrote(self, verb: str, resource: str) -> None:
        """Count one write (the calls of a step run on several threads)."""
        if self.on_write is not None:
            self.on_write(verb, resource)


def _create(kube: Kube, resource: str, where: str, body: Mapping[str, Any]) -> Any:
    """POST `body` to the collection `where`; AlreadyExists is success (returns None)."""
    kube.wrote("create", resource)
    try:
        return kube.api.post(where, body)
    except ApiError as error:
        if code(error) == CONFLICT:
            return None
        raise


def ensure_trainer_account(kube: Kube, namespace: str, config: Config) -> None:
    """The trainer ServiceAccount and its RoleBinding to the trainer ClusterRole (which may only
    patch scaletrials/status and create configmaps) in one namespace; shared by every experiment
    there."""
    name = config.trainer_service_account
    labels = {mpijob.LABEL_MANAGED_BY: mpijob.MANAGED_BY}
    _create(
        kube,
        "serviceaccounts",
        path("", "v1", "serviceaccounts", namespace),
        {"metadata": {"name": name, "labels": labels}},
    )
    _create(
        kube,
        "rolebindings",
        path("rbac.authorization.k8s.io", "v1", "rolebindings", namespace),
        {
            "metadata": {"name": name, "labels": labels},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": config.trainer_cluster_role,
            },
            "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": namespace}],
        },
    )


def patch_experiment_status(
    kube: Kube, namespace: str, name: str, status: Mapping[str, Any]
) -> None:
    """Merge-patch a ScaleExperiment's status."""
    kube.wrote("patch", f"{EXPERIMENTS}/status")
    where = path(GROUP, VERSION, EXPERIMENTS, namespace, name) + "/status"
    kube.api.patch(where, {"status": dict(status)})


def trial_body(trial: PlannedTrial, namespace: str, owner: Mapping[str, Any]) -> dict[str, Any]:
    """The ScaleTrial object of one planned grid point, owned by the experiment."""
    meta = owner.get("metadata") or {}
    return {
        "apiVersion": owner.get("apiVersion", API_VERSION),
        "kind": TRIAL_KIND,
        "metadata": {
            "name": trial.name,
            "namespace": namespace,
            "labels": mpijob.trial_labels(trial),
            "ownerReferences": [
                {
                    "apiVersion": owner.get("apiVersion", API_VERSION),
                    "kind": EXPERIMENT_KIND,
                    "name": meta.get("name"),
                    "uid": meta.get("uid"),
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        },
        "spec": trial.spec.model_dump(by_alias=True, mode="json", exclude_none=True),
    }


def apply(
    kube: Kube,
    actions: Actions,
    namespace: str,
    *,
    owner: Mapping[str, Any],
    memory: Memory,
    config: Config,
) -> None:
    """Create the trials this pass launches, delete the MPIJobs of trials Skipped late, launch
    MPIJobs, create the other trials, patch trial and experiment status, in that order; the calls
    of each step run `kube.parallelism` at a time (a pass over a big grid is API latency bound)."""

    def create_trial(trial: PlannedTrial) -> None:
        made = _create(
            kube, TRIALS, path(GROUP, VERSION, TRIALS, namespace),
            trial_body(trial, namespace, owner),
        )  # fmt: skip
        if made is not None:
            memory.created[trial.name] = str(made["metadata"]["uid"])

    def launch(item: tuple[PlannedTrial, str]) -> None:
        trial, uid = item
        uid = uid or memory.created.get(trial.name, "")
        if not uid:  # created by someone else meanwhile (409): the next pass sees its uid
            memory.launched.discard(trial.name)
            return
        _create(
            kube, MPIJOBS, path(MPIJOB_GROUP, MPIJOB_VERSION, MPIJOBS, namespace),
            mpijob.render(trial, namespace, uid, config),
        )  # fmt: skip

    def patch_trial(item: tuple[str, dict[str, Any]]) -> None:
        name, patch = item
        kube.wrote("patch", f"{TRIALS}/status")
        try:
            kube.api.patch(path(GROUP, VERSION, TRIALS, namespace, name) + "/status",
                           {"status": patch})  # fmt: skip
        except ApiError as error:
            if code(error) != NOT_FOUND:  # deleted meanwhile: the next pass recreates it
                raise
            memory.written.pop(name, None)

    def delete_job(name: str) -> None:
        kube.wrote("delete", MPIJOBS)
        try:
            kube.api.delete(
                path(MPIJOB_GROUP, MPIJOB_VERSION, MPIJOBS, namespace, name),
                params={"propagationPolicy": "Background"},
            )
        except ApiError as error:
            if code(error) != NOT_FOUND:  # already gone: what this call wanted
                raise

    # The trials launched in this pass first, their MPIJobs, then the rest of the trials: the
    # first wave runs while the other trials of a big grid are being created.
    wave = {trial.name for trial, uid in actions.launch if not uid}
    each(kube, create_trial, [t for t in actions.create_trials if t.name in wave])
    each(kube, delete_job, actions.delete_jobs)
    each(kube, launch, actions.launch)
    each(kube, create_trial, [t for t in actions.create_trials if t.name not in wave])
    each(kube, patch_trial, list(actions.trial_status.items()))
    if actions.experiment_status is not None:
        patch_experiment_status(
            kube, namespace, str(owner["metadata"]["name"]), actions.experiment_status
        )


def each(kube: Kube, fn: Callable[[T], None], items: Sequence[T]) -> None:
    """fn over items, `kube.parallelism` at a time; the first error is raised after all ran."""
    if len(items) <= 1:
        for item in items:
            fn(item)
        return
    with ThreadPoolExecutor(max_workers=min(kube.parallelism, len(items))) as pool:
        futures = [pool.submit(fn, item) for item in items]
    errors = [f.exception() for f in futures if f.exception() is not None]
    if errors:
        raise errors[0]  # type: ignore[misc]


def _owned(kube: Kube, collection: str, selector: str, owners: set[str]) -> dict[str, str]:
    """Name -> uid of the objects in `collection` matching `selector` that one of `owners`
    (uids) owns, listed a page at a time."""
    found: dict[str, str] = {}
    for page in kube.api.pages(collection, {"labelSelector": selector}):
        for item in page:
            meta = item.get("metadata") or {}
            if any(ref.get("uid") in owners for ref in meta.get("ownerReferences") or []):
                found[str(meta.get("name"))] = str(meta.get("uid"))
    return found


def retire(kube: Kube, namespace: str, experiment: str, uid: str) -> int:
    """Label the ScaleTrials and MPIJobs of the finished experiment `namespace/experiment`
    (uid `uid`) with mpijob.LABEL_ARCHIVED, which the operator's watches leave out: they leave
    its indexes (the API server sends a watch that no longer matches a DELETED event) and a
    restarted operator never lists them. Call it once the results archive exists. The MPIJobs
    go first: a retry after a failure finds the rest by their trials, which go last. Returns
    how many objects it labelled."""
    selector = ",".join((
        f"{mpijob.LABEL_EXPERIMENT}={experiment}",
        f"{mpijob.LABEL_MANAGED_BY}={mpijob.MANAGED_BY}",
        f"!{mpijob.LABEL_ARCHIVED}",
    ))  # fmt: skip
    trials = path(GROUP, VERSION, TRIALS, namespace)
    mine = _owned(kube, trials, selector, {uid})
    jobs = path(MPIJOB_GROUP, MPIJOB_VERSION, MPIJOBS, namespace)
    try:
        theirs = _owned(kube, jobs, selector, set(mine.values()))
    except ApiError as error:
        if code(error) != NOT_FOUND:
            raise
        theirs = {}  # no MPIJob API (any more): nothing of that kind to label
    labels = {"metadata": {"labels": {mpijob.LABEL_ARCHIVED: "true"}}}

    def label(resource: str, collection: str) -> Callable[[str], None]:
        def call(name: str) -> None:
            kube.wrote("patch", resource)
            try:
                kube.api.patch(f"{collection}/{name}", labels)
            except ApiError as error:
                if code(error) != NOT_FOUND:  # deleted meanwhile: nothing left to hold
                    raise

        return call

    each(kube, label(MPIJOBS, jobs), list(theirs))
    each(kube, label(TRIALS, trials), list(mine))
    return len(theirs) + len(mine)
