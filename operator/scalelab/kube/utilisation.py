"""The mean GPU utilisation of each trial of a cluster experiment, read from a Prometheus that
scrapes NVIDIA's dcgm-exporter (with its Kubernetes pod mapping) and the trainer pods through
our PodMonitor (manifests/monitoring).

Called by `scalelab report --experiment NAME --prometheus URL` (scalelab/cli), which writes
each trial's mean into results.json as `diagnostics.gpuUtilisationPercent` and prints it.
Standard library only: the HTTP API's instant query.
"""

from __future__ import annotations

import json
import urllib.parse
import urllib.request
from collections.abc import Callable
from typing import Any

from scalelab.api import TrialPhase
from scalelab.results.model import ResultsFile

#: Where each trial's mean goes in results.json.
KEY = "gpuUtilisationPercent"
#: Resolution of the mean over a trial's run (a subquery step). Unit: seconds.
STEP_SECONDS = 5
#: GET a URL, return the body (urllib by default; a test passes its own).
Fetch = Callable[[str], bytes]


class PrometheusReadError(Exception):
    """The Prometheus at the URL did not answer a query."""


def _get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=30) as r:
        return bytes(r.read())


def query(namespace: str, trial: str, seconds: float) -> str:
    """PromQL: the trial's GPUs' mean utilisation over the last `seconds` (evaluated at its
    end). dcgm-exporter's pod labels are kept (honorLabels) or renamed exported_*; the GPU's
    pod is joined to the trial by the PodMonitor's label on `up`."""
    window = int(seconds) + STEP_SECONDS
    return (
        "avg(avg_over_time((avg(\n"
        "  label_replace(label_replace(DCGM_FI_DEV_GPU_UTIL,\n"
        '    "pod", "$1", "exported_pod", "(.+)"),\n'
        '    "namespace", "$1", "exported_namespace", "(.+)")\n'
        "  * on (namespace, pod) group_left ()\n"
        "  group by (namespace, pod) (\n"
        f'    up{{namespace="{namespace}", scalelab_dev_trial="{trial}"}})\n'
        f"))[{window}s:{STEP_SECONDS}s]))"
    )


def mean_utilisation(
    url: str, namespace: str, trial: str, start: float, end: float, *, fetch: Fetch = _get
) -> float | None:
    """The mean utilisation (percent) of the trial's GPUs from `start` to `end` (Unix seconds);
    None when Prometheus has no such series (no dcgm-exporter, or not scraped then)."""
    params = urllib.parse.urlencode(
        {"query": query(namespace, trial, max(end - start, 0.0)), "time": f"{end:.3f}"}
    )
    try:
        body: dict[str, Any] = json.loads(fetch(f"{url.rstrip('/')}/api/v1/query?{params}"))
    except (OSError, ValueError) as error:
        raise PrometheusReadError(f"cannot query Prometheus at {url}: {error}") from error
    if body.get("status") != "success":
        raise PrometheusReadError(f"Prometheus at {url}: {body.get('error', body)}")
    result = body["data"]["result"]
    return float(result[0]["value"][1]) if result else None


def annotate(
    results: ResultsFile, namespace: str, url: str, now: float, *, fetch: Fetch = _get
) -> dict[str, float]:
    """Write each started trial's mean utilisation into its diagnostics (KEY); the means by
    trial name. A running trial's mean is up to `now`."""
    means = {}
    for trial in results.trials:
        if trial.started_at is None or trial.phase is TrialPhase.PENDING:
            continue
        end = trial.finished_at if trial.finished_at is not None else now
        mean = mean_utilisation(url, namespace, trial.name, trial.started_at, end, fetch=fetch)
        if mean is not None:
            trial.diagnostics[KEY] = round(mean, 1)
            means[trial.name] = mean
    return means
