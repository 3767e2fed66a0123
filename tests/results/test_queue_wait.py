"""A trial's queue wait (created → admitted) in results.json, results.csv and the results row:
zero in `scalelab run`, which has no queue, and a cluster trial's status.queueSeconds as read by
`scalelab report --experiment`."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from scalelab.api import TrialPhase
from scalelab.results import store
from scalelab.results.model import (
    RecordTimes,
    ResultsFile,
    TrialRecord,
    result_row,
    seconds_between,
    unqueued,
)

pytestmark = pytest.mark.unit


def test_a_local_trial_has_no_queue_admitted_as_created_at_its_start_event() -> None:
    times = unqueued(1_800_000_000.0, 1_800_000_042.5)
    assert times["queue_seconds"] == 0.0
    assert times["times"] == RecordTimes(
        created="2027-01-15T08:00:00Z",
        admitted="2027-01-15T08:00:00Z",
        running="2027-01-15T08:00:00Z",
        finished="2027-01-15T08:00:42Z",
    )
    assert unqueued(None, 1_800_000_042.5) == {}  # it never started: nothing to say


def test_the_queue_wait_is_in_the_row_results_json_and_results_csv(tmp_path: Path) -> None:
    times = RecordTimes(created="2027-01-15T07:50:00Z", admitted="2027-01-15T07:55:00Z")
    record = TrialRecord(name="t", batch_size=8, gpus=1, phase=TrialPhase.SUCCEEDED,
                         queue_seconds=300.0, times=times)  # fmt: skip
    assert result_row(record).queue_seconds == 300.0
    store.save(tmp_path, ResultsFile(experiment="e", spec={}, trials=[record]))
    loaded = store.load(tmp_path)
    assert loaded is not None
    assert (loaded.trials[0].queue_seconds, loaded.trials[0].times) == (300.0, times)
    with (tmp_path / "results.csv").open() as table:
        [row] = list(csv.DictReader(table))
    assert row["queueSeconds"] == "300.0"


def test_times_from_a_newer_writer_are_read_leniently() -> None:
    record = TrialRecord.model_validate(
        {"name": "t", "batchSize": 8, "gpus": 1,
         "times": {"created": "2027-01-15T07:50:00Z", "evicted": "2027-01-15T07:51:00Z"}}
    )  # fmt: skip
    assert record.times == RecordTimes(created="2027-01-15T07:50:00Z")


def test_seconds_between_two_kubernetes_times() -> None:
    assert seconds_between("2027-01-15T07:50:00Z", "2027-01-15T07:55:30Z") == 330.0
    assert seconds_between(None, "2027-01-15T07:55:30Z") is None
    assert seconds_between("yesterday", "2027-01-15T07:55:30Z") is None
