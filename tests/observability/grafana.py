"""What Grafana does with the dashboard before it reaches Prometheus: resolve the query variables
(`label_values`) and interpolate `$var`, `${var}`, `${var:fmt}` and `[[var]]` in each target.

Only the parts this dashboard uses; unknown names stay as they are, as in Grafana (so PromQL's
own `$1` in label_replace survives).
"""

from __future__ import annotations

import re
from typing import Any

from tests.harness.prometheus import Prometheus

VARIABLE = re.compile(r"\$(\w+)|\$\{(\w+)(?::[^}]*)?\}|\[\[(\w+)\]\]")
LABEL_VALUES = re.compile(r"^label_values\((?:(?P<selector>.*),\s*)?(?P<label>\w+)\)$", re.S)


def interpolate(text: str, values: dict[str, str]) -> str:
    def repl(m: re.Match[str]) -> str:
        name = m.group(1) or m.group(2) or m.group(3)
        return values.get(name, m.group(0))

    return VARIABLE.sub(repl, text)


def resolve_variables(
    dashboard: dict[str, Any], prometheus: Prometheus, rate_interval: str = "5s"
) -> dict[str, str]:
    """Each query variable's first value (in order, later ones see earlier ones), as Grafana's
    default selection; built-ins for a 1 s scrape interval."""
    values = {"__rate_interval": rate_interval, "__interval": "2s", "__range": "5m"}
    for var in dashboard["templating"]["list"]:
        if var["type"] != "query":
            continue
        query = var["query"]["query"] if isinstance(var["query"], dict) else var["query"]
        m = LABEL_VALUES.match(interpolate(query, values).strip())
        assert m, f"variable {var['name']}: unsupported query {query!r}"
        params = {"match[]": m["selector"]} if m["selector"] else {}
        found = sorted(prometheus.api(f"label/{m['label']}/values", **params))
        assert found, f"variable {var['name']} resolves to no values ({query})"
        values[var["name"]] = found[0]
        values[f"__values_{var['name']}"] = ",".join(found)
    return values


def targets(dashboard: dict[str, Any]) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """(panel, target) for every query of every non-row panel."""
    return [(p, t) for p in dashboard["panels"] if p["type"] != "row" for t in p.get("targets", [])]
