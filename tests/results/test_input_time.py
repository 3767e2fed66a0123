"""The input-time fields of streamed data (plugin API 2) reach a trial's record, its results row,
results.json and results.csv, so a sweep shows which configurations were input-bound; with data
in memory they stay null. The number of examples a trial trained on is kept with them."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import pytest

from scalelab.api import TrialPhase
from scalelab.results import store
from scalelab.results.model import ResultsFile, TrialRecord, record_from_events, result_row

pytestmark = pytest.mark.unit

PLANNED = TrialRecord(name="t", batch_size=32, gpus=2)
START = {"event": "start", "datasetSize": 3000, "diagnostics": None}


def _epoch(epoch: int, wait: float | None, calls: float | None) -> dict[str, Any]:
    return {"event": "epoch", "epoch": epoch, "steps": 10 * epoch, "loss": 1.0 / epoch,
            "samplesPerSecond": 100.0, "inputWaitSeconds": wait, "stepCallSeconds": calls,
            "inputWaitFraction": None if wait is None else 0.5,
            "inputBound": None if wait is None else True}  # fmt: skip


def _result(fraction: float | None, bound: bool | None) -> dict[str, Any]:
    return {"event": "result", "phase": "Succeeded", "epochs": 2, "steps": 20, "finalLoss": 0.5,
            "datasetSize": 3000, "inputWaitSeconds": None if fraction is None else 3.0,
            "stepCallSeconds": None if fraction is None else 1.0,
            "inputWaitFraction": fraction, "inputBound": bound}  # fmt: skip


def test_a_streamed_trials_result_brings_its_input_wait_and_whether_it_was_input_bound() -> None:
    epochs = [_epoch(1, 1.0, 1.0), _epoch(2, 2.0, 0.0)]
    record = record_from_events(PLANNED, START, epochs, _result(0.75, True))
    assert (record.input_wait_fraction, record.input_bound, record.dataset_size) == (
        0.75,
        True,
        3000,
    )
    row = result_row(record)
    assert (row.input_wait_fraction, row.input_bound) == (0.75, True)
    assert row.model_dump(by_alias=True)["inputWaitFraction"] == 0.75


def test_data_in_memory_leaves_the_input_fields_null() -> None:
    record = record_from_events(PLANNED, START, [_epoch(1, None, None)], _result(None, None))
    assert (record.input_wait_fraction, record.input_bound) == (None, None)
    assert record.dataset_size == 3000
    partial = record_from_events(PLANNED, START, [_epoch(1, None, None)], None)
    assert (partial.input_wait_fraction, partial.input_bound) == (None, None)


def test_a_trial_without_a_result_takes_the_fraction_of_its_epochs_sums() -> None:
    """Stopped mid-run (pruned, or the trainer died): the epochs so far say it, as the result
    would have: wait / (wait + step calls) over the sums, input-bound above 0.1."""
    partial = record_from_events(PLANNED, START, [_epoch(1, 1.0, 3.0), _epoch(2, 0.0, 4.0)], None)
    assert partial.input_wait_fraction == pytest.approx(1.0 / 8.0)
    assert partial.input_bound is True
    fast = record_from_events(PLANNED, START, [_epoch(1, 0.1, 9.9)], None)
    assert fast.input_wait_fraction == pytest.approx(0.01)
    assert fast.input_bound is False


def test_results_json_and_csv_carry_the_input_fields_and_the_examples(tmp_path: Path) -> None:
    streamed = record_from_events(PLANNED, START, [], _result(0.25, True))
    in_memory = record_from_events(
        PLANNED.model_copy(update={"name": "m"}), START, [], _result(None, None)
    )
    store.save(tmp_path, ResultsFile(experiment="e", spec={}, trials=[streamed, in_memory]))
    saved = json.loads((tmp_path / "results.json").read_text())["trials"]
    assert (saved[0]["inputWaitFraction"], saved[0]["inputBound"]) == (0.25, True)
    assert (saved[1]["inputWaitFraction"], saved[1]["inputBound"]) == (None, None)
    with (tmp_path / "results.csv").open() as table:
        rows = list(csv.DictReader(table))
    assert (rows[0]["inputWaitFraction"], rows[0]["inputBound"], rows[0]["datasetSize"]) == (
        "0.25",
        "true",
        "3000",
    )
    assert (rows[1]["inputWaitFraction"], rows[1]["inputBound"]) == ("", "")
    loaded = store.load(tmp_path)
    assert loaded is not None
    assert [t.input_bound for t in loaded.trials] == [True, None]
    assert loaded.trials[1].phase is TrialPhase.SUCCEEDED
