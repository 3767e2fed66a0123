"""Out channel 2 of the trial contract: rank 0 merge-patches ScaleTrial.status in a cluster.

`StatusReporter` listens to the trial's events: `epoch` events become a rate-limited
`status.progress` patch, and so do `progress` events inside a long epoch (steps, pace and
`updatedAt` only: epoch and loss stay the last finished epoch's); the `result` event becomes
`status.result` (always sent, without `config` and `curves`, which belong to the results, not to the
status: store_results.py keeps them). It remembers the ScaleTrial's uid from the patch answers (the
owner of those results). Reporting never stops training: every failure is logged to stderr and the
next event tries again. The result is the one write that must not be lost (a restarting API server
or etcd must not turn a finished trial into NoResult): it is retried with backoff for up to
RESULT_RETRY_SECONDS, unless the API server refused the body itself (400, 413, 422). The Kubernetes
client is loaded from the in-cluster service account, or KUBECONFIG outside one. Attached by
__main__.py.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

GROUP, VERSION, PLURAL = "scalelab.dev", "v1alpha1", "scaletrials"
RESULT_DROP = ("schema", "event", "time", "experiment", "trial", "config", "curves", "lossSurface")
REQUEST_TIMEOUT_SECONDS = 5  # a slow API server delays training at most this long per patch
#: How long the result's write is retried (an API server or etcd restart takes seconds); well
#: inside any activeDeadlineSeconds, and the operator waits for the result after the MPIJob ends.
RESULT_RETRY_SECONDS = 60.0

Patch = Callable[[dict[str, Any]], Any]


#: Answers a retry cannot change: the body itself is wrong (bad request, too large, invalid).
FINAL_STATUSES = frozenset({400, 413, 422})


def refused_for_good(error: Exception) -> bool:
    """An answer that a retry cannot change (FINAL_STATUSES). Everything else is retried: no
    connection and 5xx (etcd unavailable), 429, and even 401, 403 and 404, which an API server
    gives for seconds after its start (token authenticator, RBAC and the CRDs' routes not
    synced yet: found by the API-server restart test)."""
    status = getattr(error, "status", None)
    return isinstance(status, int) and status in FINAL_STATUSES


def retrying(
    call: Callable[[], Any],
    budget_seconds: float,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> Any:
    """`call()` until it returns, with backoff from 0.5 s to 5 s, for at most `budget_seconds`;
    the last error is raised when the budget is spent or the error is `refused_for_good`."""
    deadline, pause = clock() + budget_seconds, 0.5
    while True:
        try:
            return call()
        except Exception as e:  # whatever the client raises; the caller logs the last one
            left = deadline - clock()
            if refused_for_good(e) or left <= 0:
                raise
            print(f"scalelab_trainer: retrying ({type(e).__name__}: {e})", file=sys.stderr)
            sleep(min(pause, left))
            pause = min(pause * 2, 5.0)


def progress_payload(event: dict[str, Any]) -> dict[str, Any]:
    """The merge patch for an `epoch` event."""
    return {
        "status": {
            "progress": {
                "epoch": event.get("epoch"),
                "steps": event.get("steps"),
                "loss": event.get("loss"),
                "samplesPerSecond": event.get("samplesPerSecond"),
                "trainingSeconds": event.get("trainingSeconds"),
                "stepSeconds": event.get("stepSeconds"),
                "updatedAt": datetime.fromtimestamp(event.get("time", time.time()), UTC).strftime(
                    "%Y-%m-%dT%H:%M:%SZ"
                ),
            }
        }
    }


def in_epoch_payload(event: dict[str, Any]) -> dict[str, Any]:
    """The merge patch for a `progress` event inside an epoch: what changes before its end."""
    progress = progress_payload(event)["status"]["progress"]
    for kept in ("epoch", "loss", "stepSeconds"):  # the last finished epoch's, kept as they are
        del progress[kept]
    return {"status": {"progress": progress}}


def result_payload(event: dict[str, Any]) -> dict[str, Any]:
    """The merge patch for the `result` event: the result minus config, curves and envelope."""
    return {"status": {"result": {k: v for k, v in event.items() if k not in RESULT_DROP}}}


class StatusReporter:
    """Event listener that turns events into status patches, at most one progress per interval.
    The result patch carries the last epoch's progress when the interval held it back, so a
    finished trial's progress (the EPOCH and LOSS columns) is its last epoch, in the same write."""

    def __init__(
        self,
        patch: Patch,
        interval_seconds: float,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        result_retry_seconds: float = RESULT_RETRY_SECONDS,
    ) -> None:
        self.patch, self.interval, self.clock = patch, interval_seconds, clock
        self.sleep, self.result_retry_seconds = sleep, result_retry_seconds
        self.last: float | None = None
        self.held: dict[str, Any] | None = None  # the newest epoch event not yet sent
        self.sent = self.failed = 0
        self.uid: str | None = None  # the ScaleTrial's, from a patch answer (owner of its results)

    def __call__(self, event: dict[str, Any]) -> None:
        kind = event.get("event")
        if kind == "epoch":
            now = self.clock()
            if self.last is not None and now - self.last < self.interval:
                self.held = event
                return
            self.last, self.held = now, None
            self._send(progress_payload(event))
        elif kind == "progress":  # inside an epoch: never held, the epoch's event follows
            now = self.clock()
            if self.last is None or now - self.last >= self.interval:
                self.last = now
                self._send(in_epoch_payload(event))
        elif kind == "result":
            body = result_payload(event)
            if self.held is not None:
                body["status"].update(progress_payload(self.held)["status"])
            self._send(body, self.result_retry_seconds)

    def _send(self, body: dict[str, Any], retry_seconds: float = 0.0) -> None:
        try:
            answer = retrying(lambda: self.patch(body), retry_seconds, self.clock, self.sleep)
            self.sent += 1
            uid = answer.get("metadata", {}).get("uid") if isinstance(answer, dict) else None
            self.uid = uid if isinstance(uid, str) else self.uid
        except Exception as e:  # reporting must never kill training, whatever the client raises
            self.failed += 1
            print(
                f"scalelab_trainer: status patch failed ({type(e).__name__}: {e})", file=sys.stderr
            )


def load_client() -> Any:
    """A Kubernetes API client from the in-cluster service account, or KUBECONFIG outside one."""
    from kubernetes import client, config

    try:
        config.load_incluster_config()  # type: ignore[no-untyped-call]
    except config.ConfigException:
        config.load_kube_config()  # type: ignore[no-untyped-call]
    return client.ApiClient()


def kubernetes_patch(namespace: str, name: str) -> Patch:
    """A merge-patch of scaletrials/status through the in-cluster config or KUBECONFIG; returns
    the patched object (the API's answer)."""
    from kubernetes import client

    api = client.CustomObjectsApi(load_client())

    def patch(body: dict[str, Any]) -> Any:
        return api.patch_namespaced_custom_object_status(
            GROUP,
            VERSION,
            namespace,
            PLURAL,
            name,
            body,
            _content_type="application/merge-patch+json",
            _request_timeout=REQUEST_TIMEOUT_SECONDS,
        )

    return patch
