"""Leader election on a coordination.k8s.io/v1 Lease, so that one of several operator replicas
acts and the others stand by (docs/operator-ha.md).

The semantics are client-go's leaderelection: a candidate may take the Lease when it has no
holder, or when the record it last read has not changed for the record's leaseDurationSeconds
by the candidate's own monotonic clock (so no two clocks are compared); the holder renews every
retry period and stops acting when it has not renewed for the renew deadline, which is shorter
than the lease duration, so it has stopped before any standby may take over. A holder that shuts
down gracefully releases the Lease (clears holderIdentity) and the standby takes it at its next
attempt. The decisions are pure functions of the record and a clock (unit-tested with a fake
one); `KubeLeases` is the only part that talks to the API server.

Used by kube/main.py: `scalelab operator --leader-elect` waits in `Elector.acquire`, serving
`StandbyHealth` and the `leader_gauge` meanwhile, then runs kopf while `Elector.keep` renews.
"""

from __future__ import annotations

import logging
import secrets
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Protocol

from lightkube import ApiError
from prometheus_client import CollectorRegistry, Gauge

from scalelab.kube import rest
from scalelab.kube.rest import code

log = logging.getLogger(__name__)

CONFLICT, NOT_FOUND = 409, 404
#: leaseDurationSeconds of a released Lease, as client-go writes it (no holder: takeable anyway).
RELEASED_SECONDS = 1


@dataclass(frozen=True)
class Timing:
    """How long a Lease lasts unrenewed, when its holder gives up, and how often to try."""

    lease_seconds: int = 10
    renew_deadline_seconds: float = 7.0
    retry_seconds: float = 2.0

    def __post_init__(self) -> None:
        # A holder still acting when a standby may take over would make two active replicas.
        if not 0 < self.renew_deadline_seconds < self.lease_seconds:
            raise ValueError("the renew deadline must be positive and shorter than the lease")


@dataclass(frozen=True)
class Record:
    """A Lease's spec: who holds it, for how long unrenewed, and since when."""

    holder: str = ""
    lease_seconds: int = 0
    acquired: str | None = None  # MicroTime text, as written
    renewed: str | None = None
    transitions: int = 0


@dataclass(frozen=True)
class Seen:
    """The record a candidate last read, and when it first read it (its monotonic clock)."""

    record: Record
    at: float


def identity(pod_name: str, suffix: str | None = None) -> str:
    """The holder identity: the pod's name (or host name) and a random suffix, so that a
    restarted container of the same pod is a new candidate, never mistaken for the old holder."""
    return f"{pod_name or socket.gethostname()}_{suffix or secrets.token_hex(4)}"


def micro_time(moment: datetime) -> str:
    """A MicroTime as the API server writes it (RFC 3339, six fractional digits, UTC)."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def observe(seen: Seen | None, record: Record, now: float) -> Seen:
    """What a candidate knows after reading `record` at `now`: the expiry clock restarts only
    when the record changed (a renewal changes renewTime)."""
    if seen is not None and seen.record == record:
        return seen
    return Seen(record, now)


def expired(seen: Seen, now: float) -> bool:
    """The record has not changed for its lease duration: its holder is presumed gone."""
    return now >= seen.at + seen.record.lease_seconds


def may_take(seen: Seen, me: str, now: float) -> bool:
    """A candidate may write itself into the Lease: no holder, already us, or expired."""
    holder = seen.record.holder
    return not holder or holder == me or expired(seen, now)


def claim(current: Record | None, me: str, lease_seconds: int, stamp: str) -> Record:
    """The record that makes `me` the holder: a renewal keeps acquireTime; a takeover counts a
    transition."""
    if current is None:
        return Record(me, lease_seconds, stamp, stamp, 0)
    if current.holder == me:
        return replace(current, lease_seconds=lease_seconds, renewed=stamp)
    return Record(me, lease_seconds, stamp, stamp, current.transitions + 1)


def released(current: Record, stamp: str) -> Record:
    """The record a holder leaves when it stops: no holder, so a standby takes it at once."""
    return replace(
        current, holder="", lease_seconds=RELEASED_SECONDS, acquired=stamp, renewed=stamp
    )


class Leases(Protocol):
    """Where the Lease lives: the API server (`KubeLeases`), or a dict in the unit tests."""

    def get(self, timeout: float) -> tuple[Record, str] | None:
        """The record and its resourceVersion; None when there is no Lease."""
        ...

    def create(self, record: Record, timeout: float) -> bool:
        """False when another candidate created it first."""
        ...

    def update(self, record: Record, version: str, timeout: float) -> bool:
        """False when it changed since `version` was read."""
        ...


def _micro_time(value: Any) -> str | None:
    """A Lease's MicroTime as `micro_time` writes it (None when unset)."""
    if not value:
        return None
    return micro_time(datetime.fromisoformat(str(value).replace("Z", "+00:00")))


class KubeLeases:
    """One named Lease through the operator's own API client (kube/rest.py)."""

    def __init__(self, api: rest.Api, name: str, namespace: str) -> None:
        self.api = api
        self.name, self.namespace = name, namespace
        self.collection = rest.path("coordination.k8s.io", "v1", "leases", namespace)

    def get(self, timeout: float) -> tuple[Record, str] | None:
        try:
            lease = self.api.get(f"{self.collection}/{self.name}", timeout=timeout)
        except ApiError as error:
            if code(error) == NOT_FOUND:
                return None
            raise
        spec, meta = lease.get("spec") or {}, lease.get("metadata") or {}
        record = Record(
            holder=spec.get("holderIdentity") or "",
            lease_seconds=spec.get("leaseDurationSeconds") or 0,
            acquired=_micro_time(spec.get("acquireTime")),
            renewed=_micro_time(spec.get("renewTime")),
            transitions=spec.get("leaseTransitions") or 0,
        )
        return record, str(meta.get("resourceVersion"))

    def create(self, record: Record, timeout: float) -> bool:
        try:
            self.api.post(self.collection, self._body(record, None), timeout=timeout)
        except ApiError as error:
            if code(error) == CONFLICT:
                return False
            raise
        return True

    def update(self, record: Record, version: str, timeout: float) -> bool:
        try:
            self.api.put(
                f"{self.collection}/{self.name}", self._body(record, version), timeout=timeout
            )
        except ApiError as error:
            if code(error) == CONFLICT:  # someone else wrote it since we read it
                return False
            raise
        return True

    def _body(self, record: Record, version: str | None) -> Any:
        """The Lease as a dict, sent as is: MicroTime text exactly as the API server parses it
        (a datetime's isoformat would drop zero microseconds)."""
        metadata: dict[str, str] = {"name": self.name, "namespace": self.namespace}
        if version is not None:  # optimistic concurrency: the write fails if the Lease moved
            metadata["resourceVersion"] = version
        return {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": metadata,
            "spec": {
                "holderIdentity": record.holder,
                "leaseDurationSeconds": record.lease_seconds,
                "acquireTime": record.acquired,
                "renewTime": record.renewed,
                "leaseTransitions": record.transitions,
            },
        }


def _utcnow() -> datetime:
    return datetime.now(UTC)


class Elector:
    """One candidate: `acquire` until it holds the Lease, `keep` it renewed, `release` it."""

    def __init__(
        self,
        leases: Leases,
        me: str,
        timing: Timing,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], datetime] = _utcnow,
    ) -> None:
        self.leases, self.me, self.timing = leases, me, timing
        self.clock, self.wall = clock, wall
        self.seen: Seen | None = None
        self.renewed_at: float | None = None  # our clock before our last successful write

    def attempt(self, timeout: float) -> bool:
        """One try to acquire or renew; True when we hold the Lease now. API errors are a
        failed try (the API server may be restarting)."""
        now = self.clock()  # before the write: the deadline counts from no later than it
        try:
            found = self.leases.get(timeout)
            stamp = micro_time(self.wall())
            if found is None:
                record = claim(None, self.me, self.timing.lease_seconds, stamp)
                if not self.leases.create(record, timeout):
                    return False
            else:
                current, version = found
                self.seen = observe(self.seen, current, now)
                if not may_take(self.seen, self.me, now):
                    return False
                record = claim(current, self.me, self.timing.lease_seconds, stamp)
                if not self.leases.update(record, version, timeout):
                    return False
        except Exception as error:  # any failure to reach the API: a failed try
            log.warning("lease %s: %s", "renew" if self.renewed_at else "acquire", error)
            return False
        if self.renewed_at is None or (self.seen and self.seen.record.holder != self.me):
            log.info("acquired the lease as %s", self.me)
        self.seen, self.renewed_at = Seen(record, now), now
        return True

    def holder(self) -> str:
        """The holder as last read ('' when none or not read yet)."""
        return self.seen.record.holder if self.seen else ""

    def acquire(self, stop: threading.Event) -> bool:
        """Try every retry period until we hold the Lease (True) or `stop` is set (False)."""
        log.info("standing by for the lease as %s", self.me)
        while not self.attempt(self.timing.retry_seconds):
            if stop.wait(self.timing.retry_seconds):
                return False
        return True

    def keep(self, stop: threading.Event) -> bool:
        """Renew every retry period until `stop` is set (False) or leadership is lost (True):
        another candidate holds the Lease, or no renewal succeeded for the renew deadline."""
        assert self.renewed_at is not None, "keep() before acquire()"
        while not stop.wait(self.timing.retry_seconds):
            left = self.timing.renew_deadline_seconds - (self.clock() - self.renewed_at)
            # Each call's timeout is short enough that a hung API server cannot hold the loop
            # past the deadline (a call may spend it connecting and again reading).
            if left > 0 and self.attempt(max(0.1, min(self.timing.retry_seconds, left / 4))):
                continue
            holder = self.holder()
            if holder and holder != self.me:
                log.error("lost the lease: %s holds it", holder)
                return True
            if self.clock() - self.renewed_at >= self.timing.renew_deadline_seconds:
                log.error("lost the lease: not renewed for %.1f s", self.clock() - self.renewed_at)
                return True
        return False

    def release(self) -> None:
        """Clear holderIdentity if we hold the Lease, so a standby takes over at once (a
        failure only means the standby waits for the lease duration)."""
        if self.renewed_at is None:
            return
        try:
            found = self.leases.get(self.timing.retry_seconds)
            if found is None or found[0].holder != self.me:
                return
            record = released(found[0], micro_time(self.wall()))
            if self.leases.update(record, found[1], self.timing.retry_seconds):
                log.info("released the lease")
        except Exception as error:  # shutting down either way
            log.warning("could not release the lease: %s", error)
        self.renewed_at = None


def leader_gauge(registry: CollectorRegistry) -> Gauge:
    """scalelab_operator_leader: 1 on the replica that acts, 0 on a standby."""
    return Gauge(
        "scalelab_operator_leader",
        "1 while this replica holds the leader Lease and runs the handlers (always, without "
        "leader election); 0 while it stands by",
        registry=registry,
    )


class _Healthy(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        ok = self.path.split("?")[0] == "/healthz"
        body = b"standing by\n" if ok else b"not found\n"
        self.send_response(200 if ok else 404)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # a probe every few seconds is not news


class StandbyHealth:
    """/healthz on the liveness port while standing by (kopf serves it once it runs, on the same
    port): a standby is alive, and the kubelet must not restart it for waiting."""

    def __init__(self, port: int) -> None:
        self.server = ThreadingHTTPServer(("0.0.0.0", port), _Healthy)  # probed at the pod IP
        self.thread = threading.Thread(
            target=self.server.serve_forever, name="standby-healthz", daemon=True
        )
        self.thread.start()

    def close(self) -> None:
        """Stop serving and free the port for kopf."""
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()
