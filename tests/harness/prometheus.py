"""A real Prometheus for tests: started with a generated scrape config on a free loopback port,
queried through its HTTP API.

Used by the `prometheus` pytest fixture (tests/harness/fixtures.py), with Debian's `prometheus`
package; targets are added at run time through a file_sd file, so one server serves every test
of a session. The node tier runs one built from the Go module with Kubernetes discovery instead,
from the configuration the Prometheus Operator renders (tests/harness/promop.py: `binary`,
`config`).
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tests.harness.ports import free_port, wait_until

PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"
PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"


@dataclass
class Prometheus:
    """A running Prometheus scraping the targets written by `set_targets`."""

    workdir: Path
    scrape_interval_seconds: float = 1.0
    evaluation_interval_seconds: float = 1.0
    rule_files: list[Path] = field(default_factory=list)
    #: Scrape configs besides the file_sd job (e.g. kubernetes_sd against a test cluster).
    scrape_configs: list[dict[str, Any]] = field(default_factory=list)
    #: The Prometheus server to run.
    binary: str = PROMETHEUS
    #: A whole configuration to run as it is (rule_files and scrape_configs above unused).
    config: dict[str, Any] | None = None
    port: int = 0
    start_seconds: float = 0.0
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Prometheus:
        started = time.monotonic()
        self.port = free_port()
        self.set_targets([])
        config = {
            "global": {
                "scrape_interval": f"{int(self.scrape_interval_seconds * 1000)}ms",
                "scrape_timeout": f"{int(self.scrape_interval_seconds * 1000)}ms",
                "evaluation_interval": f"{int(self.evaluation_interval_seconds * 1000)}ms",
            },
            "rule_files": [str(p) for p in self.rule_files],
            "scrape_configs": [
                {
                    "job_name": "scalelab",
                    "file_sd_configs": [
                        {"files": [str(self.workdir / "targets.json")], "refresh_interval": "1s"}
                    ],
                },
                *self.scrape_configs,
            ],
        }
        if self.config is not None:
            config = self.config
        (self.workdir / "prometheus.yml").write_text(yaml.safe_dump(config))
        log = open(self.workdir / "prometheus.log", "wb")  # noqa: SIM115 - lives with the process
        self.proc = subprocess.Popen(
            [
                self.binary,
                f"--config.file={self.workdir / 'prometheus.yml'}",
                f"--storage.tsdb.path={self.workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--web.enable-lifecycle",
                "--storage.tsdb.retention.time=1h",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            wait_until(lambda: self._get("/-/ready") is not None, 60, "prometheus")
        except TimeoutError:
            self.stop()
            raise RuntimeError("prometheus did not start:\n" + self.log_tail()) from None
        self.start_seconds = time.monotonic() - started
        return self

    def log_tail(self, lines: int = 30) -> str:
        p = self.workdir / "prometheus.log"
        return "\n".join(p.read_text(errors="replace").splitlines()[-lines:]) if p.exists() else ""

    def _get(self, path: str) -> bytes | None:
        try:
            with urllib.request.urlopen(self.url + path, timeout=5) as r:
                return bytes(r.read())
        except OSError:
            return None

    def set_targets(self, targets: list[str], labels: dict[str, str] | None = None) -> None:
        """Replace the scraped targets (host:port strings); Prometheus reloads the file itself."""
        tmp = self.workdir / "targets.json.tmp"
        tmp.write_text(json.dumps([{"targets": targets, "labels": labels or {}}]))
        tmp.replace(self.workdir / "targets.json")

    def api(self, path: str, **params: str) -> Any:
        """GET /api/v1/<path> and return its `data`, raising on an API error."""
        q = urllib.parse.urlencode(params)
        with urllib.request.urlopen(f"{self.url}/api/v1/{path}?{q}", timeout=10) as r:
            body = json.loads(r.read())
        if body.get("status") != "success":
            raise RuntimeError(f"prometheus {path} {params}: {body}")
        return body["data"]

    def query(self, promql: str) -> list[dict[str, Any]]:
        """An instant query; returns the result vector."""
        data = self.api("query", query=promql)
        return list(data["result"])

    def wait_for(self, promql: str, timeout: float = 30) -> list[dict[str, Any]]:
        """Poll an instant query until it returns at least one series."""
        found: list[dict[str, Any]] = []

        def check() -> bool:
            nonlocal found
            found = self.query(promql)
            return bool(found)

        wait_until(check, timeout, f"PromQL {promql!r}", interval=0.5)
        return found

    def active_targets(self) -> list[dict[str, Any]]:
        return list(self.api("targets")["activeTargets"])

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def start_prometheus(
    workdir: Path,
    rule_files: list[Path] | None = None,
    scrape_configs: list[dict[str, Any]] | None = None,
) -> Prometheus:
    """Start Prometheus in `workdir` with fast scrape and rule evaluation (1 s)."""
    workdir.mkdir(parents=True, exist_ok=True)
    return Prometheus(
        workdir=workdir,
        rule_files=list(rule_files or []),
        scrape_configs=list(scrape_configs or []),
    ).start()
