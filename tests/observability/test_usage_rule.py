"""The recording rule of device time used: per namespace and device, every run counted (the
operator's counter), summed over the operator replicas' series, and kept in the shipped files."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from tests.observability.scene import MONITORING, load_generator

pytestmark = pytest.mark.unit
RECORD = "namespace_device:scalelab_operator_device_seconds:increase1h"


@pytest.fixture(scope="module")
def gen() -> Any:
    return load_generator()


def test_the_usage_rule_records_device_seconds_an_hour_by_namespace_and_device(gen: Any) -> None:
    [group] = [g for g in gen.rule_groups()["groups"] if g["name"] == "scalelab.usage"]
    [rule] = group["rules"]
    assert rule["record"] == RECORD
    expr = " ".join(rule["expr"].split())
    # Summed over replicas (only the leader counts a run) and queues; increase() handles restarts.
    assert expr == (
        "sum by (namespace, device) ( increase(scalelab_operator_device_seconds_total[1h]) )"
    )


def test_the_shipped_rules_file_carries_the_usage_rule() -> None:
    shipped = yaml.safe_load((MONITORING / "rules" / "scalelab.rules.yaml").read_text())
    records = [r.get("record") for g in shipped["groups"] for r in g["rules"]]
    assert RECORD in records
