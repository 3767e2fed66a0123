"""`scalelab report --experiment NAME --prometheus URL`: each started trial's mean GPU
utilisation over its run, asked of Prometheus at the trial's end, lands in its diagnostics;
pending trials are not asked; a Prometheus error is an error, not a silent zero. (The query
itself runs against a real Prometheus on real pods in tests/node/test_prometheus_operator.py.)"""

from __future__ import annotations

import json
import urllib.parse

import pytest

from scalelab.api import TrialPhase
from scalelab.kube import utilisation
from scalelab.results.model import ResultsFile, TrialRecord

pytestmark = pytest.mark.unit


def results() -> ResultsFile:
    trials = [
        TrialRecord(name="x-b32-g2", batch_size=32, gpus=2, phase=TrialPhase.SUCCEEDED,
                    started_at=1000.0, finished_at=1060.0),
        TrialRecord(name="x-b64-g2", batch_size=64, gpus=2, phase=TrialPhase.RUNNING,
                    started_at=1100.0),
        TrialRecord(name="x-b128-g2", batch_size=128, gpus=2),
    ]  # fmt: skip
    return ResultsFile(experiment="x", spec={}, trials=trials)


def test_each_started_trials_mean_is_asked_over_its_run_and_written_to_its_diagnostics() -> None:
    asked: list[dict[str, list[str]]] = []

    def fetch(url: str) -> bytes:
        params = urllib.parse.parse_qs(urllib.parse.urlsplit(url).query)
        asked.append(params)
        value = "87.5" if 'scalelab_dev_trial="x-b32-g2"' in params["query"][0] else "12"
        data = {"result": [{"metric": {}, "value": [0, value]}]}
        return json.dumps({"status": "success", "data": data}).encode()

    r = results()
    means = utilisation.annotate(r, "team-a", "http://prom:9090/", now=1130.0, fetch=fetch)
    assert means == {"x-b32-g2": 87.5, "x-b64-g2": 12.0}
    assert r.trials[0].diagnostics[utilisation.KEY] == 87.5
    assert utilisation.KEY not in r.trials[2].diagnostics
    assert [p["time"][0] for p in asked] == ["1060.000", "1130.000"]  # the end, or now
    assert "[65s:5s]" in asked[0]["query"][0]  # the run's 60 s and a step
    assert 'namespace="team-a"' in asked[1]["query"][0]


def test_a_trial_without_gpu_series_gets_no_value_and_an_api_error_is_raised() -> None:
    empty = json.dumps({"status": "success", "data": {"result": []}}).encode()
    r = results()
    assert utilisation.annotate(r, "n", "http://p", now=2000.0, fetch=lambda url: empty) == {}
    assert all(utilisation.KEY not in t.diagnostics for t in r.trials)
    bad = json.dumps({"status": "error", "error": "parse error"}).encode()
    with pytest.raises(utilisation.PrometheusReadError, match="parse error"):
        utilisation.annotate(r, "n", "http://p", now=2000.0, fetch=lambda url: bad)
