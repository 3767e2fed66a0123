"""Suite-wide pytest policy: tiers are markers, the real-component fixtures are plugins, and no
test may be skipped silently.

Every tier (unit, horovod, cluster, prometheus, node) runs in CI; a skip means a harness is
missing, so it fails the run unless SCALELAB_ALLOW_SKIPS=1 is set by hand.
"""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest_plugins = ["tests.harness.fixtures"]
TIERS = ("unit", "horovod", "cluster", "prometheus", "node")
BUILD_IMAGES = Path(__file__).resolve().parents[1] / "hack" / "build-images.sh"
_IMAGES_AWAITED = pytest.StashKey[bool]()


def _stop(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def pytest_configure(config: pytest.Config) -> None:
    """SIGTERM (`timeout`, a CI runner) stops the suite as Ctrl-C does, so the session fixtures
    tear down: without this a terminated run left its control planes, the node's processes and
    the node's host changes (addresses, iptables, mounts) behind."""
    signal.signal(signal.SIGTERM, _stop)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Every test belongs to exactly one tier, so `-m <tier>` selections add up to the suite.

    The node tier runs last (a Helm install before the shared kustomize one), each tier's tests
    otherwise in their order: hack/test.sh lets the
    images the node tier needs finish building beside the other tiers (its fixtures wait for
    the build), and tiers depend on nothing of each other (each runs alone with -m)."""
    for item in items:
        tiers = [t for t in TIERS if item.get_closest_marker(t)]
        if len(tiers) != 1:
            item.add_marker(
                pytest.mark.usefixtures("_tier_marker_missing" if not tiers else "_tier_ambiguous")
            )
    items.sort(key=_order)


def _order(item: pytest.Item) -> tuple[bool, bool, bool]:
    """Node tier last; within it, modules that install scalelab themselves (RUNS_BEFORE_INSTALL,
    e.g. with Helm) before the session's kustomize install, which the others share, and modules
    marked RUNS_LAST after the rest."""
    module = getattr(item, "module", None)
    return (
        item.get_closest_marker("node") is not None,
        not getattr(module, "RUNS_BEFORE_INSTALL", False),
        getattr(module, "RUNS_LAST", False),
    )


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[None]:
    """Before the first node-tier test, the images it runs: hack/test.sh may still be building
    them (minutes when sources changed). Here, outside the test's timeout, which pytest-timeout
    starts inside this wrapper; a failed build is left to the fixtures, which run it again."""
    if item.get_closest_marker("node") and not item.config.stash.get(_IMAGES_AWAITED, False):
        item.config.stash[_IMAGES_AWAITED] = True
        subprocess.run(
            ["bash", str(BUILD_IMAGES)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            check=False,
        )
    return (yield)


@pytest.fixture
def _tier_marker_missing() -> None:
    pytest.fail(f"tests need exactly one tier marker of {TIERS} (set pytestmark in the module)")


@pytest.fixture
def _tier_ambiguous() -> None:
    pytest.fail(f"tests need exactly one tier marker of {TIERS}, found several")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    report: pytest.TestReport = yield  # type: ignore[misc]
    if (
        report.skipped
        and not hasattr(report, "wasxfail")
        and os.environ.get("SCALELAB_ALLOW_SKIPS") != "1"
    ):
        report.outcome = "failed"
        report.longrepr = (
            f"{item.nodeid} was skipped; skips fail this suite (SCALELAB_ALLOW_SKIPS=1 to allow): "
            f"{report.longrepr}"
        )
    return report  # type: ignore[return-value]
