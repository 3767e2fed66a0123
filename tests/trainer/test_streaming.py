"""Streamed data (plugin API 2) on real processes: the records' examples train exactly as the same
examples in memory, on 1 and 2 Horovod processes alike (shuffled, an uneven last batch); a slow
input pipeline is reported input-bound; long epochs write progress events; a model's weight
regularisers are part of the loss it reports; without --dataset-size a workload trains on every
example it gives."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.trainer.trainer_run import Run, run_trainer

pytestmark = pytest.mark.horovod

ROOT = Path(__file__).resolve().parents[2]
CASES = "tests.trainer.plugin_cases"
#: The examples a plugin case gives without --dataset-size (plugin_cases.ALL; not imported,
#: which would load TensorFlow into the test process).
ALL = 80
FIELDS = ("inputWaitSeconds", "stepCallSeconds", "inputWaitFraction", "inputBound")


def _trial(
    name: str, entry: str, *extra: str, params: dict[str, Any] | None = None, size: int | None = 100
) -> list[str]:
    """One trial's argv; `size` None: no --dataset-size (every example the workload gives)."""
    return [
        "--trial", name, "--model", "custom", "--dataset", "custom", "--entry-point",
        f"{CASES}:{entry}", "--workload-parameters", json.dumps(params or {}),
        *(["--dataset-size", str(size)] if size is not None else []),
        "--batch-size", "32", "--optimizer", "momentum",
        "--learning-rate", "0.05", "--max-epochs", "3", "--relative-tolerance", "0",
        "--shuffle", *extra,
    ]  # fmt: skip


def _run(tmp_path: Path, np_: int, trials: list[list[str]]) -> Run:
    path = tmp_path / f"trials-{np_}.json"
    path.write_text(json.dumps(trials))
    run = run_trainer(["--trial-list", str(path)], np=np_, env={"PYTHONPATH": str(ROOT)})
    assert run.code == 0, run.stderr[-3000:]
    return run


def _result(run: Run, trial: str) -> dict[str, Any]:
    return run.of("result", trial)[-1]


@pytest.fixture(scope="module")
def one(tmp_path_factory: pytest.TempPathFactory) -> Run:
    trials = [
        _trial("memory", "in_memory"),
        _trial("streamed", "streamed"),
        _trial("slow", "slow_input", "--max-epochs", "2", "--progress-seconds", "0.05"),
        _trial("mlp-progress", "good", "--progress-seconds", "0.0001"),
        _trial("plain", "regularised", "--learning-rate", "1e-12", "--max-epochs", "1"),
        _trial("l2", "regularised", "--learning-rate", "1e-12", "--max-epochs", "1",
               params={"l2": 0.1}),
        _trial("l2-streamed", "streamed_regularised", params={"l2": 0.01}),
        _trial("all-memory", "in_memory", size=None),
        _trial("all-streamed", "streamed", size=None),
    ]  # fmt: skip
    return _run(tmp_path_factory.mktemp("one"), 1, trials)


@pytest.fixture(scope="module")
def two(tmp_path_factory: pytest.TempPathFactory) -> Run:
    trials = [
        _trial("streamed", "streamed"),
        _trial("l2-streamed", "streamed_regularised", params={"l2": 0.01}),
    ]
    return _run(tmp_path_factory.mktemp("two"), 2, trials)


def test_records_train_exactly_as_the_same_examples_in_memory(one: Run) -> None:
    memory, streamed = _result(one, "memory"), _result(one, "streamed")
    assert streamed["phase"] == "Succeeded"
    assert (streamed["epochs"], streamed["steps"]) == (3, 12)
    # the same examples per global batch, in the same order, computed by the same graph ops
    np.testing.assert_allclose(
        streamed["curves"]["epochLoss"], memory["curves"]["epochLoss"], rtol=1e-6
    )
    np.testing.assert_allclose(
        streamed["curves"]["updateLoss"], memory["curves"]["updateLoss"], rtol=1e-6
    )
    assert streamed["initialLoss"] == pytest.approx(memory["initialLoss"], rel=1e-6)
    assert streamed["testAccuracy"] == pytest.approx(memory["testAccuracy"], rel=1e-6)
    assert streamed["gradientNoiseScale"] == pytest.approx(memory["gradientNoiseScale"], rel=1e-5)
    assert all(memory[k] is None for k in FIELDS)
    assert streamed["inputWaitSeconds"] >= 0.0
    assert streamed["stepCallSeconds"] > 0.0


def test_records_train_the_same_on_two_processes_as_on_one(one: Run, two: Run) -> None:
    a, b = _result(one, "streamed"), _result(two, "streamed")
    assert (b["processes"], b["steps"]) == (2, 12)
    np.testing.assert_allclose(a["curves"]["epochLoss"], b["curves"]["epochLoss"], rtol=1e-6)
    np.testing.assert_allclose(a["curves"]["updateLoss"], b["curves"]["updateLoss"], rtol=1e-6)
    assert b["testAccuracy"] == pytest.approx(a["testAccuracy"], rel=1e-6)
    for event in two.of("epoch", "streamed"):
        assert all(event[k] is not None for k in FIELDS)
    regularised = _result(two, "l2-streamed")
    assert regularised["phase"] == "Succeeded"
    assert regularised["initialLoss"] > a["initialLoss"]  # the penalty is in the loss


def test_a_penalised_model_takes_the_same_steps_on_two_processes_as_on_one(
    one: Run, two: Run
) -> None:
    """The penalty is added once after the sum over ranks, as on one process: the same float32
    arithmetic, so the same weights to the last bit (adding 1/N of it on each rank before the
    sum rounded differently, and a CNN grew that to a 10% different loss in 5 epochs)."""
    a, b = _result(one, "l2-streamed"), _result(two, "l2-streamed")
    assert a["params"] == b["params"]
    np.testing.assert_allclose(a["curves"]["epochLoss"], b["curves"]["epochLoss"], rtol=1e-7)


def test_a_slow_input_pipeline_is_reported_input_bound(one: Run) -> None:
    slow, fast = _result(one, "slow"), _result(one, "streamed")
    assert slow["inputBound"] is True
    assert slow["inputWaitFraction"] > 0.5
    assert slow["inputWaitFraction"] > fast["inputWaitFraction"]
    # Each epoch is input-bound too. Not "waits longer than it computes" in every epoch: on a
    # loaded machine one epoch's step calls once took 34 ms against its 25 ms of waiting.
    for event in one.of("epoch", "slow"):
        assert event["inputBound"] is True
        assert event["inputWaitSeconds"] > 0


def test_long_epochs_report_progress_between_epoch_ends(one: Run) -> None:
    """Streamed and in memory: `progress` events inside the epochs, each saying how far it got."""
    for trial in ("slow", "mlp-progress"):
        progress = one.of("progress", trial)
        assert progress, trial
        for event in progress:
            assert 1 <= event["epochSteps"] <= event["stepsPerEpoch"] == 4
            assert event["steps"] >= event["epochSteps"]
            assert event["updateLoss"] > 0
            assert event["trainingSeconds"] > 0
        streamed = trial == "slow"
        assert all((event["inputBound"] is not None) is streamed for event in progress)


def test_a_models_weight_regularisers_are_part_of_its_loss(one: Run) -> None:
    """The same initial weights, with and without an L2 penalty of 0.1 on the kernels: the loss
    differs by exactly 0.1·Σw² (the biases start at zero, so Σw² is the parameters' norm²)."""
    plain, l2 = _result(one, "plain"), _result(one, "l2")
    assert plain["initialParams"] == l2["initialParams"]
    norm2 = l2["initialParams"]["norm"] ** 2
    assert l2["initialLoss"] - plain["initialLoss"] == pytest.approx(0.1 * norm2, rel=1e-5)
    # trained at a negligible rate, the update loss includes it too
    assert l2["curves"]["updateLoss"][0] - plain["curves"]["updateLoss"][0] == pytest.approx(
        0.1 * norm2, rel=1e-5
    )


def test_a_custom_workload_without_a_dataset_size_trains_on_every_example_it_gives(
    one: Run,
) -> None:
    """No --dataset-size: the workload is told None and gives ALL examples; all of them train
    (ceil(80 / 32) = 3 steps an epoch), and the start event and the result say 80."""
    for trial in ("all-memory", "all-streamed"):
        (start,) = one.of("start", trial)
        result = _result(one, trial)
        assert start["config"]["datasetSize"] is None
        assert (start["datasetSize"], start["stepsPerEpoch"]) == (ALL, 3)
        assert (result["phase"], result["datasetSize"], result["steps"]) == ("Succeeded", ALL, 9)
    memory, streamed = _result(one, "all-memory"), _result(one, "all-streamed")
    np.testing.assert_allclose(
        streamed["curves"]["epochLoss"], memory["curves"]["epochLoss"], rtol=1e-6
    )
    assert _result(one, "memory")["datasetSize"] == 100
