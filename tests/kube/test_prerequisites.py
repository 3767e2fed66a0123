"""How often the operator asks the cluster for a missing prerequisite: a missing API is asked
again after 5, 10, 20, 40, then every 60 seconds (not every pass); a served one is trusted for a
minute; a 404 on create forgets the answer. The real API server's side is in
tests/cluster/test_prerequisites.py."""

from __future__ import annotations

import itertools

import pytest

from scalelab.kube.prerequisites import Prerequisites

MAX_RETRY_SECONDS = SERVED_TTL_SECONDS = 60.0

pytestmark = pytest.mark.unit


def test_a_missing_api_is_asked_again_after_a_doubling_delay_and_a_served_one_is_trusted() -> None:
    now = [0.0]
    checks = Prerequisites(60.0, clock=lambda: now[0])
    asked: list[float] = []
    served = [False]

    def question() -> bool:
        asked.append(now[0])
        return served[0]

    for second in range(0, 400):
        now[0] = float(second)
        checks._ask("mpijob-api", question)
    assert asked[:6] == [0, 5, 15, 35, 75, 135]
    assert all(b - a == MAX_RETRY_SECONDS for a, b in itertools.pairwise(asked[5:]))
    assert len(asked) == 10  # 400 passes, 10 discovery requests
    served[0] = True
    now[0] = 1000.0
    assert checks._ask("mpijob-api", question) is True
    now[0] = 1000.0 + SERVED_TTL_SECONDS - 1
    assert checks._ask("mpijob-api", question) is True
    assert len(asked) == 11
    checks.forget("mpijob-api")
    assert checks._ask("mpijob-api", question) is True
    assert len(asked) == 12
