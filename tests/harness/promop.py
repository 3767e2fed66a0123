"""The real Prometheus Operator (hack/build-prometheus-operator.sh) against a test API server,
and a Prometheus (hack/build-prometheus.sh, with Kubernetes service discovery) run from the
configuration the operator renders for a Prometheus object.

Used by the node tier (tests/node/conftest.py's pod_prometheus, tests/node/
test_prometheus_operator.py): our PodMonitor, ServiceMonitor and PrometheusRule are read by the
operator itself, so no scrape configuration in the tests is written by hand.

Why Prometheus runs from the rendered configuration and not as the operator deploys it (a
StatefulSet of the Prometheus image with the config-reloader sidecar): no registry is reachable
from the node, so both images would have to be built here as ours are, for no gain in what is
proven. What the operator makes of our objects is the configuration Secret it writes (the
StatefulSet only mounts it), and the rule ConfigMaps; this harness reads both and changes what
the operator's pod would provide: the variables its config-reloader substitutes from the pod's
environment (the shard, the pod name), the service discovery's credentials (the pod's
ServiceAccount token becomes the admin kubeconfig) and the rule files' directory (a mount). The
Prometheus object has no replicas, so the operator's StatefulSet starts no pod.
"""

from __future__ import annotations

import base64
import gzip
import json
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tests.harness import dcgm
from tests.harness.controlplane import REPO, ControlPlane
from tests.harness.ports import free_port, wait_until
from tests.harness.prometheus import Prometheus

ESTABLISHED = "jsonpath={.status.conditions[?(@.type=='Established')].status}"
NAMESPACE = "monitoring"
#: Where the operator's pods mount the rule ConfigMaps (pkg/prometheus/common.go RulesDir).
RULES_DIR = "/etc/prometheus/rules"
#: The operator's kinds the tests use.
CRDS = ("prometheuses", "podmonitors", "servicemonitors", "prometheusrules")


def build(script: str) -> Path:
    """The directory a hack/build-*.sh script prints last (it builds once, minutes cold)."""
    out = subprocess.run(
        ["bash", str(REPO / "hack" / script)], check=True, capture_output=True, text=True
    ).stdout
    return Path(out.strip().splitlines()[-1])


def prometheus_object(name: str, interval: str) -> dict[str, Any]:
    """A Prometheus selecting every PodMonitor, ServiceMonitor and PrometheusRule in the
    cluster (kube-prometheus-stack selects by a release label instead: docs/monitoring.md)."""
    every: dict[str, Any] = {}
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "Prometheus",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {
            "replicas": 0,
            "scrapeInterval": interval,
            "evaluationInterval": interval,
            "podMonitorSelector": every,
            "podMonitorNamespaceSelector": every,
            "serviceMonitorSelector": every,
            "serviceMonitorNamespaceSelector": every,
            "ruleSelector": every,
            "ruleNamespaceSelector": every,
            "replicaExternalLabelName": "",
        },
    }


@dataclass
class PrometheusOperator:
    """The operator as a host process with the admin kubeconfig (as the node tier runs the MPI
    operator), watching every namespace, its Prometheus objects in NAMESPACE."""

    cp: ControlPlane
    workdir: Path
    port: int = 0
    proc: subprocess.Popen[bytes] | None = None
    home: Path = field(default_factory=lambda: build("build-prometheus-operator.sh"))

    def start(self) -> PrometheusOperator:
        # The CRDs are too large for client-side apply's last-applied annotation.
        self.cp.kubectl("apply", "--server-side", "-f", str(self.home / "crds.yaml"))
        for crd in (f"{k}.monitoring.coreos.com" for k in CRDS):  # polled: see wait_established
            wait_until(
                lambda crd=crd: (
                    "True" in self.cp.kubectl("get", "crd", crd, "-o", ESTABLISHED).stdout
                ),
                60,
                f"CRD {crd} established",
            )
        self.cp.kubectl("create", "namespace", NAMESPACE)
        self.port = free_port()
        log = open(self.workdir / "prometheus-operator.log", "wb")  # noqa: SIM115 - process
        self.proc = subprocess.Popen(
            [
                str(self.home / "operator"),
                f"--web.listen-address=127.0.0.1:{self.port}",
                f"--prometheus-instance-namespaces={NAMESPACE}",
            ],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            env={"KUBECONFIG": str(self.cp.kubeconfig), "PATH": "/usr/bin:/bin"},
        )  # fmt: skip
        return self

    def log_tail(self, lines: int = 30) -> str:
        p = self.workdir / "prometheus-operator.log"
        return "\n".join(p.read_text(errors="replace").splitlines()[-lines:])

    def rendered(self, name: str, jobs: list[str], timeout: float = 120) -> dict[str, Any]:
        """The configuration the operator rendered for Prometheus `name`, once it has a scrape
        job for each of `jobs` (prefixes, e.g. "podMonitor/scalelab-system/scalelab-trainers")."""
        found: dict[str, Any] = {}

        def ready() -> bool:
            nonlocal found
            r = self.cp.kubectl(
                "get", "secret", f"prometheus-{name}", "-n", NAMESPACE, "-o", "json", check=False
            )
            if r.returncode != 0:
                return False
            data = json.loads(r.stdout)["data"]["prometheus.yaml.gz"]
            found = yaml.safe_load(gzip.decompress(base64.b64decode(data)))
            names = [c["job_name"] for c in found.get("scrape_configs") or []]
            return all(any(n.startswith(j) for n in names) for j in jobs)

        try:
            wait_until(ready, timeout, f"the operator to render scrape jobs {jobs}")
        except TimeoutError:
            raise AssertionError(f"{found}\n--- operator log\n{self.log_tail()}") from None
        return found

    def rule_files(self, name: str, into: Path) -> None:
        """The rule ConfigMaps of Prometheus `name`, written as the operator's pod mounts them."""
        r = self.cp.kubectl(
            "get", "configmaps", "-n", NAMESPACE, "-l", f"prometheus-name={name}", "-o", "json"
        )
        for cm in json.loads(r.stdout)["items"]:
            d = into / cm["metadata"]["name"]
            d.mkdir(parents=True, exist_ok=True)
            for key, text in (cm.get("data") or {}).items():
                (d / key).write_text(text)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=15)


def local_config(
    rendered: dict[str, Any], kubeconfig: Path, rules: Path, pod: str
) -> dict[str, Any]:
    """The rendered configuration as this host runs it: the variables the operator's
    config-reloader substitutes from the pod's environment (`$(SHARD)`: 0, `$(POD_NAME)`:
    `pod`), service discovery with `kubeconfig` instead of the pod's ServiceAccount, rule files
    under `rules` instead of RULES_DIR."""
    text = json.dumps(rendered).replace("$(SHARD)", "0").replace("$(POD_NAME)", pod)
    config: dict[str, Any] = json.loads(text)
    for job in config.get("scrape_configs") or []:
        for sd in job.get("kubernetes_sd_configs") or []:
            assert "api_server" not in sd, sd  # in-cluster discovery is what is replaced
            sd["kubeconfig_file"] = str(kubeconfig)
    config["rule_files"] = [
        f.replace(RULES_DIR, str(rules), 1) for f in config.get("rule_files") or []
    ]
    return config


def operated_prometheus(
    op: PrometheusOperator, name: str, jobs: list[str], workdir: Path, interval: str = "1s"
) -> Prometheus:
    """Create Prometheus `name`, wait for the operator to render `jobs`, and start our built
    Prometheus from that configuration and its rule files."""
    op.cp.kubectl("apply", "-f", "-", input=yaml.safe_dump(prometheus_object(name, interval)))
    rendered = op.rendered(name, jobs)
    workdir.mkdir(parents=True, exist_ok=True)
    rules = workdir / "rules"
    op.rule_files(name, rules)
    binary = build("build-prometheus.sh") / "prometheus"
    return Prometheus(
        workdir=workdir,
        binary=str(binary),
        config=local_config(rendered, op.cp.kubeconfig, rules, f"prometheus-{name}-0"),
    ).start()


#: The scrape jobs the operator makes of our PodMonitor and ServiceMonitor.
OUR_JOBS = [
    "podMonitor/scalelab-system/scalelab-trainers/",
    "serviceMonitor/scalelab-system/scalelab-operator/",
]


def test_windows_rule(rules_text: str) -> dict[str, Any]:
    """A PrometheusRule of our rule groups rendered with the tests' short windows (the shipped
    ones wait 10 min before a stall counts), groups renamed so that both load side by side."""
    groups = yaml.safe_load(rules_text)["groups"]
    for g in groups:
        g["name"] += "-test-windows"
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {"name": "scalelab-test-windows", "namespace": "scalelab-system"},
        "spec": {"groups": groups},
    }


@contextmanager
def operated(
    cp: ControlPlane, overlay: Path, rules_text: str, workdir: Path, node_ip: str
) -> Iterator[tuple[PrometheusOperator, Prometheus]]:
    """Our monitoring objects applied (`kubectl apply -k overlay`, plus `test_windows_rule`),
    the fake dcgm-exporter on the node's address with its ServiceMonitor (tests/harness/
    dcgm.py), the operator running, and Prometheus from its rendered configuration; all
    stopped after."""
    workdir.mkdir(parents=True, exist_ok=True)
    op = PrometheusOperator(cp, workdir).start()
    exporter, port = dcgm.start_exporter(node_ip, workdir)
    prometheus: Prometheus | None = None
    try:
        cp.kubectl("apply", "-k", str(overlay))
        cp.kubectl("apply", "-f", "-", input=yaml.safe_dump(test_windows_rule(rules_text)))
        cp.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(dcgm.objects(node_ip, port, "1s")))
        prometheus = operated_prometheus(
            op, "scalelab-test", [*OUR_JOBS, dcgm.JOB], workdir / "prometheus"
        )
        yield op, prometheus
    finally:
        if prometheus is not None:
            prometheus.stop()
        exporter.terminate()
        exporter.wait(timeout=15)
        op.stop()
