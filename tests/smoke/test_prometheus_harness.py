"""The Prometheus harness is real: it scrapes an exporter started here and answers PromQL."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, Gauge, start_http_server

from tests.harness.ports import free_port
from tests.harness.prometheus import Prometheus

pytestmark = pytest.mark.prometheus


def test_prometheus_scrapes_a_test_exporter_and_promql_returns_its_value(
    prometheus: Prometheus,
) -> None:
    registry = CollectorRegistry()
    gauge = Gauge("scalelab_smoke_value", "A value set by the smoke test.", registry=registry)
    gauge.set(42.5)
    port = free_port()
    server, _thread = start_http_server(port, addr="127.0.0.1", registry=registry)
    try:
        prometheus.set_targets([f"127.0.0.1:{port}"], {"smoke": "yes"})
        result = prometheus.wait_for('scalelab_smoke_value{smoke="yes"}', timeout=30)
        assert float(result[0]["value"][1]) == 42.5
        gauge.set(7)
        prometheus.wait_for('scalelab_smoke_value{smoke="yes"} == 7', timeout=30)
    finally:
        server.shutdown()
        prometheus.set_targets([])
