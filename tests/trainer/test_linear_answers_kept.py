"""Linear trials give the answers they gave before the multi-epoch calls.

`linear_answers.json` was recorded from main at 90cc4d1, before linear models ran several epochs
per compiled call with the stopping rules inside the graph: epochs, steps, phase and reason
exactly, every float (parameters, losses, B_simple, per-epoch events and curves) to 1e-9
relative. The trials cover each stopping rule (the lab's update rule, the full rule, a target,
divergence, the epoch cap), shuffling, an uneven last batch, warmup, every optimizer family,
a 5-feature regression, explicit --steps-per-call and two processes.

Re-record only for an intended change of answers:
    .venv/bin/python -m tests.trainer.test_linear_answers_kept --record
"""

from __future__ import annotations

import json
import math
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest

from tests.trainer.trainer_run import Run, run_trainer

pytestmark = pytest.mark.horovod

ANSWERS = Path(__file__).with_name("linear_answers.json")
ONE = {
    "gd-lab": ["--batch-size", "100", "--stopping-loss", "update", "--loss-surface-points", "20"],
    "sgd-lab": ["--batch-size", "1", "--stopping-loss", "update", "--record-update-losses"],
    "gd-full": ["--batch-size", "100", "--record-update-losses"],
    "b32-shuffle-momentum": ["--batch-size", "32", "--shuffle", "--optimizer", "momentum",
                             "--learning-rate", "0.0005", "--relative-tolerance", "1e-4"],
    "b10-target": ["--batch-size", "10", "--target-loss", "105", "--relative-tolerance", "0",
                   "--max-epochs", "300"],
    "gd-diverges": ["--batch-size", "100", "--learning-rate", "0.035"],
    "b20-warmup-cap": ["--batch-size", "20", "--relative-tolerance", "0", "--max-epochs", "30",
                       "--warmup-epochs", "5", "--lr-scaling", "linear", "--noise-window-epochs",
                       "0"],
    "b25-adam": ["--batch-size", "25", "--optimizer", "adam", "--learning-rate", "0.1",
                 "--max-epochs", "50", "--stopping-loss", "update"],
    "b50-lamb": ["--batch-size", "50", "--optimizer", "lamb", "--learning-rate", "0.05",
                 "--max-epochs", "40", "--weight-decay", "0.01"],
    "regression-b16": ["--dataset", "regression", "--features", "5", "--batch-size", "16",
                       "--learning-rate", "0.01", "--max-epochs", "40", "--record-update-losses"],
    "b10-steps-per-call-3": ["--batch-size", "10", "--steps-per-call", "3", "--max-epochs", "20"],
}  # fmt: skip
TWO = {
    "gd-lab-np2": ["--batch-size", "100", "--stopping-loss", "update"],
    "b2-lab-np2": ["--batch-size", "2", "--stopping-loss", "update", "--record-update-losses"],
    "b32-shuffle-target-np2": ["--batch-size", "32", "--shuffle", "--target-loss", "110",
                               "--learning-rate", "0.002"],
}  # fmt: skip
RESULT = ("phase", "reason", "epochs", "steps", "finalLoss", "initialLoss", "params",
          "distanceToOptimum", "stepsToTarget", "epochsToTarget", "gradientNoiseScale",
          "gradientNoiseScaleStderr", "criticalBatchSize", "warnings", "processes")  # fmt: skip
CURVES = ("epochLoss", "updateLoss", "params", "gradientNoiseScale", "gradientNoiseScaleStderr",
          "learningRate")  # fmt: skip
# Each epoch event's fields that are also a curve (curve name: event field) ...
SAME = {"epochLoss": "loss", "updateLoss": "updateLoss", "params": "params",
        "gradientNoiseScale": "gradientNoiseScale", "learningRate": "learningRate",
        "gradientNoiseScaleStderr": "gradientNoiseScaleStderr"}  # fmt: skip
EPOCH = ("epoch", "steps", "distanceToOptimum")  # ... and those recorded beside the curves
EVERY = 11  # per-update curves: every 11th entry (and their lengths) keeps the file small


def answers(run: Run, trial: str) -> dict[str, Any]:
    """What a trial answered: its result's fields, its curves and its epoch events."""
    r = run.of("result", trial)[0]
    out: dict[str, Any] = {k: r[k] for k in RESULT}
    out["curves"] = {k: r["curves"][k] for k in CURVES}
    for k in ("updateLosses", "updateParams"):
        if k in r["curves"]:
            out["curves"][k] = [len(r["curves"][k]), r["curves"][k][::EVERY]]
    if "lossSurface" in r:
        out["lossSurface"] = r["lossSurface"]["loss"][::3]
    events = run.of("epoch", trial)
    out["epochEvents"] = [[e[k] for k in EPOCH] for e in events]
    out["eventsMatchCurves"] = [
        m for curve, field in SAME.items()
        for m in mismatches(r["curves"][curve], [e[field] for e in events], curve)
    ]  # fmt: skip
    return out


def run_all(tmp: Path) -> dict[str, dict[str, Any]]:
    """Every trial of ONE in one process and of TWO on two; their answers by trial."""
    found: dict[str, dict[str, Any]] = {}
    for np_, trials in ((1, ONE), (2, TWO)):
        path = tmp / f"np{np_}.json"
        path.write_text(json.dumps([["--trial", name, *args] for name, args in trials.items()]))
        run = run_trainer(["--trial-list", str(path)], np=np_)
        assert run.code == 0, run.stderr[-3000:]
        found |= {name: answers(run, name) for name in trials}
    return found


def mismatches(want: Any, got: Any, where: str = "") -> list[str]:
    """Where `got` differs from `want`: ints, strings, None and lengths exactly, floats to 1e-9."""
    if isinstance(want, float) and isinstance(got, float | int):
        same = math.isclose(want, got, rel_tol=1e-9, abs_tol=1e-300) or want == got
        return [] if same else [f"{where}: {got!r} != {want!r}"]
    if isinstance(want, dict) and isinstance(got, dict):
        if want.keys() != got.keys():
            return [f"{where}: keys {sorted(got)} != {sorted(want)}"]
        return [m for k in want for m in mismatches(want[k], got[k], f"{where}.{k}")]
    if isinstance(want, list) and isinstance(got, list):
        if len(want) != len(got):
            return [f"{where}: length {len(got)} != {len(want)}"]
        return [m for i, (a, b) in enumerate(zip(want, got, strict=True))
                for m in mismatches(a, b, f"{where}[{i}]")]  # fmt: skip
    return [] if want == got and type(want) is type(got) else [f"{where}: {got!r} != {want!r}"]


@pytest.fixture(scope="module")
def found(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    return run_all(Path(tmp_path_factory.mktemp("answers")))


@pytest.mark.parametrize("trial", [*ONE, *TWO])
def test_linear_trial_gives_the_recorded_answers(
    found: dict[str, dict[str, Any]], trial: str
) -> None:
    want = json.loads(ANSWERS.read_text())[trial]
    assert mismatches(want, found[trial], trial) == []


def test_the_comparison_sees_a_change_in_the_last_digits() -> None:
    """The check above could fail: a change beyond 1e-9 or of one epoch is caught."""
    want = {"epochs": 67, "params": {"w": 10.195044899050949, "b": 1.6788341876227988}}
    assert mismatches(want, {"epochs": 67, "params": {"w": 10.195044899050949, "b": 1.67883419}})
    assert mismatches(want, want | {"epochs": 68})
    assert not mismatches(want, json.loads(json.dumps(want)))


if __name__ == "__main__" and sys.argv[1:] == ["--record"]:
    with tempfile.TemporaryDirectory() as tmp:
        found = run_all(Path(tmp))
    lines = (f"{json.dumps(k)}: {json.dumps(v, sort_keys=True)}" for k, v in sorted(found.items()))
    ANSWERS.write_text("{\n" + ",\n".join(lines) + "\n}\n")
    print(f"recorded {ANSWERS}")
