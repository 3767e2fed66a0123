"""The results archive (scalelab.kube.archive): what the operator writes when an experiment
finishes decodes to the results file `scalelab report --experiment` writes, byte for byte; it
fits the ConfigMap budget at 1,000 trials; it has no owner; pruning keeps live experiments'."""

from __future__ import annotations

import gzip
import json
import time
from typing import Any

import pytest

from scalelab.api import TrialPhase
from scalelab.kube import archive, rest
from scalelab.kube import results as cluster
from scalelab.kube.observed import parse
from scalelab.planner import plan, trainer_command, trainer_flags
from scalelab.results.model import (
    ResultsFile,
    aggregate_results,
    new_results,
    planned_record,
    record_from_events,
)
from tests.kube.fake_api import fake_api, sent, status
from tests.kube.test_cluster_results import SPEC, events, snapshot, stored, trial_body

pytestmark = pytest.mark.unit

FINISHED = "2027-01-15T08:00:09Z"


def finished_snapshot() -> cluster.Snapshot:
    """A finished experiment of two measured trials (one with its dataset), one skipped."""
    snap = snapshot(
        [
            trial_body("lab-b64-g1", "Succeeded", reason="converged",
                       startTime="2027-01-15T08:00:00Z", completionTime=FINISHED),
            trial_body("lab-b32-g1", "Succeeded", reason="converged",
                       startTime="2027-01-15T08:00:01Z", completionTime=FINISHED),
        ],
        [stored("lab-b64-g1", events("lab-b64-g1", 6), b"npz bytes"),
         stored("lab-b32-g1", events("lab-b32-g1", 9, seed=1))],
    )  # fmt: skip
    snap.experiment["status"] = {
        "phase": "Succeeded",
        "conditions": [
            {"type": "Ready", "status": "True", "lastTransitionTime": "2027-01-15T07:59:00Z"},
            {"type": "Complete", "status": "True", "lastTransitionTime": FINISHED},
        ],
    }
    return snap


def saved(results: ResultsFile) -> str:
    """results.json as `scalelab report` writes it (results/store.py)."""
    return json.dumps(results.model_dump(by_alias=True, mode="json"), indent=1)


def test_an_archive_decodes_to_the_results_file_and_data_the_report_writes() -> None:
    assembled = cluster.assemble(finished_snapshot())
    packed = archive.pack(assembled.results, assembled.files)
    body = archive.body("ns", finished_snapshot().experiment, packed, "2027-01-15T08:00:10Z")

    got = archive.decode(json.loads(json.dumps(body)))  # as the API returns it

    assert saved(got.results) == saved(assembled.results)
    assert got.files == assembled.files == {"data/lab-b64-g1.npz": b"npz bytes"}
    assert (got.name, got.archived_at, got.left_out) == (
        "lab-results-archive-x", "2027-01-15T08:00:10Z", 0)  # fmt: skip
    meta = body["metadata"]
    assert "ownerReferences" not in meta  # the garbage collector never deletes it
    assert meta["labels"][archive.LABEL_ARCHIVE] == "lab"
    assert meta["annotations"][archive.EXPERIMENT_UID] == "x"
    # Same results, same bytes (mtime 0): two replicas racing write identical archives.
    assert archive.pack(assembled.results, assembled.files) == packed


def test_a_finished_experiments_file_is_dated_when_it_finished_so_every_read_is_equal() -> None:
    first = cluster.assemble(finished_snapshot())
    time.sleep(0.01)
    second = cluster.assemble(finished_snapshot())
    assert first.results.updated_at == second.results.updated_at == cluster._rfc3339(FINISHED)
    running = finished_snapshot()
    running.experiment["status"] = {"phase": "Running"}
    assert cluster.assemble(running).results.updated_at == pytest.approx(time.time(), abs=60)


def thousand_trials(epochs: int) -> ResultsFile:
    """A results file of 1,000 finished trials of `epochs` epochs each, every curve point a
    random full-precision float (what compresses worst)."""
    spec: dict[str, Any] = {
        **SPEC,
        "sweep": {"batchSizes": [2 * i for i in range(1, 11)], "gpus": [1], "repeats": 100},
    }
    body = {"apiVersion": "scalelab.dev/v1alpha1", "kind": "ScaleExperiment",
            "metadata": {"name": "lab", "namespace": "ns", "uid": "x"}, "spec": spec}  # fmt: skip
    experiment = parse(body)
    records = []
    for i, planned in enumerate(plan(experiment)):
        evs = events(planned.name, epochs, seed=i)
        argv = trainer_command(trainer_flags(planned.spec, planned.name))
        record = record_from_events(planned_record(planned, argv), evs[0], evs[1:-1], evs[-1])
        records.append(record.model_copy(update={"phase": TrialPhase.SUCCEEDED}))
    results = new_results(experiment, records, {"cluster": "https://api:6443"})
    aggregate_results(results, experiment)
    return results


def test_a_thousand_trial_results_file_fits_the_archive_whole() -> None:
    results = thousand_trials(epochs=10)
    assert len(results.trials) == 1000
    packed = archive.pack(results, {})
    blob = packed.binary[archive.RESULTS_KEY]
    # Measured: 1,000 trials x 10 epochs of random curves: ~3.3 MB of JSON, ~0.74 MiB gzip'd.
    print(f"1,000 trials x 10 epochs: {len(blob)} bytes compressed")
    assert packed.cap is None  # nothing thinned
    assert len(blob) <= archive.BUDGET_BYTES
    assert ResultsFile.model_validate(json.loads(gzip.decompress(blob))) == results


def test_longer_curves_are_thinned_longest_first_until_the_file_fits() -> None:
    results = thousand_trials(epochs=10)
    longer = results.trials[0].model_copy(
        update={"curves": {**results.trials[0].curves, "updateLoss": list(range(5000))}}
    )
    small = results.model_copy(update={"trials": [longer, *results.trials[1:3]]})
    budget = len(archive.pack(small, {}).binary[archive.RESULTS_KEY]) // 2

    packed = archive.pack(small, {"data/a.npz": b"x" * 10}, budget=budget)

    blob = packed.binary[archive.RESULTS_KEY]
    assert len(blob) + 10 <= budget
    assert packed.cap is not None
    assert packed.cap < 5000
    got = ResultsFile.model_validate(json.loads(gzip.decompress(blob)))
    update_loss = got.trials[0].curves["updateLoss"]
    assert update_loss[0] == 0
    assert update_loss[-1] == 4999
    assert len(update_loss) <= 2 * packed.cap
    # The 10-epoch curves were shorter than the cap: kept whole.
    assert got.trials[1].curves == results.trials[1].curves
    assert "thinned" in got.warnings[-1]
    assert packed.binary["data.a.npz"] == b"x" * 10


def test_data_files_over_the_budget_are_left_out_and_counted() -> None:
    assembled = cluster.assemble(finished_snapshot())
    size = len(archive.pack(assembled.results, {}).binary[archive.RESULTS_KEY])
    files = {"data/a.npz": b"a" * 100, "data/b.npz": b"b" * 100}
    packed = archive.pack(assembled.results, files, budget=size + 150)
    assert packed.left_out == ("data/b.npz",)
    body = archive.body("ns", finished_snapshot().experiment, packed, "2027-01-15T08:00:10Z")
    assert body["metadata"]["annotations"][archive.FILES_LEFT_OUT] == "1"


def test_a_damaged_archive_is_a_read_error_naming_it() -> None:
    body = {"metadata": {"name": "lab-results-archive-x"}, "binaryData": {"results.json.gz": "!"}}
    with pytest.raises(archive.ArchiveReadError, match="lab-results-archive-x"):
        archive.decode(body)


def archived(name: str, uid: str, when: str) -> dict[str, Any]:
    return {"metadata": {"name": name, "annotations": {archive.EXPERIMENT_UID: uid,
                                                       archive.ARCHIVED_AT: when}}}  # fmt: skip


def test_the_newest_archive_of_a_recreated_experiment_is_the_one_read() -> None:
    maps = [
        archived("a-1", "1", "2027-01-01T00:00:00Z"),
        archived("a-2", "2", "2027-02-01T00:00:00Z"),
    ]
    assert archive.newest(maps) == maps[1]
    assert archive.newest([]) is None


def test_prune_deletes_only_old_archives_of_experiments_that_are_gone() -> None:
    now = cluster._rfc3339("2027-03-01T00:00:00Z")
    assert now is not None
    maps = [
        archived("gone-old", "1", "2027-01-01T00:00:00Z"),
        archived("gone-new", "2", "2027-02-28T00:00:00Z"),
        archived("live-old", "3", "2027-01-01T00:00:00Z"),
        archived("gone-undated", "4", ""),
    ]
    week = 7 * 86400.0
    assert archive.prunable(maps, {"3"}, week, now) == ["gone-old", "gone-undated"]
    assert archive.prunable(maps, {"3"}, 0, now) == ["gone-old", "gone-new", "gone-undated"]


def test_a_forbidden_answer_is_retried_while_a_new_role_binding_takes_effect() -> None:
    answers: list[Any] = [cluster.ClusterReadError("403", 403), rest.api_error(403, "Forbidden")]

    def call() -> str:
        if answers:
            raise answers.pop(0)
        return "read"

    assert archive._retry_forbidden(call, sleep=lambda _: None) == "read"
    with pytest.raises(cluster.ClusterReadError):
        archive._retry_forbidden(
            lambda: (_ for _ in ()).throw(cluster.ClusterReadError("404", 404)),
            sleep=lambda _: None,
        )


def test_an_archive_read_back_names_the_api_server_it_was_read_from() -> None:
    assembled = cluster.assemble(finished_snapshot())
    body = archive.body("ns", finished_snapshot().experiment,
                        archive.pack(assembled.results, assembled.files), "")  # fmt: skip
    fetched = archive.as_fetched(archive.decode(body), "https://public:6443")
    assert fetched.results.host == {"cluster": "https://public:6443", "namespace": "ns"}
    assert (fetched.running, fetched.pending) == (assembled.running, assembled.pending)
    assert fetched.files == assembled.files


class FakeKube:
    """The API calls `Archiver.ensure` makes, against an in-memory namespace of ConfigMaps."""

    def __init__(self) -> None:
        self.api = fake_api(self.answer)
        self.maps: dict[str, dict[str, Any]] = {}
        self.bindings: list[dict[str, Any]] = []
        self.writes: list[tuple[str, str]] = []

    def wrote(self, verb: str, resource: str) -> None:
        self.writes.append((verb, resource))

    def answer(self, request: Any) -> tuple[int, Any]:
        """/api/v1/namespaces/ns/configmaps[/NAME], .../rolebindings"""
        parts, body = request.url.path.split("/"), sent(request)
        if parts[-1] == "rolebindings":
            return self.create_role_binding(body)
        if request.method == "GET":
            return self.read_config_map(parts[-1])
        return self.create_config_map(body)

    def create_role_binding(self, body: dict[str, Any]) -> tuple[int, Any]:
        if self.bindings:
            return status(409, "AlreadyExists")
        self.bindings.append(body)
        return 201, body

    def read_config_map(self, name: str) -> tuple[int, Any]:
        if name not in self.maps:
            return status(404, "NotFound")
        return 200, self.maps[name]

    def create_config_map(self, body: dict[str, Any]) -> tuple[int, Any]:
        if body["metadata"]["name"] in self.maps:
            return status(409, "AlreadyExists")
        self.maps[body["metadata"]["name"]] = body
        return 201, body


def test_an_archive_is_written_once_across_restarts_and_replicas(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(cluster, "fetch", lambda api, ns, name: finished_snapshot())
    sa = {"kind": "ServiceAccount", "name": "scalelab-operator", "namespace": "scalelab-system"}
    monkeypatch.setattr(archive, "_subject", lambda api: sa)
    kube: Any = FakeKube()

    assert archive.Archiver().ensure(kube, "ns", "lab", "x") == "lab-results-archive-x"
    assert kube.bindings[0]["subjects"] == [sa]
    assert kube.bindings[0]["roleRef"]["name"] == archive.READER_ROLE
    written = kube.maps["lab-results-archive-x"]
    # A restarted operator (a fresh Archiver) finds it and writes nothing but its binding (409).
    restarted = archive.Archiver()
    assert restarted.ensure(kube, "ns", "lab", "x") is None
    assert restarted.ensure(kube, "ns", "lab", "x") is None  # remembered: no call at all
    assert kube.writes == [("create", "rolebindings"), ("create", "configmaps"),
                           ("create", "rolebindings")]  # fmt: skip
    # Two replicas racing: the one that loses gets 409 for the same bytes, and counts it written.
    racing = archive.Archiver()
    monkeypatch.setattr(kube, "read_config_map", FakeKube().read_config_map)
    assert racing.ensure(kube, "ns", "lab", "x") == "lab-results-archive-x"
    assert kube.maps["lab-results-archive-x"] is written
    # An experiment recreated under the same name meanwhile is not archived as the old one.
    assert archive.Archiver().ensure(FakeKube(), "ns", "lab", "other-uid") is None
