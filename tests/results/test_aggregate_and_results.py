"""Aggregation (efficiency, recommendation, fit), event parsing, results files: pure and on disk."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest

from scalelab.aggregate import recommend, trial_counts, with_scaling
from scalelab.api import ResultRow, TrialPhase
from scalelab.critical import fit_critical_batch
from scalelab.local.events import parse_event
from scalelab.results import store
from scalelab.results.columns import COLUMNS
from scalelab.results.model import ResultsFile, TrialRecord, record_from_events

pytestmark = pytest.mark.unit

OK = TrialPhase.SUCCEEDED


def row(batch: int, gpus: int, speed: float | None = None, **kw: object) -> ResultRow:
    fields: dict[str, object] = {"phase": OK, "samples_per_second": speed} | kw
    return ResultRow(trial=f"t-b{batch}-g{gpus}", batch_size=batch, gpus=gpus, **fields)  # type: ignore[arg-type]


def test_strong_scaling_efficiency_divides_by_n_times_the_one_process_throughput() -> None:
    rows = with_scaling([row(64, 1, 100.0), row(64, 2, 150.0), row(64, 4, 200.0), row(32, 2, 90.0)])
    eff = {(r.batch_size, r.gpus): r.scaling_efficiency for r in rows}
    assert eff[(64, 1)] == pytest.approx(1.0)
    assert eff[(64, 2)] == pytest.approx(0.75)
    assert eff[(64, 4)] == pytest.approx(0.5)
    # no 1-process trial at batch 32: its smallest count measured is the baseline
    assert eff[(32, 2)] == pytest.approx(1.0)
    bases = {(r.batch_size, r.gpus): r.efficiency_base_gpus for r in rows}
    assert bases == {(64, 1): 1, (64, 2): 1, (64, 4): 1, (32, 2): 2}


def test_without_a_one_process_point_efficiency_is_relative_to_the_fewest_measured() -> None:
    rows = with_scaling([row(64, 2, 100.0), row(64, 4, 150.0), row(64, 8, 200.0)])
    eff = {r.gpus: (r.scaling_efficiency, r.efficiency_base_gpus) for r in rows}
    assert eff[4] == (pytest.approx(0.75), 2)  # 150 / (2 × 100)
    assert eff[8] == (pytest.approx(0.5), 2)
    weak = with_scaling([row(64, 2, 100.0), row(128, 4, 180.0)], weak=True)
    assert weak[1].scaling_efficiency == pytest.approx(0.9)
    assert weak[1].efficiency_base_gpus == 2


def test_weak_scaling_efficiency_compares_with_the_per_process_batch_on_one_process() -> None:
    rows = with_scaling([row(32, 1, 100.0), row(64, 2, 180.0)], weak=True)
    assert rows[1].scaling_efficiency == pytest.approx(0.9)


def test_gpu_seconds_are_processes_times_time_to_target_else_training_time() -> None:
    rows = with_scaling(
        [row(8, 4, 1.0, time_to_target_seconds=3.0, seconds=10.0), row(8, 2, 1.0, seconds=5.0)]
    )
    assert [r.gpu_seconds for r in rows] == [12.0, 10.0]


def test_the_recommendation_is_the_fastest_to_target_within_the_gpu_budget() -> None:
    rows = with_scaling(
        [
            row(64, 1, time_to_target_seconds=10.0),
            row(64, 2, time_to_target_seconds=6.0),
            row(64, 4, time_to_target_seconds=4.0),
            row(64, 8, time_to_target_seconds=1.0),  # fastest, but over the budget
            row(128, 4, time_to_target_seconds=5.0),  # dominated by (64, 4)
            row(16, 1, phase=TrialPhase.FAILED),
        ]
    )
    rec = recommend(rows, max_gpus=4, has_target=True)
    assert (rec.batch_size, rec.gpus) == (64, 4)
    assert [(p.batch_size, p.gpus) for p in rec.pareto] == [(64, 4), (64, 2), (64, 1)]
    assert "fastest" in rec.reason
    assert "cheapest" in rec.reason
    assert "batch 64 on 1 GPU(s)" in rec.reason


def test_without_a_target_only_trials_within_one_percent_of_the_best_loss_compete() -> None:
    rows = with_scaling(
        [row(1, 1, final_loss=107.0, seconds=1.0), row(100, 1, final_loss=101.0, seconds=3.0)]
    )
    rec = recommend(rows, max_gpus=1, has_target=False)
    assert rec.batch_size == 100
    assert "within 1% of the best final loss" in rec.reason


def test_no_usable_trial_gives_a_recommendation_that_says_why() -> None:
    rec = recommend([row(8, 1, phase=TrialPhase.DIVERGED)], max_gpus=1, has_target=True)
    assert rec.trial is None
    assert rec.reason == "no trial reached the target loss within maxGPUs"


def test_the_critical_batch_fit_recovers_s_min_and_b_crit() -> None:
    batches = [1, 4, 16, 64, 256, 1024]
    steps = [500 * (1 + 40 / b) for b in batches]
    fit = fit_critical_batch(batches, steps)
    assert fit is not None
    assert fit.s_min == pytest.approx(500, rel=1e-6)
    assert fit.b_crit == pytest.approx(40, rel=1e-6)
    assert fit.r2 == pytest.approx(1.0)
    assert fit_critical_batch([8], [10]) is None


def test_trial_counts_count_every_phase() -> None:
    counts = trial_counts([OK, OK, TrialPhase.SKIPPED, TrialPhase.FAILED, TrialPhase.DIVERGED])
    assert (counts.total, counts.succeeded, counts.skipped, counts.failed, counts.diverged) == (
        5,
        2,
        1,
        1,
        1,
    )


def test_events_are_read_through_horovodrun_prefixes_and_other_lines_are_not() -> None:
    line = '{"schema":"scalelab.trainer/v1","event":"epoch","trial":"t","epoch":3}'
    assert parse_event(line) == json.loads(line)
    assert parse_event(f"[0]<stdout>:{line}\n") == json.loads(line)
    assert parse_event(f"[1,0]<stdout>: {line}") == json.loads(line)
    assert parse_event("Epoch 1/3 ...") is None
    assert parse_event('{"schema":"other","event":"epoch","trial":"t"}') is None
    assert parse_event('{"schema":"scalelab.trainer/v1"') is None


def test_the_result_event_wins_over_epoch_events_and_missing_results_keep_the_last_epoch() -> None:
    planned = TrialRecord(name="t", batch_size=4, gpus=1)
    epochs = [{"epoch": 1, "steps": 25, "loss": 9.0, "samplesPerSecond": 10.0, "params": {"w": 1}}]
    result = {
        "phase": "Diverged",
        "reason": "loss grew",
        "epochs": 1,
        "steps": 25,
        "finalLoss": None,
        "curves": {"epochLoss": [9.0]},
        "initialLoss": 12.0,
    }
    done = record_from_events(planned, {"diagnostics": {"warnings": ["w1"]}}, epochs, result)
    assert done.phase is TrialPhase.DIVERGED
    assert done.final_loss is None
    assert done.initial_loss == 12.0
    assert done.curves["params"] == [{"w": 1}]
    partial = record_from_events(planned, None, epochs, None)
    assert (partial.epochs, partial.final_loss, partial.phase) == (1, 9.0, TrialPhase.PENDING)


def test_results_are_written_atomically_and_read_back(tmp_path: Path) -> None:
    results = ResultsFile(
        experiment="e",
        spec={"a": 1},
        trials=[TrialRecord(name="t", batch_size=1, gpus=1, final_loss=math.pi)],
    )
    store.save(tmp_path, results)
    loaded = store.load(tmp_path)
    assert loaded is not None
    assert loaded.trials[0].final_loss == math.pi
    assert (tmp_path / "results.csv").read_text().splitlines()[1].startswith("t,1,1,")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.csv", "results.json"]
    assert oct((tmp_path / "results.json").stat().st_mode & 0o777) == oct(0o666 & ~_umask())


def test_the_csv_header_is_the_column_spec_and_every_column_names_a_record_field(
    tmp_path: Path,
) -> None:
    store.save(tmp_path, ResultsFile(experiment="e", spec={}))
    header = (tmp_path / "results.csv").read_text().splitlines()[0]
    assert header == (
        "name,batchSize,gpus,repeat,seed,learningRate,phase,reason,epochs,steps,finalLoss,"
        "samplesPerSecond,stepSeconds,scalingEfficiency,efficiencyBaseGpus,scalingEfficiencyKind,"
        "stepsToTarget,epochsToTarget,modelledSeconds,timeToTargetSeconds,modelRatio,seconds,"
        "wallSeconds,gpuSeconds,deviceSeconds,queueSeconds,gradientNoiseScale,"
        "gradientNoiseScaleStderr,criticalBatchSize,datasetSize,inputWaitFraction,inputBound"
    )
    for column in COLUMNS:
        assert column.field in TrialRecord.model_fields, column
        assert TrialRecord.model_fields[column.field].alias == column.key


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


def test_a_foreign_or_corrupt_results_file_is_refused_with_its_path(tmp_path: Path) -> None:
    (tmp_path / "results.json").write_text("{not json")
    with pytest.raises(store.ResultsReadError, match=r"results\.json: not a readable results file"):
        store.load(tmp_path)
    (tmp_path / "results.json").write_text('{"schemaVersion": "v0"}')
    with pytest.raises(store.ResultsReadError, match="schemaVersion 'v0'"):
        store.load(tmp_path)


def test_a_save_removes_the_temporaries_a_killed_writer_left(tmp_path: Path) -> None:
    """SIGKILL between writing the temporary file and renaming it leaves the old results whole
    and a stray temporary; the next save (a resumed run) removes it."""
    store.save(tmp_path, ResultsFile(experiment="e", spec={}))
    stray = tmp_path / f".{store.RESULTS_JSON}.k1ll3d.tmp"
    stray.write_bytes(b'{"half": ')
    other = tmp_path / ".report.html.k1ll3d.tmp"  # not the results': left alone
    other.write_bytes(b"")
    store.save(tmp_path, ResultsFile(experiment="e", spec={}))
    assert not stray.exists()
    assert other.exists()
    assert store.load(tmp_path) is not None
