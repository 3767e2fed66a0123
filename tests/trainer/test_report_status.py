"""ScaleTrial status reporting: payloads shaped as the contract says, progress rate-limited,
failures never raised into training."""

from __future__ import annotations

from typing import Any

import pytest

from scalelab_trainer.report_status import StatusReporter, progress_payload, result_payload

pytestmark = pytest.mark.unit


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def epoch(n: int) -> dict[str, Any]:
    return {
        "schema": "scalelab.trainer/v1",
        "event": "epoch",
        "time": 1795000000.0 + n,
        "experiment": "e",
        "trial": "t",
        "epoch": n,
        "steps": 10 * n,
        "loss": 1.0 / n,
        "updateLoss": 2.0,
        "samplesPerSecond": 500.0,
        "trainingSeconds": 0.5 * n,
        "stepSeconds": 0.01,
        "params": {"w": 1.0, "b": 2.0},
    }


def test_progress_payload_is_a_merge_patch_of_status_progress() -> None:
    assert progress_payload(epoch(3)) == {
        "status": {
            "progress": {
                "epoch": 3,
                "steps": 30,
                "loss": 1.0 / 3,
                "samplesPerSecond": 500.0,
                "trainingSeconds": 1.5,
                "stepSeconds": 0.01,
                "updatedAt": "2026-11-18T11:06:43Z",
            }
        }
    }


def test_result_payload_drops_config_curves_and_the_event_envelope() -> None:
    event = {
        "schema": "s",
        "event": "result",
        "time": 1.0,
        "experiment": "e",
        "trial": "t",
        "phase": "Succeeded",
        "epochs": 5,
        "finalLoss": 0.5,
        "config": {"a": 1},
        "curves": {"epochLoss": [1.0]},
        "lossSurface": {"w": []},
        "warnings": ["x"],
    }
    assert result_payload(event) == {
        "status": {
            "result": {"phase": "Succeeded", "epochs": 5, "finalLoss": 0.5, "warnings": ["x"]}
        }
    }


def test_progress_is_sent_at_most_once_per_interval_and_the_result_always() -> None:
    sent: list[dict[str, Any]] = []
    clock = FakeClock()
    reporter = StatusReporter(sent.append, interval_seconds=2.0, clock=clock)
    for n in range(1, 11):  # ten epochs, 0.5 s apart: progress at 0, 2, 4 s
        reporter(epoch(n))
        clock.now += 0.5
    reporter({"event": "start"})
    reporter({"event": "result", "phase": "Succeeded"})
    epochs = [b["status"]["progress"]["epoch"] for b in sent if "progress" in b["status"]]
    assert epochs == [1, 5, 9, 10]  # the last epoch rides with the result
    assert sent[-1]["status"]["result"] == {"phase": "Succeeded"}
    assert len(sent) == 4


def test_progress_inside_a_long_epoch_refreshes_the_status_but_keeps_the_last_epoch() -> None:
    """A `progress` event (an epoch longer than the stall threshold) patches steps, pace and
    updatedAt; epoch and loss stay the last finished epoch's (a merge patch leaves them)."""
    sent: list[dict[str, Any]] = []
    clock = FakeClock()
    reporter = StatusReporter(sent.append, interval_seconds=2.0, clock=clock)
    reporter(epoch(3))
    inside = {**epoch(4), "event": "progress", "steps": 35, "epochSteps": 5, "updateLoss": 0.2}
    del inside["loss"]
    reporter(inside)  # within the interval: dropped, never held for the result
    clock.now += 60.0
    reporter(inside)
    assert len(sent) == 2
    progress = sent[1]["status"]["progress"]
    assert progress["steps"] == 35
    assert "epoch" not in progress
    assert "loss" not in progress
    assert progress["updatedAt"] == "2026-11-18T11:06:44Z"
    reporter({"event": "result", "phase": "Succeeded"})
    assert sent[-1] == {"status": {"result": {"phase": "Succeeded"}}}


def test_the_result_alone_when_the_last_epoch_was_already_sent() -> None:
    sent: list[dict[str, Any]] = []
    reporter = StatusReporter(sent.append, interval_seconds=0.0)
    reporter(epoch(1))
    reporter({"event": "result", "phase": "Succeeded"})
    assert sent[-1] == {"status": {"result": {"phase": "Succeeded"}}}


def test_a_failing_api_never_raises_into_training(capsys: pytest.CaptureFixture[str]) -> None:
    def broken(body: dict[str, Any]) -> None:
        raise ConnectionRefusedError("api server down")

    clock = FakeClock()
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        clock.now += seconds

    reporter = StatusReporter(broken, 0.0, clock, sleep, result_retry_seconds=20)
    reporter(epoch(1))
    assert slept == []  # progress is not retried: the next epoch sends a newer one
    reporter({"event": "result", "phase": "Succeeded"})
    assert (reporter.sent, reporter.failed) == (0, 2)
    assert slept == [0.5, 1, 2, 4, 5, 5, 2.5]  # backoff, then the budget's remainder
    assert "status patch failed" in capsys.readouterr().err


class ApiError(Exception):
    def __init__(self, status: int) -> None:
        super().__init__(f"HTTP {status}")
        self.status = status


def test_the_result_outlives_an_api_server_restart_but_not_a_refusal() -> None:
    """A result written while the API server restarts (connection refused, 503 while its etcd
    is not back, 401/403/404 while its authenticator, RBAC and CRD routes sync) is retried
    until it lands, once; an invalid body (422) is final."""
    sent: list[dict[str, Any]] = []
    errors: list[Exception] = [ConnectionRefusedError("down"), ApiError(503), ApiError(404)]
    errors += [ApiError(401), ApiError(403), ApiError(429)]

    def restarting(body: dict[str, Any]) -> dict[str, Any]:
        if errors:
            raise errors.pop(0)
        sent.append(body)
        return {"metadata": {"uid": "u-1"}}

    slept: list[float] = []
    reporter = StatusReporter(restarting, 0.0, sleep=slept.append)
    reporter({"event": "result", "phase": "Succeeded"})
    assert sent == [{"status": {"result": {"phase": "Succeeded"}}}]
    assert (reporter.sent, reporter.failed, reporter.uid) == (1, 0, "u-1")
    assert slept == [0.5, 1, 2, 4, 5, 5]

    calls: list[dict[str, Any]] = []

    def invalid(body: dict[str, Any]) -> None:
        calls.append(body)
        raise ApiError(422)

    refused = StatusReporter(invalid, 0.0, sleep=slept.append)
    refused({"event": "result", "phase": "Succeeded"})
    assert (len(calls), refused.failed) == (1, 1)
