"""The operator's leader alert: active while no replica, or more than one, says it holds the
Lease (scalelab_operator_leader summed over the replicas), quiet with exactly one. The rule's
`for` is minutes long, so the test reads the alert's pending state."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, Gauge

from tests.harness.ports import wait_until
from tests.observability.scene import Scene

pytestmark = pytest.mark.prometheus

ALERT = "ScalelabOperatorLeader"


def test_no_leader_or_two_leaders_make_the_leader_alert_pending_and_one_quiets_it(
    scene: Scene,
) -> None:
    leader: Gauge = scene.operator.metrics.leader
    try:
        leader.set(1)
        wait_until(lambda: not scene.alerts(ALERT), 60, f"{ALERT} quiet with one leader")
        leader.set(0)
        wait_until(lambda: bool(scene.alerts(ALERT)), 60, f"{ALERT} active with no leader")
        (alert,) = scene.alerts(ALERT)
        assert alert["state"] == "pending"  # not firing before `for`: a failover is not an alert
        assert float(alert["value"]) == 0
        assert alert["labels"]["severity"] == "critical"
        leader.set(1)
        wait_until(lambda: not scene.alerts(ALERT), 60, f"{ALERT} quiet again")
        leader.set(2)  # the sum two replicas that both say they lead export
        wait_until(lambda: bool(scene.alerts(ALERT)), 60, f"{ALERT} active with two leaders")
    finally:
        leader.set(1)


def test_the_leader_gauge_is_part_of_the_operator_metrics() -> None:
    from scalelab.kube.handlers import RECONCILING
    from scalelab.kube.metrics import OperatorMetrics

    registry = CollectorRegistry()
    OperatorMetrics(registry, RECONCILING)
    assert registry.get_sample_value("scalelab_operator_leader") == 0
