"""The local executor reads the trainer's `progress` events (inside a long epoch) as events, not
as stray lines for the log: the display shows the epoch's speed at once, with the last finished
epoch and its loss, and the trial's epochs (its curves) hold only finished epochs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from scalelab.local.events import parse_event
from scalelab.local.executor import LocalRun, _Launch
from scalelab.local.progress import Quiet
from scalelab.results.model import TrialRecord
from scalelab.validation import parse_experiment

pytestmark = pytest.mark.unit

SCHEMA = "scalelab.trainer/v1"


def _line(kind: str, **fields: Any) -> str:
    return "[0]<stdout>:" + json.dumps({"schema": SCHEMA, "event": kind, "trial": TRIAL, **fields})


class Shown(Quiet):
    """A Progress that keeps the epoch events it was given and reports nothing else."""

    def __init__(self) -> None:
        self.epochs: list[dict[str, Any]] = []

    def epoch(self, record: TrialRecord, event: dict[str, Any]) -> None:
        self.epochs.append(event)


class Log:
    """The trainer supervisor's log, as far as _on_line uses it."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def log(self, line: str) -> None:
        self.lines.append(line)


EXPERIMENT = parse_experiment(
    {
        "apiVersion": "scalelab.dev/v1alpha1",
        "kind": "ScaleExperiment",
        "metadata": {"name": "long"},
        "spec": {"sweep": {"batchSizes": [8], "gpus": [1]}},
    }
)
TRIAL = "long-b8-g1"


def test_a_progress_line_is_an_event() -> None:
    event = parse_event(_line("progress", epoch=1, epochSteps=3, samplesPerSecond=5.0))
    assert event is not None
    assert event["event"] == "progress"


def test_progress_shows_the_epochs_speed_and_keeps_the_last_finished_epoch(
    tmp_path: Path,
) -> None:
    shown = Shown()
    run = LocalRun(EXPERIMENT, tmp_path, progress=shown)
    launch = _Launch(list(run.planned.values()), deadline=600.0)
    log = Log()
    moving = {"epochSteps": 2, "stepsPerEpoch": 10, "updateLoss": 0.9}
    for line in (
        _line("start", datasetSize=80, stepsPerEpoch=10),
        _line("progress", epoch=1, steps=2, samplesPerSecond=7.0, trainingSeconds=61.0, **moving),
        _line("epoch", epoch=1, steps=10, loss=0.5, samplesPerSecond=8.0, trainingSeconds=90.0),
        _line("progress", epoch=2, steps=12, samplesPerSecond=9.0, trainingSeconds=151.0),
    ):
        run._on_line(launch, log, line)  # type: ignore[arg-type]
    assert log.lines == []
    first, epoch, second = shown.epochs
    assert (first["epoch"], first["loss"], first["samplesPerSecond"]) == (0, None, 7.0)
    assert (epoch["epoch"], epoch["loss"], epoch["samplesPerSecond"]) == (1, 0.5, 8.0)
    assert (second["epoch"], second["loss"], second["samplesPerSecond"]) == (1, 0.5, 9.0)
    assert (second["steps"], second["trainingSeconds"]) == (12, 151.0)
    assert [e["epoch"] for e in launch.events[TRIAL].epochs] == [1]
