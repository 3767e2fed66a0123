"""What an experiment needs from the cluster before its trials can run, checked where the API can
say: the MPIJob API (the Kubeflow MPI operator's CRD), the Kueue API when `queueName` is set, and
the trainer's ServiceAccount in the experiment's namespace (recreated when it went missing).

A missing prerequisite is not an error of the operator: the pass goes on and the experiment says
what is missing and how to install it (reconcile.py turns `Missing` into a condition, an Event,
the trials' reason and a metric); without the MPIJob API or the trainer account no MPIJob is
created, without Kueue they are created suspended as usual, for Kueue to admit once installed.
Answers are cached: a served API for `SCALELAB_PREREQUISITES_RECHECK_SECONDS` (60); a missing
one is asked again after a delay that doubles from 5 s up to that, so a cluster without the MPI
operator costs one discovery request a minute, not an error every few seconds. A 404 on an
MPIJob create forgets the cached answer.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from scalelab.api import ScaleExperiment
from scalelab.kube import mpijob
from scalelab.kube.apply import NOT_FOUND, Kube, ensure_trainer_account
from scalelab.kube.reconcile import Missing
from scalelab.kube.settings import Config

FIRST_RETRY_SECONDS = 5.0
KUEUE_GROUP = "kueue.x-k8s.io"

MPIJOB_API = Missing(
    "mpijob-api",
    "MPIJobAPIMissing",
    f"the MPIJob API ({mpijob.MPIJOB_API_VERSION} {mpijob.MPIJOB_PLURAL}) is not served: install "
    "the Kubeflow MPI operator v2 (its CRD and controller; tested with v0.8.0; README.md, "
    "Install on a cluster); the trials start once it is there",
)
KUEUE_API = Missing(
    "kueue-api",
    "KueueAPIMissing",
    f"spec.execution.queueName is set but the Kueue API ({KUEUE_GROUP}) is not served: install "
    "Kueue and create the LocalQueue (the suspended MPIJobs are admitted then), or remove "
    "queueName to run without Kueue",
    blocks=False,
)


def trainer_account(namespace: str, name: str, why: str) -> Missing:
    """The trainer ServiceAccount is missing in `namespace` and could not be created."""
    return Missing(
        "trainer-account",
        "TrainerAccountMissing",
        f"namespace {namespace} has no ServiceAccount {name} for the trainer pods and the "
        f"operator could not create it ({why}): grant the operator create on serviceaccounts "
        f"and rolebindings there, or create it and its RoleBinding to the ClusterRole "
        f"scalelab-trainer (manifests/README.md)",
    )


@dataclass
class _Answer:
    ok: bool
    asked: float
    retry: float  # seconds until the next question


@dataclass
class Prerequisites:
    """Cached answers (per question) of one operator process."""

    recheck_seconds: float = 60.0  # trust in a served answer; longest wait to ask again
    clock: Callable[[], float] = time.monotonic
    answers: dict[str, _Answer] = field(default_factory=dict)

    def _ask(self, key: str, question: Callable[[], bool]) -> bool:
        now, old = self.clock(), self.answers.get(key)
        if old is not None and now - old.asked < old.retry:
            return old.ok
        ok = question()
        if ok:
            retry = self.recheck_seconds
        else:
            retry = 2 * old.retry if old and not old.ok else FIRST_RETRY_SECONDS
            retry = min(self.recheck_seconds, retry)
        self.answers[key] = _Answer(ok, now, retry)
        return ok

    def forget(self, key: str) -> None:
        """Ask again on the next check (a create said the API is gone)."""
        self.answers.pop(key, None)

    def missing(
        self, kube: Kube, experiment: ScaleExperiment, namespace: str, config: Config
    ) -> list[Missing]:
        """What `experiment` lacks in `namespace`, in the order a person should fix it."""
        out: list[Missing] = []
        if not self._ask(
            MPIJOB_API.key, lambda: served(kube, mpijob.MPIJOB_API_VERSION, "mpijobs")
        ):
            out.append(MPIJOB_API)
        if experiment.spec.execution.queue_name is not None and not self._ask(
            KUEUE_API.key, lambda: group_served(kube, KUEUE_GROUP)
        ):
            out.append(KUEUE_API)
        why: list[str] = []
        key = f"trainer-account/{namespace}"
        if not self._ask(key, lambda: _account(kube, namespace, config, why)):
            out.append(trainer_account(namespace, config.trainer_service_account, "; ".join(why)))
        return out


def served(kube: Kube, group_version: str, plural: str) -> bool:
    """Whether the API server serves `plural` in `group_version` (discovery; any user may ask)."""
    group, version = group_version.split("/")
    try:
        found = kube.custom.get_api_resources(group, version)
    except ApiException as error:
        if error.status == NOT_FOUND:
            return False
        raise
    return any(r.name == plural for r in found.resources or [])


def group_served(kube: Kube, group: str) -> bool:
    """Whether the API server serves any version of `group`."""
    groups = client.ApisApi(kube.api).get_api_versions().groups or []
    return any(g.name == group for g in groups)


def _account(kube: Kube, namespace: str, config: Config, why: list[str]) -> bool:
    """The trainer account exists (created again here if it went missing)."""
    try:
        kube.core.read_namespaced_service_account(config.trainer_service_account, namespace)
        return True
    except ApiException as error:
        if error.status != NOT_FOUND:
            raise
    try:
        ensure_trainer_account(kube, namespace, config)
    except ApiException as error:
        why.append(f"{error.status} {error.reason}")
        return False
    return True
