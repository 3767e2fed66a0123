"""Leader election's decisions (kube/leader.py) with a fake clock and an in-memory Lease: who may
take it when, renewal and takeover, a graceful release, losing it, and the holder identity."""

from __future__ import annotations

import threading
import urllib.request
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone

import pytest
from prometheus_client import CollectorRegistry

from scalelab.kube import leader
from scalelab.kube.leader import Elector, Record, Seen, Timing
from tests.harness.ports import free_port

pytestmark = pytest.mark.unit

TIMING = Timing(lease_seconds=10, renew_deadline_seconds=7, retry_seconds=2)


@dataclass
class Clock:
    """Monotonic seconds and a wall clock that advance together, only when told."""

    now: float = 100.0

    def __call__(self) -> float:
        return self.now

    def wall(self) -> datetime:
        return datetime(2026, 1, 1, tzinfo=UTC) + timedelta(seconds=self.now)


@dataclass
class MemoryLeases:
    """One Lease with optimistic concurrency, as the API server keeps it; `down` fails calls."""

    record: Record | None = None
    version: int = 0
    down: bool = False
    writes: list[Record] = field(default_factory=list)

    def get(self, timeout: float) -> tuple[Record, str] | None:
        self._check()
        return None if self.record is None else (self.record, str(self.version))

    def create(self, record: Record, timeout: float) -> bool:
        self._check()
        if self.record is not None:
            return False
        return self._write(record)

    def update(self, record: Record, version: str, timeout: float) -> bool:
        self._check()
        if version != str(self.version):
            return False
        return self._write(record)

    def _write(self, record: Record) -> bool:
        self.record, self.version = record, self.version + 1
        self.writes.append(record)
        return True

    def _check(self) -> None:
        if self.down:
            raise ConnectionRefusedError("API server down")


def _held(leases: MemoryLeases) -> Record:
    assert leases.record is not None, "no Lease"
    return leases.record


def _pair() -> tuple[Clock, MemoryLeases, Elector, Elector]:
    clock, leases = Clock(), MemoryLeases()
    a = Elector(leases, "pod-a_1", TIMING, clock=clock, wall=clock.wall)
    b = Elector(leases, "pod-b_2", TIMING, clock=clock, wall=clock.wall)
    return clock, leases, a, b


def test_the_first_candidate_creates_the_lease_and_the_second_stands_by() -> None:
    _, leases, a, b = _pair()
    assert a.attempt(2)
    assert not b.attempt(2)
    stamp = "2026-01-01T00:01:40.000000Z"
    assert _held(leases) == Record("pod-a_1", 10, stamp, stamp, 0)
    assert b.holder() == "pod-a_1"
    assert _held(leases).renewed == "2026-01-01T00:01:40.000000Z"


def test_a_renewing_holder_keeps_the_lease_however_long_the_standby_waits() -> None:
    clock, leases, a, b = _pair()
    assert a.attempt(2)
    acquired = _held(leases).acquired
    for _ in range(30):
        clock.now += 2
        assert a.attempt(2)
        assert not b.attempt(2)
    assert (_held(leases).holder, _held(leases).acquired) == ("pod-a_1", acquired)
    assert _held(leases).transitions == 0


def test_a_dead_holder_is_taken_over_a_lease_duration_after_the_standby_last_saw_a_change() -> None:
    clock, leases, a, b = _pair()
    assert a.attempt(2)
    clock.now += 1
    assert not b.attempt(2)  # b first sees the record at t=101: expiry at 111 by b's clock
    clock.now = 110.9
    assert not b.attempt(2)
    clock.now = 111.0
    assert b.attempt(2)
    assert (_held(leases).holder, _held(leases).transitions) == ("pod-b_2", 1)


def test_expiry_is_counted_on_the_standbys_own_clock_not_the_recorded_times() -> None:
    """A renewTime far in the past (the holder's clock is behind) does not make it expired."""
    seen = leader.observe(None, Record("other", 10, "1999-01-01T00:00:00.000000Z"), now=50.0)
    assert not leader.may_take(seen, "me", 59.9)
    assert leader.may_take(seen, "me", 60.0)
    assert leader.observe(seen, Record("other", 10, "1999-01-01T00:00:00.000000Z"), 58) is seen
    renewed = leader.observe(seen, Record("other", 10, "1999-01-01T00:00:02.000000Z"), 58)
    assert renewed == Seen(Record("other", 10, "1999-01-01T00:00:02.000000Z"), 58)
    assert not leader.may_take(renewed, "me", 60.0)


def test_a_lease_without_a_holder_or_held_by_us_may_be_taken_at_once() -> None:
    assert leader.may_take(Seen(Record("", 10), 0), "me", 0)
    assert leader.may_take(Seen(Record("me", 10), 0), "me", 0)
    assert not leader.may_take(Seen(Record("you", 10), 0), "me", 0)


def test_a_released_lease_is_taken_at_the_standbys_next_attempt() -> None:
    clock, leases, a, b = _pair()
    assert a.attempt(2)
    clock.now += 1
    assert not b.attempt(2)
    a.release()
    assert (_held(leases).holder, _held(leases).lease_seconds) == ("", 1)
    clock.now += 2
    assert b.attempt(2)
    assert _held(leases).holder == "pod-b_2"


def test_release_leaves_a_lease_someone_else_holds_alone() -> None:
    clock, leases, a, b = _pair()
    assert a.attempt(2)
    clock.now += 20
    assert not b.attempt(2)
    clock.now += 10
    assert b.attempt(2)
    writes = len(leases.writes)
    a.release()
    assert len(leases.writes) == writes
    assert _held(leases).holder == "pod-b_2"


def test_two_candidates_writing_the_same_version_make_one_holder() -> None:
    clock, leases, a, b = _pair()
    leases.record, leases.version = Record("gone", 10), 7
    clock.now += 1
    assert not a.attempt(2)
    assert not b.attempt(2)
    clock.now += 10
    version = str(leases.version)
    assert a.attempt(2)
    # b read the same version before a wrote: its write is refused as a conflict.
    assert not leases.update(Record("pod-b_2", 10), version, 2)
    assert not b.attempt(2)
    assert _held(leases).holder == "pod-a_1"


class _Ticking(threading.Event):
    """A stop flag whose waits advance the fake clock instead of sleeping."""

    def __init__(self, clock: Clock, step: object = None, stop_after: int = 1000) -> None:
        super().__init__()
        self.clock, self.step, self.left = clock, step, stop_after

    def wait(self, timeout: float | None = None) -> bool:
        self.clock.now += timeout or 0
        if callable(self.step):
            self.step()
        self.left -= 1
        return self.left < 0


def test_keep_returns_lost_once_renewals_fail_for_the_renew_deadline() -> None:
    clock, leases, a, _ = _pair()
    assert a.attempt(2)
    leases.down = True
    start = clock.now
    assert a.keep(_Ticking(clock)) is True
    # Lost at the first check past 7 s without a renewal: before the 10 s a standby waits.
    assert 7 <= clock.now - start < TIMING.lease_seconds


def test_keep_returns_lost_at_once_when_another_candidate_holds_the_lease() -> None:
    clock, leases, a, _ = _pair()
    assert a.attempt(2)
    leases.record = Record("intruder", 10, "x", "x", 1)
    leases.version += 1
    start = clock.now
    assert a.keep(_Ticking(clock)) is True
    assert clock.now - start == 2


def test_keep_rides_out_an_api_outage_shorter_than_the_renew_deadline() -> None:
    clock, leases, a, _ = _pair()
    assert a.attempt(2)

    def outage() -> None:  # down from 2 s to 6 s after the last renewal
        leases.down = 102 <= clock.now < 106

    assert a.keep(_Ticking(clock, outage, stop_after=20)) is False
    assert _held(leases).holder == "pod-a_1"


def test_acquire_waits_until_the_lease_expires_or_is_stopped() -> None:
    clock, leases, a, b = _pair()
    assert a.attempt(2)
    start = clock.now
    assert b.acquire(_Ticking(clock)) is True
    assert 10 <= clock.now - start <= 12
    assert b.acquire(_Ticking(clock, stop_after=0)) is True  # holds it: first attempt renews
    leases.record, leases.version = Record("other", 10, "y", "y"), leases.version + 1
    c = Elector(leases, "pod-c_3", TIMING, clock=clock, wall=clock.wall)
    assert c.acquire(_Ticking(clock, stop_after=2)) is False


def test_the_holder_identity_is_the_pod_name_and_a_random_suffix() -> None:
    assert (
        leader.identity("scalelab-operator-7d9f-abcde", "0a1b")
        == "scalelab-operator-7d9f-abcde_0a1b"
    )
    first, second = leader.identity("pod"), leader.identity("pod")
    assert first.startswith("pod_")
    assert second.startswith("pod_")
    assert first != second
    assert leader.identity("").split("_")[0]  # the host name when the pod's name is unknown


def test_micro_time_writes_six_fractional_digits_in_utc() -> None:
    plus_two = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC).astimezone(timezone(timedelta(hours=2)))
    assert leader.micro_time(plus_two) == "2026-03-01T12:00:00.000000Z"


def test_a_renew_deadline_not_shorter_than_the_lease_is_refused() -> None:
    with pytest.raises(ValueError, match="shorter than the lease"):
        Timing(lease_seconds=10, renew_deadline_seconds=10)


def test_the_leader_gauge_and_the_standby_health_endpoint() -> None:
    registry = CollectorRegistry()
    gauge = leader.leader_gauge(registry)
    assert registry.get_sample_value("scalelab_operator_leader") == 0
    gauge.set(1)
    assert registry.get_sample_value("scalelab_operator_leader") == 1
    port = free_port()
    health = leader.StandbyHealth(port)
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as r:
            assert r.status == 200
    finally:
        health.close()
    health = leader.StandbyHealth(port)  # the port is free again, for kopf's own endpoint
    health.close()
