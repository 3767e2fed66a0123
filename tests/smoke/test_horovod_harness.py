"""The Horovod harness is real: two processes over Gloo exchange tensors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.harness.horovod import horovodrun

pytestmark = pytest.mark.horovod
PROGRAMS = Path(__file__).parent / "programs"


def rank_lines(stdout: str) -> dict[int, dict[str, object]]:
    rows = [
        json.loads(line[line.index("{") :]) for line in stdout.splitlines() if '{"rank"' in line
    ]
    return {int(r["rank"]): r for r in rows}  # type: ignore[call-overload]


def test_allreduce_returns_the_sum_on_both_ranks() -> None:
    import sys

    r = horovodrun(2, [sys.executable, str(PROGRAMS / "allreduce_sum.py")], timeout=180)
    assert r.returncode == 0, r.stderr[-3000:]
    ranks = rank_lines(r.stdout)
    assert set(ranks) == {0, 1}
    for row in ranks.values():
        assert row["size"] == 2
        assert row["sum"] == [3.0, 6.0, 9.0]


def test_distributed_gradient_tape_step_leaves_both_ranks_with_identical_variables() -> None:
    import sys

    r = horovodrun(2, [sys.executable, str(PROGRAMS / "tape_step.py")], timeout=180)
    assert r.returncode == 0, r.stderr[-3000:]
    ranks = rank_lines(r.stdout)
    assert set(ranks) == {0, 1}
    assert ranks[0]["w"] == ranks[1]["w"]
    assert any(abs(v) > 1e-9 for v in ranks[0]["w"])  # type: ignore[attr-defined]
