"""What an experiment needs from the cluster before its trials can run, checked where the API can
say: the MPIJob API (the Kubeflow MPI operator's CRD), the Kueue API when its trials go through a
LocalQueue (`queueName`, or the operator's default queue), and the trainer's ServiceAccount in
the experiment's namespace (recreated when it went missing).

kube/operations.py asks `Prerequisites.missing` once per pass. A missing prerequisite is not an
error of the operator: the pass goes on and the experiment says what is missing and how to
install it (kube/decide.py and kube/status.py turn `Missing` into a condition, an Event, the
trials' reason and a metric); without the MPIJob API or the trainer account no MPIJob is
created, without Kueue they are created suspended as usual, for Kueue to admit once installed.
Answers are cached: a served API for `SCALELAB_PREREQUISITES_RECHECK_SECONDS` (60); a missing
one is asked again after a delay that doubles from 5 s up to that, so a cluster without the MPI
operator costs one discovery request a minute, not an error every few seconds. A 404 on an
MPIJob create forgets the cached answer.

The trainer image is the one prerequisite only a node can judge. The operator may not read pods
(docs/design-changes.md), and the MPI operator says nothing of image pulls (v0.8.0 leaves the
MPIJob Created), so it reads what the kubelet tells everyone who may list Events: while a trial's
MPIJob is Created and not Running, the namespace's recent Warning Events on that MPIJob's pods
(`<trial>-launcher-…`, `<trial>-worker-…`) are asked, at most once per `IMAGE_CHECK_SECONDS`, for
a failed pull (`Failed to pull image "…"`, `ErrImageNeverPull`, `InspectFailed`). One found
names the image and the trial, and holds further launches (they would fail the same way) until
the pods run.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from lightkube import ApiError

from scalelab.api import ScaleExperiment
from scalelab.kube.apply import NOT_FOUND, Kube, ensure_trainer_account
from scalelab.kube.observed import Missing
from scalelab.kube.resources import KUEUE_GROUP, MPIJOB_API_VERSION, MPIJOBS
from scalelab.kube.rest import code, path, reason
from scalelab.kube.settings import Config

FIRST_RETRY_SECONDS = 5.0
#: A namespace's Events are asked for failed image pulls at most this often (while a trial waits).
IMAGE_CHECK_SECONDS = 10.0
#: Older kubelet Events are history (a pull that failed before and may work now).
IMAGE_EVENT_MAX_AGE_SECONDS = 600.0
#: The image named by the kubelet's Warning Events of a failed pull (kubelet 1.36,
#: pkg/kubelet/images/image_manager.go): reason Failed 'Failed to pull image "…": <error>',
#: ErrImageNeverPull 'Container image "…" is not present with pull policy of Never',
#: InspectFailed 'Failed to inspect image "…"' or 'Failed to apply default image tag "…"'.
#: ('Back-off pulling image "…"' is a Normal Event there; the Failed one repeats at each try.)
PULL_FAILED = re.compile(r'image(?: tag)? "(?P<image>[^"]+)"')

MPIJOB_API = Missing(
    "mpijob-api",
    "MPIJobAPIMissing",
    f"the MPIJob API ({MPIJOB_API_VERSION} {MPIJOBS}) is not served: install "
    "the Kubeflow MPI operator v2 (its CRD and controller; tested with v0.8.2; README.md, "
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
#: The same, for an experiment without queueName that the operator's default queue sends
#: through Kueue.
DEFAULT_QUEUE_KUEUE_API = Missing(
    KUEUE_API.key,
    KUEUE_API.reason,
    "the operator's default queue (SCALELAB_DEFAULT_QUEUE_NAME) is set but the Kueue API "
    f"({KUEUE_GROUP}) is not served: install Kueue and create that LocalQueue in this namespace "
    "(the suspended MPIJobs are admitted then), or unset SCALELAB_DEFAULT_QUEUE_NAME in the "
    "operator's Deployment to run without Kueue",
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


def unpullable_image(
    events: Iterable[Mapping[str, Any]], trials: Collection[str], now: float
) -> Missing | None:
    """The kubelet's recent Warning Events saying that a pod of one of `trials` (MPIJobs waiting
    for their pods) cannot pull its image, as one blocking `Missing` naming image and trials."""
    found: dict[str, str] = {}  # trial → "image" (kubelet's reason: its message)
    for event in events:
        obj = event.get("involvedObject") or {}
        trial = _trial_of(str(obj.get("name") or ""), trials)
        message = str(event.get("message") or "")
        match = PULL_FAILED.search(message)
        if obj.get("kind") != "Pod" or trial is None or trial in found or match is None:
            continue
        if event.get("reason") not in ("Failed", "BackOff", "ErrImageNeverPull", "InspectFailed"):
            continue
        seen = _event_time(event)
        if seen is not None and now - seen > IMAGE_EVENT_MAX_AGE_SECONDS:
            continue
        image = match.group("image")
        found[trial] = f'"{image}" ({event.get("reason")}: {message[:300]})'
    if not found:
        return None
    names = sorted(found)
    return Missing(
        "trainer-image",
        "TrainerImageUnpullable",
        f"the pods of trial {names[0]} cannot pull image {found[names[0]]}"
        + (f", and those of {len(names) - 1} more trial(s)" if len(names) > 1 else "")
        + ": push the image or correct spec.resources.image (the operator's trainer image "
        "when unset), and give the namespace an imagePullSecret if the registry needs one; "
        "the trial starts once its image is pulled, the others wait until then",
        trials=tuple(names),
    )


def _trial_of(pod: str, trials: Collection[str]) -> str | None:
    """The trial whose MPIJob made this pod (`<job>-launcher-<hash>`, `<job>-worker-<i>`)."""
    for role in ("-launcher-", "-worker-"):
        head, sep, _ = pod.rpartition(role)
        if sep and head in trials:
            return head
    return None


def _event_time(event: Mapping[str, Any]) -> float | None:
    """When an Event was last seen (series, lastTimestamp, eventTime), seconds since the epoch."""
    series = event.get("series") or {}
    for value in (series.get("lastObservedTime"), event.get("lastTimestamp"),
                  event.get("eventTime")):  # fmt: skip
        if isinstance(value, str) and value:
            return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    return None


def pod_warnings(kube: Kube, namespace: str) -> list[dict[str, Any]]:
    """The namespace's Warning Events about pods (list on events; no read of pods)."""
    answer = kube.api.get(
        path("", "v1", "events", namespace),
        params={"fieldSelector": "type=Warning,involvedObject.kind=Pod"},
    )
    found: list[dict[str, Any]] = answer["items"]
    return found


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
    images: dict[str, tuple[float, Missing | None]] = field(default_factory=dict)  # namespace →

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

    def image(self, kube: Kube, namespace: str, starting: Collection[str]) -> Missing | None:
        """A failed image pull of one of the `starting` trials (MPIJob Created, not Running),
        from the namespace's Events asked at most every IMAGE_CHECK_SECONDS."""
        if not starting:
            return None
        now, old = self.clock(), self.images.get(namespace)
        if old is None or now - old[0] >= IMAGE_CHECK_SECONDS:
            events = pod_warnings(kube, namespace)
            old = (now, unpullable_image(events, set(starting), time.time()))
            self.images[namespace] = old
        found = old[1]
        if found is None or not set(found.trials) & set(starting):
            return None  # its trials run now (or are gone)
        return found

    def missing(
        self,
        kube: Kube,
        experiment: ScaleExperiment,
        namespace: str,
        config: Config,
        starting: Collection[str] = (),
    ) -> list[Missing]:
        """What `experiment` lacks in `namespace`, in the order a person should fix it;
        `starting` are its trials whose MPIJob waits for its pods."""
        out: list[Missing] = []
        if not self._ask(MPIJOB_API.key, lambda: served(kube, MPIJOB_API_VERSION, MPIJOBS)):
            out.append(MPIJOB_API)
        queued = config.local_queue(experiment.spec.execution) is not None
        if queued and not self._ask(KUEUE_API.key, lambda: group_served(kube, KUEUE_GROUP)):
            # The message says where the queue came from, so it says what to change.
            named = experiment.spec.execution.queue_name is not None
            out.append(KUEUE_API if named else DEFAULT_QUEUE_KUEUE_API)
        why: list[str] = []
        key = f"trainer-account/{namespace}"
        if not self._ask(key, lambda: _account(kube, namespace, config, why)):
            out.append(trainer_account(namespace, config.trainer_service_account, "; ".join(why)))
        image = self.image(kube, namespace, starting)
        if image is not None:
            out.append(image)
        return out


def served(kube: Kube, group_version: str, plural: str) -> bool:
    """Whether the API server serves `plural` in `group_version` (discovery; any user may ask)."""
    group, version = group_version.split("/")
    try:
        found = kube.api.get(f"/apis/{group}/{version}")
    except ApiError as error:
        if code(error) == NOT_FOUND:
            return False
        raise
    return any(r.get("name") == plural for r in found.get("resources") or [])


def group_served(kube: Kube, group: str) -> bool:
    """Whether the API server serves any version of `group`."""
    groups = kube.api.get("/apis").get("groups") or []
    return any(g.get("name") == group for g in groups)


def _account(kube: Kube, namespace: str, config: Config, why: list[str]) -> bool:
    """The trainer account exists (created again here if it went missing)."""
    try:
        kube.api.get(path("", "v1", "serviceaccounts", namespace, config.trainer_service_account))
        return True
    except ApiError as error:
        if code(error) != NOT_FOUND:
            raise
    try:
        ensure_trainer_account(kube, namespace, config)
    except ApiError as error:
        why.append(f"{code(error)} {reason(error)}")
        return False
    return True
