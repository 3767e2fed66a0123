"""Where Kueue's queue holds a trial: its position among the pending workloads of its LocalQueue
and of the ClusterQueue behind it, read from Kueue's visibility API
(`visibility.kueue.x-k8s.io/v1beta2`, the `pendingworkloads` of a LocalQueue).

Kueue's Workload objects say why a workload waits ("insufficient unused quota ...") but not how
many are ahead of it; only the visibility API, which Kueue's manager serves as an aggregated API
(on by default since Kueue v0.9, feature gate VisibilityOnDemand), knows the queue's order. A
trial held by Kueue shows it: "waiting for Kueue quota (position 2 of 3 in LocalQueue team, 4 in
ClusterQueue team-a): ...".

`read_positions` is the one API call (a GET; the operator's ClusterRole grants `get` on
`localqueues/pendingworkloads`); it answers {} where the API is not served or not allowed, so the
reason simply goes without a position. `positions` and `with_position` are pure: kube/decide.py
puts the position into the reason of each trial Kueue holds for quota.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from lightkube import ApiError
from msgspec import DecodeError

from scalelab.kube import rest
from scalelab.kube.observed import KUEUE_WAITING
from scalelab.kube.resources import MPIJOB_GROUP

GROUP, VERSION = "visibility.kueue.x-k8s.io", "v1beta2"
PATH = f"/apis/{GROUP}/{VERSION}/namespaces/{{namespace}}/localqueues/{{name}}/pendingworkloads"


@dataclass(frozen=True)
class Position:
    """One pending workload's place (1 = next) in its LocalQueue and its ClusterQueue."""

    local_queue: str
    in_local_queue: int
    of_local_queue: int
    in_cluster_queue: int

    def describe(self) -> str:
        """The words a trial's reason carries, e.g. "position 2 of 3 in LocalQueue team, 4 in
        its ClusterQueue"."""
        return (
            f"position {self.in_local_queue} of {self.of_local_queue} in LocalQueue "
            f"{self.local_queue}, {self.in_cluster_queue} in its ClusterQueue"
        )


def _owner_job(meta: Mapping[str, Any]) -> str | None:
    """The name of the MPIJob owning a pending workload (its trial's name), else None."""
    for ref in meta.get("ownerReferences") or []:
        if ref.get("kind") == "MPIJob" and str(ref.get("apiVersion", "")).startswith(
            f"{MPIJOB_GROUP}/"
        ):
            return str(ref.get("name"))
    return None


def positions(summary: Mapping[str, Any], local_queue: str) -> dict[str, Position]:
    """The positions in a PendingWorkloadsSummary, by the name of the MPIJob owning each
    workload (Kueue counts from 0; a person from 1)."""
    items = [i for i in summary.get("items") or [] if isinstance(i, Mapping)]
    out: dict[str, Position] = {}
    for item in items:
        job = _owner_job(item.get("metadata") or {})
        if job is None:
            continue
        out[job] = Position(
            local_queue=local_queue,
            in_local_queue=int(item.get("positionInLocalQueue") or 0) + 1,
            of_local_queue=len(items),
            in_cluster_queue=int(item.get("positionInClusterQueue") or 0) + 1,
        )
    return out


def with_position(reason: str, position: Position | None) -> str:
    """A held trial's reason with its place in the queue: "waiting for Kueue quota (position 2
    of 3 in LocalQueue team, 2 in its ClusterQueue): <Kueue's message>". Other reasons, and a
    trial the visibility API does not list, are unchanged."""
    if position is None or not reason.startswith(KUEUE_WAITING):
        return reason
    return f"{KUEUE_WAITING} ({position.describe()}){reason.removeprefix(KUEUE_WAITING)}"


def read_positions(
    api: rest.Api, namespace: str, local_queue: str, limit: int = 1000
) -> dict[str, Position]:
    """GET the pending workloads of one LocalQueue (the first `limit`, Kueue's own page size);
    {} where the visibility API is not served (404, 503: Kueue without it, or not installed)
    or the operator may not read it (403), or answers no JSON."""
    url = PATH.format(namespace=namespace, name=local_queue)
    try:
        summary: Any = api.get(url, params={"limit": limit}, timeout=10)
    except (ApiError, DecodeError):
        return {}
    return positions(summary if isinstance(summary, Mapping) else {}, local_queue)
