"""workload.datasetSize left out never means a silent 100 for a team's own model: a built-in
dataset keeps its documented default (the lab's 100), a custom workload trains on every example it
provides (the trainer is not told a size); `validate` and `plan` can say which, the grid's rule
skips a batch only against a size known before the trial runs, and the results file says the
size the trials used."""

from __future__ import annotations

from typing import Any

import pytest

from scalelab import api
from scalelab.planner import RUNNABLE_GRID, dataset_size_text, plan, trainer_flags
from scalelab.results.model import new_results
from scalelab.validation import parse_experiment

pytestmark = pytest.mark.unit

CUSTOM = {"model": "custom", "dataset": "custom", "entryPoint": "team.models:build"}


def experiment(**spec: Any) -> api.ScaleExperiment:
    return parse_experiment(
        {
            "apiVersion": api.API_VERSION,
            "kind": "ScaleExperiment",
            "metadata": {"name": "x"},
            "spec": spec,
        }
    )


def _size_flag(exp: api.ScaleExperiment) -> str | None:
    argv = trainer_flags(plan(exp)[0].spec, "t")
    return argv[argv.index("--dataset-size") + 1] if "--dataset-size" in argv else None


def test_a_built_in_dataset_without_a_size_keeps_its_documented_default() -> None:
    exp = experiment()
    assert exp.spec.workload.dataset_size is None
    assert exp.spec.workload.examples() == api.DEFAULT_DATASET_SIZE == 100
    assert _size_flag(exp) == "100"
    assert dataset_size_text(exp.spec.workload) == "datasetSize: 100 (default for lab1-line)"
    digits = experiment(workload={"model": "mlp", "dataset": "digits"}).spec.workload
    assert dataset_size_text(digits) == "datasetSize: 100 (default for digits)"


def test_a_custom_workload_without_a_size_trains_on_every_example_it_provides() -> None:
    exp = experiment(workload=CUSTOM, sweep={"batchSizes": [4096]})
    assert exp.spec.workload.examples() is None
    assert _size_flag(exp) is None  # the trainer counts what the workload returns
    assert dataset_size_text(exp.spec.workload) == (
        "datasetSize: all examples the workload provides"
    )
    assert not plan(exp)[0].skipped  # the batch cannot be checked against an unknown size


def test_a_set_size_is_passed_and_said_as_it_is() -> None:
    exp = experiment(workload={**CUSTOM, "datasetSize": 512}, sweep={"batchSizes": [64]})
    assert _size_flag(exp) == "512"
    assert dataset_size_text(exp.spec.workload) == "datasetSize: 512"


def test_a_batch_above_the_default_size_is_skipped_in_python_and_by_the_cel_rule() -> None:
    exp = experiment(sweep={"batchSizes": [200, 50]})
    first, second = plan(exp)
    assert first.skipped
    assert "exceeds workload.datasetSize=100" in first.reason
    assert not second.skipped
    wire = exp.spec.model_dump(by_alias=True, mode="json", exclude_none=True)
    assert RUNNABLE_GRID.broken({**wire, "sweep": {**wire["sweep"], "batchSizes": [200]}})
    assert not RUNNABLE_GRID.broken(wire)
    custom = experiment(workload=CUSTOM, sweep={"batchSizes": [200]})
    assert not RUNNABLE_GRID.broken(custom.spec.model_dump(by_alias=True, mode="json",
                                                           exclude_none=True))  # fmt: skip


def test_the_results_file_says_the_size_the_trials_used() -> None:
    spec = new_results(experiment(), [], host={}).spec
    assert spec["workload"]["datasetSize"] == 100
    custom = new_results(experiment(workload=CUSTOM), [], host={}).spec
    assert custom["workload"]["datasetSize"] is None
