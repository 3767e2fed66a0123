"""Our monitoring as kube-prometheus-stack runs it, on real pods: the real Prometheus Operator
turns our PodMonitor, ServiceMonitor and PrometheusRule into the Prometheus configuration (no
scrape configuration written by hand), and that Prometheus scrapes every trainer rank and both
operator replicas through Kubernetes service discovery, loads our rules, and fires the stall
and idle-GPU alerts for a trial whose ranks are stopped. GPU utilisation comes from the fake
dcgm-exporter (hack/node/fake-dcgm-exporter), labelled with the pods the kubelet gave the fake
GPUs to, and is joined to trials by the dashboard's queries and `scalelab report --prometheus`.
The fixtures are tests/node/conftest.py's operated_monitoring (tests/harness/promop.py)."""

from __future__ import annotations

import json
import signal
import time

import pytest
import yaml

from scalelab.kube import utilisation
from tests.harness import dcgm
from tests.harness.controlplane import ControlPlane
from tests.harness.objects import items, wait_for
from tests.harness.prometheus import Prometheus
from tests.harness.promop import OUR_JOBS, PrometheusOperator
from tests.node.conftest import OPERATOR_NS, REPO, apply
from tests.node.test_real_pod_faults import _trainers
from tests.node.test_real_pods import LONG_TRIAL, experiment, trial_diagnostics

pytestmark = pytest.mark.node
SHIPPED_RULES = REPO / "manifests" / "monitoring" / "prometheusrule.yaml"
DASHBOARD = REPO / "manifests" / "monitoring" / "dashboards" / "scalelab.json"


def test_the_rendered_configuration_holds_only_the_monitors_jobs_and_scrapes_both_replicas(
    operated_monitoring: tuple[PrometheusOperator, Prometheus],
) -> None:
    _, prom = operated_monitoring
    assert prom.config is not None
    jobs = sorted(c["job_name"].rsplit("/", 1)[0] + "/" for c in prom.config["scrape_configs"])
    assert jobs == sorted([*OUR_JOBS, dcgm.JOB])  # ours and the GPU exporter's
    assert all(c["kubernetes_sd_configs"] for c in prom.config["scrape_configs"])
    # Both replicas, active and standby, through the Service's endpoints; one leads.
    try:
        prom.wait_for(
            f'count(up{{namespace="{OPERATOR_NS}", service="scalelab-operator-metrics"}} == 1)'
            " == 2",
            timeout=90,
        )
    except TimeoutError:
        targets = [
            (t["labels"], t["health"], t.get("lastError"))
            for t in prom.active_targets()
            if t["labels"].get("namespace") == OPERATOR_NS
        ]
        raise AssertionError(f"the operator's targets: {targets}") from None
    prom.wait_for("sum(scalelab_operator_leader) == 1", timeout=60)
    # The shipped PrometheusRule's groups are loaded as they are, beside the test-window copy.
    shipped = {g["name"] for g in yaml.safe_load(SHIPPED_RULES.read_text())["spec"]["groups"]}
    loaded = {g["name"] for g in prom.api("rules")["groups"]}
    assert shipped <= loaded
    assert {f"{g}-test-windows" for g in shipped} <= loaded


def dcgm_panel_queries(namespace: str, experiment_name: str) -> list[str]:
    """The dashboard's DCGM panel queries, variables substituted as Grafana would."""
    board = json.loads(DASHBOARD.read_text())
    panels = [p for p in board["panels"] if "(DCGM)" in p.get("title", "")]
    assert len(panels) == 1
    return [
        t["expr"].replace("$namespace", namespace).replace("$experiment", experiment_name)
        for t in panels[0]["targets"]
    ]


def test_a_two_process_trials_ranks_and_gpus_are_scraped_then_stopped_ranks_fire_both_alerts(
    installed: ControlPlane, pod_prometheus: Prometheus, namespace: str
) -> None:
    cp, prom = installed, pod_prometheus
    name = apply(cp, namespace, experiment(
        "stopped-two", **LONG_TRIAL, sweep={"batchSizes": [32], "gpus": [2]},
        resources={"gpusPerProcess": 1, "processesPerWorker": 1},
    ))  # fmt: skip
    samples = f'scalelab_trainer_samples_total{{namespace="{namespace}"}}'
    try:
        prom.wait_for(f"count(count by (rank, pod) (rate({samples}[5s]) > 0)) == 2", timeout=300)
    except TimeoutError:
        raise AssertionError(trial_diagnostics(cp, namespace)) from None
    trial = items(cp, "st", namespace)[0]["metadata"]["name"]
    # GPU utilisation of the trial's two fake GPUs, joined to its pods: each panel query
    # (per GPU, and the configuration's mean) and the report's mean over the run so far.
    per_gpu, mean = dcgm_panel_queries(namespace, name)
    gpus = prom.wait_for(f"({per_gpu}) > 0", timeout=60)
    assert {s["metric"]["gpus"] for s in gpus} == {"2"}
    assert len({(s["metric"]["pod"], s["metric"]["gpu"]) for s in gpus}) == 2, gpus
    assert [s["metric"]["batch_size"] for s in prom.wait_for(mean, timeout=30)] == ["32"]
    busy = utilisation.mean_utilisation(prom.url, namespace, trial, time.time() - 20, time.time())
    assert busy is not None
    assert busy > 10
    ranks = wait_for(lambda: _trainers(trial), 60, "both trainer processes")
    assert len(ranks) == 2
    for p in ranks:
        p.send_signal(signal.SIGSTOP)
    try:
        for alert in ("ScalelabTrialStalled", "ScalelabTrialGPUsIdle"):
            firing = prom.wait_for(
                f'ALERTS{{alertname="{alert}", alertstate="firing", '
                f'namespace="{namespace}", trial="{trial}"}}',
                timeout=120,
            )
            assert firing[0]["metric"]["severity"] == "warning"
    finally:
        for p in ranks:
            p.send_signal(signal.SIGCONT)
