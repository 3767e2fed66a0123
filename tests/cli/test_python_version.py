"""`scalelab run` says, before a sweep starts, that the trainer needs Python 3.11 (TensorFlow
2.15's newest), instead of failing every trial on an import; the other commands do not care."""

from __future__ import annotations

import pytest

from scalelab.cli import main, trainer_python_problem

pytestmark = pytest.mark.unit


def test_python_3_12_is_refused_for_local_runs_naming_what_works() -> None:
    problem = trainer_python_problem(overridden=False, version=(3, 12))
    assert problem is not None
    assert "Python 3.11" in problem
    assert "this is Python 3.12" in problem
    assert "SCALELAB_TRAINER_PYTHON" in problem
    assert "report" in problem


def test_python_3_11_or_a_trainer_interpreter_of_its_own_is_accepted() -> None:
    assert trainer_python_problem(overridden=False, version=(3, 11)) is None
    assert trainer_python_problem(overridden=True, version=(3, 13)) is None


def test_scalelab_run_on_python_3_12_exits_before_reading_the_experiment(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("SCALELAB_TRAINER_PYTHON", raising=False)
    monkeypatch.setattr("sys.version_info", (3, 12, 0, "final", 0))
    assert main(["run", "no-such-file.yaml"]) != 0
    assert "TensorFlow 2.15" in capsys.readouterr().err
