"""The trial results a trainer stores in a ConfigMap (scalelab_trainer.store_results) read back by
`scalelab report --experiment` (scalelab.kube.results): the same records a local run folds from
stdout, the budget and its thinning rule, the newest attempt, unfinished trials named."""

from __future__ import annotations

import base64
import random
from typing import Any

import pytest

from scalelab.api import TrialPhase
from scalelab.kube import results as cluster
from scalelab.kube.observed import parse
from scalelab.planner import plan, trainer_command, trainer_flags
from scalelab.results.model import planned_record, record_from_events, result_row
from scalelab_trainer import store_results
from scalelab_trainer.report_status import StatusReporter

pytestmark = pytest.mark.unit

SPEC: dict[str, Any] = {
    "workload": {"model": "linear", "dataset": "lab1-line", "datasetSize": 64},
    "sweep": {"batchSizes": [64, 32, 3], "gpus": [1, 2]},
    "training": {"learningRate": 0.01, "maxEpochs": 5},
    "resources": {"gpusPerProcess": 0},
}


def events(trial: str, epochs: int, seed: int = 0, when: float = 1.8e9) -> list[dict[str, Any]]:
    """A trainer's start, epoch and result events, shaped as the trial contract says."""
    rng = random.Random(seed)
    env = {"schema": "scalelab.trainer/v1", "experiment": "lab", "trial": trial}
    losses = [rng.uniform(0.1, 10) for _ in range(epochs)]
    params = [{"w": rng.gauss(10, 1), "b": rng.gauss(2, 1)} for _ in range(epochs)]
    out = [
        {**env, "event": "start", "time": when, "learningRate": 0.01, "config": {"seed": 0},
         "diagnostics": {"optimum": {"w": 10.0, "b": 2.0, "loss": 0.9}, "warnings": []}},
    ]  # fmt: skip
    for i in range(epochs):
        out.append(
            {**env, "event": "epoch", "time": when + i + 1, "epoch": i + 1, "steps": 2 * (i + 1),
             "loss": losses[i], "updateLoss": losses[i] * 1.1, "params": params[i],
             "seconds": rng.random(), "samplesPerSecond": rng.uniform(1e3, 1e4),
             "learningRate": 0.01, "gradientNoiseScale": rng.random()}
        )  # fmt: skip
    curves = {
        "epochLoss": losses,
        "updateLoss": [x * 1.1 for x in losses],
        "params": params,
        "gradientNoiseScale": [e["gradientNoiseScale"] for e in out[1:]],
        "learningRate": [0.01] * epochs,
    }
    out.append(
        {**env, "event": "result", "time": when + epochs + 1, "phase": "Succeeded",
         "reason": "converged", "epochs": epochs, "steps": 2 * epochs, "finalLoss": losses[-1],
         "initialLoss": 50.0, "params": params[-1], "optimum": {"w": 10.0, "b": 2.0},
         "samplesPerSecond": 5000.0, "seconds": 1.5, "warnings": [], "curves": curves,
         "lossSurface": {"w": [0.0], "b": [0.0], "loss": [[1.0]]}}
    )  # fmt: skip
    return out


def stored(trial: str, evs: list[dict[str, Any]], data: bytes | None = None) -> dict[str, Any]:
    """The ConfigMap the trainer would create (as the API returns it: binaryData base64)."""
    binary, _ = store_results.pack(evs, data)
    return store_results.configmap("lab", trial, "ns", "uid-1", binary)


def trial_body(name: str, phase: str, **status: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "labels": {"scalelab.dev/experiment": "lab"}},
        "status": {"phase": phase, "reason": status.pop("reason", ""), **status},
    }


def snapshot(trials: list[dict[str, Any]], maps: list[dict[str, Any]]) -> cluster.Snapshot:
    body = {"apiVersion": "scalelab.dev/v1alpha1", "kind": "ScaleExperiment",
            "metadata": {"name": "lab", "namespace": "ns", "uid": "x"}, "spec": SPEC}  # fmt: skip
    return cluster.Snapshot("ns", body, trials, maps, "https://api:6443")


def test_stored_events_decode_to_the_lines_the_trainer_wrote_but_the_loss_surface() -> None:
    evs = events("lab-b64-g1", 40)
    decoded = cluster.decode_events(stored("lab-b64-g1", evs))
    assert decoded[:-1] == evs[:-1]
    assert decoded[-1] == {k: v for k, v in evs[-1].items() if k != "lossSurface"}


def test_a_finished_trial_is_the_record_a_local_run_folds_from_the_same_events() -> None:
    evs = events("lab-b64-g1", 5)
    data = b"npz bytes"
    snap = snapshot(
        [
            trial_body(
                "lab-b64-g1", "Succeeded", reason="converged",
                startTime="2027-01-15T08:00:00Z", completionTime="2027-01-15T08:00:09Z",
            ),
            trial_body("lab-b32-g1", "Running"),
        ],
        [stored("lab-b64-g1", evs, data)],
    )  # fmt: skip
    out = cluster.assemble(snap, now=1.9e9)
    by_name = {t.name: t for t in out.results.trials}
    planned = next(p for p in plan(parse(snap.experiment)) if p.name == "lab-b64-g1")
    local = record_from_events(
        planned_record(planned, trainer_command(trainer_flags(planned.spec, planned.name))),
        evs[0],
        evs[1:-1],
        evs[-1],
    )
    got = by_name["lab-b64-g1"]
    assert got.curves == local.curves
    # Aggregation outputs (the whole sweep's), not the trial's own record.
    folded = {"wall_seconds", "data_file", "scaling_efficiency", "scaling_efficiency_kind",
              "gpu_seconds", "efficiency_base_gpus", "modelled_seconds", "model_ratio"}  # fmt: skip
    assert got.model_dump(exclude=folded) == local.model_dump(exclude=folded)
    assert got.wall_seconds == 9.0
    assert got.data_file == "data/lab-b64-g1.npz"
    assert out.files == {"data/lab-b64-g1.npz": data}
    assert got.gpu_seconds == pytest.approx(1.5)
    assert by_name["lab-b32-g1"].phase is TrialPhase.RUNNING
    assert by_name["lab-b3-g2"].phase is TrialPhase.SKIPPED
    assert out.running == ["lab-b32-g1"]
    assert "lab-b64-g2" in out.pending
    assert "still running" in out.results.warnings[0]
    assert out.results.recommendation is not None
    assert out.results.recommendation.trial == "lab-b64-g1"
    assert out.results.host == {"cluster": "https://api:6443", "namespace": "ns"}


def test_the_operators_verdict_wins_and_a_retried_trial_reads_its_newest_attempt() -> None:
    first, second = events("lab-b64-g1", 3, seed=1), events("lab-b64-g1", 4, seed=2, when=2e9)
    reason = "NaN (BackoffLimitExceeded/Error: exit 1)"
    snap = snapshot(
        [trial_body("lab-b64-g1", "Failed", reason=reason)],
        [stored("lab-b64-g1", second), stored("lab-b64-g1", first)],
    )
    got = next(t for t in cluster.assemble(snap).results.trials if t.name == "lab-b64-g1")
    assert (got.phase, got.reason, got.epochs) == (TrialPhase.FAILED, reason, 4)


def test_a_finished_trial_without_stored_events_keeps_its_status_result() -> None:
    result = {"phase": "Diverged", "reason": "loss above 1e4 × L0", "epochs": 2, "steps": 4,
              "finalLoss": None, "initialLoss": 3.0}  # fmt: skip
    snap = snapshot([trial_body("lab-b32-g1", "Diverged", result=result)], [])
    got = next(t for t in cluster.assemble(snap).results.trials if t.name == "lab-b32-g1")
    assert (got.phase, got.epochs, got.initial_loss, got.curves["epochLoss"]) == (
        TrialPhase.DIVERGED, 2, 3.0, [])  # fmt: skip


def test_beyond_the_budget_every_other_epoch_goes_until_the_events_fit() -> None:
    evs = events("t", 3000, seed=3)
    budget = 40 * 1024
    binary, stride = store_results.pack(evs, b"x" * 100, budget)
    assert stride > 1
    assert len(binary[store_results.EVENTS_KEY]) + len(binary[store_results.DATA_KEY]) <= budget
    text = base64.b64encode(binary[store_results.EVENTS_KEY]).decode()
    decoded = cluster.decode_events({"binaryData": {store_results.EVENTS_KEY: text}})
    epochs = [e["epoch"] for e in decoded if e["event"] == "epoch"]
    assert epochs == [*range(1, 3000, stride), 3000]
    result = decoded[-1]
    assert result["curves"]["epoch"] == epochs
    assert all(len(v) == len(epochs) for v in result["curves"].values())
    assert result["curves"]["epochLoss"][-1] == evs[-1]["curves"]["epochLoss"][-1]
    assert any("thinned" in w for w in result["warnings"])


def test_data_that_does_not_fit_beside_the_events_is_left_out_with_a_warning() -> None:
    binary, stride = store_results.pack(events("t", 10), b"x" * 5000, budget=4000)
    assert stride == 1
    assert set(binary) == {store_results.EVENTS_KEY}
    text = base64.b64encode(binary[store_results.EVENTS_KEY]).decode()
    result = cluster.decode_events({"binaryData": {store_results.EVENTS_KEY: text}})[-1]
    assert "not kept" in result["warnings"][-1]


def test_the_store_creates_one_owned_configmap_at_the_result_and_never_raises() -> None:
    created: list[dict[str, Any]] = []
    uid: list[str | None] = [None]
    store = store_results.ResultsStore(created.append, lambda: uid[0], "ns")
    evs = events("lab-b64-g1", 3)
    for e in evs:
        store(e)
    assert created == []  # no owner known: an unowned ConfigMap would outlive its trial
    uid[0] = "u-1"
    for e in evs:
        store(e)
    [body] = created
    assert body["metadata"]["ownerReferences"] == [
        {"apiVersion": "scalelab.dev/v1alpha1", "kind": "ScaleTrial", "name": "lab-b64-g1",
         "uid": "u-1"}
    ]  # fmt: skip
    assert body["metadata"]["generateName"] == "lab-b64-g1-results-"
    assert len(cluster.decode_events(body)) == len(evs)

    def refuse(body: dict[str, Any]) -> None:
        raise InvalidError("422 Invalid")  # final: not retried

    failing = store_results.ResultsStore(refuse, lambda: "u-1", "ns")
    for e in evs:
        failing(e)
    assert failing.stored is None

    # An API server that is restarting: refused connections are retried until the write lands.
    outages = [ConnectionRefusedError("down"), ConnectionRefusedError("down")]

    def restarting(body: dict[str, Any]) -> None:
        if outages:
            raise outages.pop(0)
        created.append(body)

    later = store_results.ResultsStore(restarting, lambda: "u-2", "ns", retry_seconds=10)
    for e in evs:
        later(e)
    assert later.stored is not None
    assert created[-1]["metadata"]["ownerReferences"][0]["uid"] == "u-2"


class InvalidError(Exception):
    status = 422


def test_the_status_reporter_learns_the_trials_uid_from_a_patch_answer() -> None:
    answers = iter([None, {"metadata": {"uid": "u-7"}}, {"status": {}}])
    reporter = StatusReporter(lambda body: next(answers), interval_seconds=0)
    for e in events("t", 2)[1:]:
        reporter(e)
    assert reporter.uid == "u-7"


def test_a_trials_times_and_queue_wait_come_from_its_status_finished_or_not() -> None:
    times = {"created": "2027-01-15T07:50:00Z", "admitted": "2027-01-15T07:55:00Z"}
    snap = snapshot(
        [
            trial_body("lab-b64-g1", "Succeeded", reason="converged", queueSeconds=300,
                       times={**times, "finished": "2027-01-15T08:00:00Z"}),
            trial_body("lab-b32-g1", "Running", queueSeconds=0, times=times),
            trial_body("lab-b64-g2", "Pending", times={"created": times["created"]}),
        ],
        [stored("lab-b64-g1", events("lab-b64-g1", 3))],
    )  # fmt: skip
    by_name = {t.name: t for t in cluster.assemble(snap, now=1.9e9).results.trials}
    done, running, pending = (by_name[n] for n in ("lab-b64-g1", "lab-b32-g1", "lab-b64-g2"))
    assert (done.queue_seconds, done.times and done.times.finished) == (
        300.0, "2027-01-15T08:00:00Z",
    )  # fmt: skip
    assert (running.queue_seconds, running.times and running.times.admitted) == (
        0.0, "2027-01-15T07:55:00Z",
    )  # fmt: skip
    assert (pending.queue_seconds, pending.times and pending.times.admitted) == (None, None)


def test_every_runs_device_seconds_come_from_its_status_into_the_record_and_row() -> None:
    snap = snapshot(
        [
            trial_body("lab-b64-g1", "Succeeded", reason="converged", deviceSeconds=660),
            trial_body("lab-b32-g1", "Pending", reason="preempted by Kueue", deviceSeconds=240),
            trial_body("lab-b64-g2", "Pending"),
        ],
        [stored("lab-b64-g1", events("lab-b64-g1", 3))],
    )
    by_name = {t.name: t for t in cluster.assemble(snap, now=1.9e9).results.trials}
    assert [by_name[n].device_seconds for n in ("lab-b64-g1", "lab-b32-g1", "lab-b64-g2")] == [
        660.0, 240.0, None,
    ]  # fmt: skip
    assert result_row(by_name["lab-b64-g1"]).device_seconds == 660.0
