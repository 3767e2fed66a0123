"""How `scalelab run` launches a trial of N processes: Horovod's horovodrun command line over Gloo,
in the trainer's interpreter, through scalelab_trainer/horovodrun.py (horovodrun without the
start-up probe that imports TensorFlow once more per launch); one process runs alone."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from scalelab.local.executor import has_horovod
from scalelab.planner import local_command, trainer_command

pytestmark = pytest.mark.unit


def test_one_process_runs_alone_and_n_run_under_horovodrun_over_gloo_in_the_same_python() -> None:
    program = trainer_command(["--trial", "t"], python="/opt/py/bin/python")
    assert local_command(1, program, "/opt/py/bin/python") == program
    assert local_command(2, program, "/opt/py/bin/python") == [
        "/opt/py/bin/python", "-m", "scalelab_trainer.horovodrun",
        "-np", "2", "--gloo", "-H", "localhost:2", *program,
    ]  # fmt: skip


def test_a_python_without_horovod_is_told_apart_from_one_with_it(tmp_path: Path) -> None:
    assert has_horovod(sys.executable)  # the suite's virtualenv, where the trainer runs
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(tmp_path / "bare")],
                   check=True)  # fmt: skip
    assert not has_horovod(str(tmp_path / "bare" / "bin" / "python"))
    assert not has_horovod(str(tmp_path / "no-such-python"))
