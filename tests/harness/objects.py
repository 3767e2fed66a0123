"""Reading Kubernetes objects through the harness's kubectl, and waiting on them; shared by the
cluster and node tiers."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

from tests.harness.controlplane import ControlPlane


def get(cp: ControlPlane, kind: str, name: str, namespace: str) -> dict[str, Any]:
    """One object as JSON (admin)."""
    out = cp.kubectl("get", kind, name, "-n", namespace, "-o", "json").stdout
    obj: dict[str, Any] = json.loads(out)
    return obj


def items(cp: ControlPlane, kind: str, namespace: str, *selector: str) -> list[dict[str, Any]]:
    """Every object of a kind in a namespace (admin), optionally `-l SELECTOR`."""
    out = cp.kubectl("get", kind, "-n", namespace, *selector, "-o", "json").stdout
    found: list[dict[str, Any]] = json.loads(out)["items"]
    return found


def experiment_condition(
    cp: ControlPlane, name: str, namespace: str, kind: str
) -> dict[str, Any] | None:
    """The ScaleExperiment's condition of type `kind`, None while it has none."""
    status = get(cp, "scaleexperiment", name, namespace).get("status") or {}
    return next((c for c in status.get("conditions") or [] if c["type"] == kind), None)


def wait_for(
    check: Callable[[], Any],
    timeout: float,
    what: str,
    interval: float = 0.5,
    seen: Any = None,
) -> Any:
    """Poll until `check()` returns something truthy; return it (or fail with `what`, and with
    `seen`: what the check recorded of the state it last looked at)."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval)
    state = f"; seen: {seen!r}" if seen is not None else ""
    raise AssertionError(
        f"timed out after {timeout:.0f} s waiting for {what} (last: {last!r}){state}"
    )
