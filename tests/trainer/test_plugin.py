"""User workloads (scalelab_trainer.plugin): a good one trains like a built-in workload, on 1 and 2
real Horovod processes alike; every broken one ends its trial Failed with a reason naming the
cause, on every rank, and the next trial of the same process still runs (no rank is left waiting
in a collective)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.trainer.trainer_run import Run, run_trainer

pytestmark = pytest.mark.horovod

ROOT = Path(__file__).resolve().parents[2]
CASES = "tests.trainer.plugin_cases"

#: trial → (entry point, what its reason must say); None: it succeeds.
TRIALS: dict[str, tuple[str, str | None]] = {
    "good": (f"{CASES}:good", None),
    "no-module": ("tests.trainer.no_such_module:good", "cannot import 'tests.trainer.no_such"),
    "no-function": (f"{CASES}:missing", "has no function 'missing'"),
    "raises": (f"{CASES}:raises", "raised ValueError: parameter depth must be > 0"),
    "builder": (f"{CASES}:builder_raises", "the model builder raised RuntimeError: out of ideas"),
    "misfit": (f"{CASES}:output_misfit", "does not fit mean_squared_error with targets (2,)"),
    "labels": (f"{CASES}:labels_outside", "labels span [0, 4]"),
    "input": (f"{CASES}:wrong_input_shape", "the model cannot take the data: x examples of shape"),
    "uneven": (f"{CASES}:uneven", "x has 128 examples but y has 127"),
    "not-workload": (f"{CASES}:not_a_workload", "must return scalelab_trainer.plugin.Workload"),
    "activity": (f"{CASES}:activity_regularised", "activity regularisers are not supported"),
    "shape": (f"{CASES}:records_of_unknown_shape", "load must give every example the same shape"),
    "few-records": (f"{CASES}:too_few_records", "records has 127 keys; workload.datasetSize"),
    "regression": (f"{CASES}:regression", None),
    "good-again": (f"{CASES}:good", None),
}


def _trial(name: str, entry: str, *extra: str) -> list[str]:
    return [
        "--trial", name, "--model", "custom", "--dataset", "custom", "--entry-point", entry,
        "--workload-parameters", json.dumps({"units": 6}), "--dataset-size", "128",
        "--batch-size", "32", "--optimizer", "momentum", "--learning-rate", "0.05",
        "--max-epochs", "3", "--relative-tolerance", "0", "--shuffle", *extra,
    ]  # fmt: skip


def _run(tmp_path: Path, np: int, trials: dict[str, tuple[str, str | None]]) -> Run:
    path = tmp_path / f"trials-{np}.json"
    path.write_text(json.dumps([_trial(name, entry) for name, (entry, _) in trials.items()]))
    return run_trainer(["--trial-list", str(path)], np=np, env={"PYTHONPATH": str(ROOT)})


@pytest.fixture(scope="module")
def two(tmp_path_factory: pytest.TempPathFactory) -> Run:
    extra = {
        "rank-data": (f"{CASES}:rank_dependent", "data differ between ranks"),
        "rank-1": (f"{CASES}:fails_on_rank_1", "failed on rank(s) [1]"),
    }
    return _run(tmp_path_factory.mktemp("two"), 2, {**TRIALS, **extra})


def _results(run: Run) -> dict[str, dict[str, object]]:
    return {e["trial"]: e for e in run.of("result")}


def test_every_broken_plugin_fails_its_trial_with_the_cause_on_two_processes(two: Run) -> None:
    results = _results(two)
    assert two.code == 1, two.stderr[-3000:]
    for name, (_, reason) in {**TRIALS, "rank-data": ("", "data differ between ranks")}.items():
        result = results[name]
        if reason is None:
            assert result["phase"] == "Succeeded", (name, result.get("reason"))
        else:
            assert result["phase"] == "Failed", name
            assert str(result["reason"]).startswith("PluginError: "), result["reason"]
            assert reason in str(result["reason"]), (name, result["reason"])
    assert "failed on rank(s) [1]" in str(results["rank-1"]["reason"])


def test_a_user_workload_trains_like_a_built_in_one_on_one_and_two_processes(
    two: Run, tmp_path: Path
) -> None:
    one = _run(tmp_path, 1, {k: TRIALS[k] for k in ("good", "regression")})
    assert one.code == 0, one.stderr[-3000:]
    for name in ("good", "regression"):
        a, b = _results(one)[name], _results(two)[name]
        # The same examples per global batch on 1 and 2 processes: the same training.
        np.testing.assert_allclose(
            a["curves"]["epochLoss"],
            b["curves"]["epochLoss"],
            rtol=2e-5,  # type: ignore[index]
        )
        assert (a["epochs"], a["steps"], b["processes"]) == (3, 12, 2)
        assert a["gradientNoiseScale"] is not None
        assert b["gradientNoiseScale"] is not None
        assert a["samplesPerSecond"]
    good = _results(one)["good"]
    assert 0.5 < float(good["testAccuracy"]) <= 1.0  # type: ignore[arg-type]
    assert _results(one)["regression"]["testAccuracy"] is None
    assert good["config"]["workloadParameters"] == '{"units": 6}'  # type: ignore[index]
    assert good["params"]["count"] == 2 * 6 + 6 + 6 * 2 + 2  # type: ignore[index]
    # A failed plugin costs its trial only: the trial after the failures trains the same.
    assert _results(two)["good-again"]["finalLoss"] == _results(two)["good"]["finalLoss"]
