"""`scalelab plan` on an adaptive sweep marks the pilot: the trial at the middle candidate batch
that runs first and measures B_simple (scalelab.adaptive.pilot_trial); a grid sweep has none."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from scalelab.cli import PILOT_MARK, main

pytestmark = pytest.mark.unit

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def test_plan_marks_the_adaptive_pilot_at_the_middle_candidate_batch(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["plan", str(EXAMPLES / "lab3-adaptive.yaml")]) == 0
    table = capsys.readouterr().out.split("\n\n")[0].splitlines()[1:]
    marked = [line.split()[0] for line in table if PILOT_MARK in line]
    assert marked == ["lab3-adaptive-b128-g1"]  # candidates 8 … 4096: the lower middle is 128
    assert main(["plan", str(EXAMPLES / "lab3-adaptive.yaml"), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["name"] for r in rows if r["pilot"]] == ["lab3-adaptive-b128-g1"]


def test_plan_marks_no_pilot_on_a_grid_sweep(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plan", str(EXAMPLES / "lab3-large-batch.yaml")]) == 0
    assert PILOT_MARK not in capsys.readouterr().out
    assert main(["plan", str(EXAMPLES / "lab3-large-batch.yaml"), "--json"]) == 0
    assert not any(r["pilot"] for r in json.loads(capsys.readouterr().out))
