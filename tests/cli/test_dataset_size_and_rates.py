"""`scalelab validate` and `plan` say how many examples every trial trains on
(planner.dataset_size_text): the set datasetSize, a built-in dataset's default, or every example a
custom workload provides. With a sweep.learningRates axis, `plan` and `scalelab run`'s progress
show each trial's base learning rate; without it their output is as before."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from scalelab.cli import main
from scalelab.cli.progress import PlainProgress, RichProgress, live_columns
from scalelab.results.model import TrialRecord

pytestmark = pytest.mark.unit

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"

CUSTOM = """\
metadata: {name: mine}
spec:
  workload: {model: custom, dataset: custom, entryPoint: "mine.plugin:workload"}
  sweep: {batchSizes: [32, 64]}
"""


def test_validate_says_the_dataset_size_set_the_default_and_all_of_a_custom_workload(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    custom = tmp_path / "custom.yaml"
    custom.write_text(CUSTOM)
    default = tmp_path / "default.yaml"
    default.write_text("metadata: {name: plain}\nspec: {workload: {dataset: lab1-line}}\n")
    large = EXAMPLES / "lab3-large-batch.yaml"
    assert main(["validate", str(large), str(default), str(custom)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines == [
        f"{large}: ok (lab3-large-batch: 5 trials, 0 skipped); each trial: datasetSize: 8192",
        f"{default}: ok (plain: 1 trials, 0 skipped); each trial: "
        "datasetSize: 100 (default for lab1-line)",
        f"{custom}: ok (mine: 2 trials, 0 skipped); each trial: "
        "datasetSize: all examples the workload provides",
    ]


def test_plan_says_the_dataset_size_between_the_table_and_the_commands(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    custom = tmp_path / "custom.yaml"
    custom.write_text(CUSTOM)
    assert main(["plan", str(custom)]) == 0
    paragraphs = capsys.readouterr().out.split("\n\n")
    assert paragraphs[1] == "each trial: datasetSize: all examples the workload provides"
    assert "--dataset-size" not in paragraphs[2]  # the trainer counts what the plugin gives
    assert main(["plan", str(custom), "--json"]) == 0
    assert {r["datasetSize"] for r in json.loads(capsys.readouterr().out)} == {None}
    assert main(["plan", str(EXAMPLES / "lab1-gd-vs-sgd.yaml"), "--json"]) == 0
    assert {r["datasetSize"] for r in json.loads(capsys.readouterr().out)} == {100}


def test_plan_shows_the_base_learning_rate_only_with_the_axis(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["plan", str(EXAMPLES / "lab3-learning-rates.yaml")]) == 0
    header, *rows = capsys.readouterr().out.split("\n\n")[0].splitlines()
    assert header.split()[5:] == ["base", "lr", "lr", "phase"]
    fields = rows[3].split()  # batch 128 at the smallest rate, scaled linearly from batch 8
    assert fields[0] == "lab3-learning-rates-b128-g1-lr0p001"
    assert (fields[5], fields[6]) == ("0.001", "0.016")
    assert main(["plan", str(EXAMPLES / "lab3-learning-rates.yaml"), "--json"]) == 0
    rows_json = json.loads(capsys.readouterr().out)
    assert sorted({r["baseLearningRate"] for r in rows_json}) == [0.001, 0.004, 0.016]
    assert main(["plan", str(EXAMPLES / "lab3-large-batch.yaml")]) == 0
    assert "base lr" not in capsys.readouterr().out
    assert main(["plan", str(EXAMPLES / "lab3-large-batch.yaml"), "--json"]) == 0
    assert {r["baseLearningRate"] for r in json.loads(capsys.readouterr().out)} == {None}


def test_run_progress_names_the_base_learning_rate_only_with_the_axis() -> None:
    assert "base_learning_rate" in [c.field for c in live_columns(learning_rates=True)]
    assert "base_learning_rate" not in [c.field for c in live_columns(learning_rates=False)]
    out = io.StringIO()
    progress = PlainProgress(max_epochs=10, out=out)
    rated = TrialRecord(name="x-b8-g1-lr0p1", batch_size=8, gpus=1, base_learning_rate=0.1)
    progress.trial_started(rated)
    progress.trial_started(TrialRecord(name="y-b8-g1", batch_size=8, gpus=1))
    assert out.getvalue().splitlines() == [
        "[x-b8-g1-lr0p1] started: batch 8, 1 process(es), at base learning rate 0.1",
        "[y-b8-g1] started: batch 8, 1 process(es)",
    ]
    table = RichProgress([rated], max_epochs=10, learning_rates=True)
    assert table.rows["x-b8-g1-lr0p1"][:4] == ["x-b8-g1-lr0p1", "8", "1", "0.1"]
