"""hack/test.sh builds only for the tiers a pytest command line can select (hack/tiers.py): a
tier left out would fail its tests for want of a binary, one too many only costs time."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import TIERS
from tests.harness.controlplane import REPO

pytestmark = pytest.mark.unit

SCRIPT = REPO / "hack" / "tiers.py"


def tiers(*args: str) -> list[str]:
    out = subprocess.run(
        [sys.executable, str(SCRIPT), *args], capture_output=True, text=True, check=True
    ).stdout
    return out.split()


def test_the_script_names_the_tiers_the_suite_has() -> None:
    assert tiers() == list(TIERS)


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["-m", "unit"], ["unit"]),
        (["-munit"], ["unit"]),
        (["-m", "horovod", "-x", "-q"], ["horovod"]),
        (["-m", "cluster or prometheus"], ["cluster", "prometheus"]),
        (["-m", "not node"], ["unit", "horovod", "cluster", "prometheus"]),
        (["-m", "not (cluster or node)"], ["unit", "horovod", "prometheus"]),
        (["tests/api", "-m", "node", "-m", "unit"], ["unit"]),  # the last -m counts, as in pytest
        (["-m", "unit and node"], []),
    ],
)
def test_a_marker_expression_selects_the_tiers_it_can_match(
    args: list[str], expected: list[str]
) -> None:
    assert tiers(*args) == expected


def test_another_marker_may_be_either_so_its_tiers_still_count() -> None:
    assert tiers("-m", "unit and not slow") == ["unit"]
    assert tiers("-m", "slow") == list(TIERS)
    assert tiers("-m", "not slow") == list(TIERS)


@pytest.mark.parametrize(
    "args", [[], ["-m", ""], ["-m", "unit("], ["-m", "device(serial='1')"], ["-k", "unit"]]
)
def test_no_expression_or_one_it_cannot_follow_builds_for_every_tier(args: list[str]) -> None:
    assert tiers(*args) == list(TIERS)


def test_arguments_after_a_double_dash_are_not_options() -> None:
    assert tiers("--", "-m", "unit") == list(TIERS)


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ([], ""),
        (["-x", "-m", "unit or node"], "unit or node"),
        (["-mnode", "-m", "cluster"], "cluster"),
    ],
)
def test_the_expression_hack_test_narrows_for_its_node_process_is_the_last_one_given(
    args: list[str], expected: str
) -> None:
    out = subprocess.run(
        [sys.executable, str(SCRIPT), "--expression", *args],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert out.strip() == expected
