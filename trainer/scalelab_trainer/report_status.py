"""Out channel 2 of the trial contract: rank 0 merge-patches ScaleTrial.status in a cluster.

`StatusReporter` listens to the trial's events: `epoch` events become a rate-limited
`status.progress` patch, the `result` event becomes `status.result` (always sent, without `config`
and `curves`, which belong to the results, not to the status: store_results.py keeps them). It
remembers the ScaleTrial's uid from the patch answers (the owner of those results). Reporting
never stops training: every failure is logged to stderr and the next event tries again. The
Kubernetes client is loaded from the in-cluster service account, or KUBECONFIG outside one.
Attached by __main__.py.
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

Patch = Callable[[dict[str, Any]], Any]


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
                "updatedAt": datetime.fromtimestamp(event.get("time", time.time()), UTC).strftime(
                    "%Y-%m-%dT%H:%M:%SZ"
                ),
            }
        }
    }


def result_payload(event: dict[str, Any]) -> dict[str, Any]:
    """The merge patch for the `result` event: the result minus config, curves and envelope."""
    return {"status": {"result": {k: v for k, v in event.items() if k not in RESULT_DROP}}}


class StatusReporter:
    """Event listener that turns events into status patches, at most one progress per interval.
    The result patch carries the last epoch's progress when the interval held it back, so a
    finished trial's progress (the EPOCH and LOSS columns) is its last epoch, in the same write."""

    def __init__(
        self, patch: Patch, interval_seconds: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.patch, self.interval, self.clock = patch, interval_seconds, clock
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
        elif kind == "result":
            body = result_payload(event)
            if self.held is not None:
                body["status"].update(progress_payload(self.held)["status"])
            self._send(body)

    def _send(self, body: dict[str, Any]) -> None:
        try:
            answer = self.patch(body)
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
