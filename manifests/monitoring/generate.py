"""Writes scalelab's alert rules and Grafana dashboard (the package scalelab_monitoring beside this
file: rules.py, dashboard.py, files.py).

    python manifests/monitoring/generate.py            # rewrite the generated files
    python manifests/monitoring/generate.py --check    # exit 1 when a committed file drifted

The tests in tests/observability/ load this file and use `rule_groups` (the rules with short
windows), `dashboard` (every panel's query against a real Prometheus) and `outputs` (drift).
Needs PyYAML and grafana-foundation-sdk (manifests/monitoring/requirements.txt, in the dev venv).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from scalelab_monitoring.dashboard import dashboard
from scalelab_monitoring.files import main, outputs, rules_text
from scalelab_monitoring.rules import DEFAULT_WINDOWS, rule_groups

__all__ = ["DEFAULT_WINDOWS", "dashboard", "main", "outputs", "rule_groups", "rules_text"]

if __name__ == "__main__":
    sys.exit(main())
