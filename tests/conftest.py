"""Suite-wide pytest policy: tiers are markers, and no test may be skipped silently.

Every tier (unit, horovod, cluster, prometheus) runs in CI; a skip means a harness is missing,
so it fails the run unless SCALELAB_ALLOW_SKIPS=1 is set by hand.
"""

from __future__ import annotations

import os

import pytest


def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> None:
    """Placeholder hook so the report wrapper below has a stable name."""


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_logreport(report: pytest.TestReport):  # type: ignore[no-untyped-def]
    if report.skipped and os.environ.get("SCALELAB_ALLOW_SKIPS") != "1" and not hasattr(
        report, "wasxfail"
    ):
        report.outcome = "failed"
        report.longrepr = f"skipped tests fail the suite (set SCALELAB_ALLOW_SKIPS=1): {report.longrepr}"
    yield
