"""A 2-process mlp on digits: /metrics of both ranks, read over HTTP during training, carries the
documented series and labels, and the run reaches a stated test accuracy."""

from __future__ import annotations

import subprocess
import time
import urllib.request
from dataclasses import dataclass, field

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.harness.horovod import HOROVODRUN, quiet_env
from tests.harness.ports import free_ports
from tests.trainer.trainer_run import MODULE, parse_events

pytestmark = pytest.mark.horovod

STATED_TEST_ACCURACY = 0.93
SERIES = {
    "scalelab_trainer_samples_total",
    "scalelab_trainer_steps_total",
    "scalelab_trainer_step_duration_seconds_bucket",
    "scalelab_trainer_loss",
    "scalelab_trainer_epoch",
    "scalelab_trainer_gradient_noise_scale",
    "scalelab_trainer_learning_rate",
    "scalelab_trainer_info",
}


@dataclass
class Observed:
    scrapes: dict[int, dict[str, list[dict[str, str]]]] = field(default_factory=dict)
    events: list[dict[str, object]] = field(default_factory=list)
    code: int = -1


def scrape(port: int) -> dict[str, list[dict[str, str]]]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2).read().decode()
    out: dict[str, list[dict[str, str]]] = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out.setdefault(s.name, []).append({**s.labels, "__value__": str(s.value)})
    return out


@pytest.fixture(scope="module")
def observed() -> Observed:
    port = free_ports(2)  # rank r serves on port + r
    argv = [
        *HOROVODRUN,
        "-np",
        "2",
        "--gloo",
        "-H",
        "localhost:2",
        *MODULE,
        "--experiment",
        "obs",
        "--trial",
        "digits-b64",
        "--model",
        "mlp",
        "--dataset",
        "digits",
        "--dataset-size",
        "2000",
        "--batch-size",
        "64",
        "--optimizer",
        "adam",
        "--learning-rate",
        "0.003",
        "--max-epochs",
        "30",
        "--relative-tolerance",
        "0",
        "--metrics-port",
        str(port),
    ]
    proc = subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=quiet_env()
    )
    obs = Observed()
    deadline = time.monotonic() + 180
    while proc.poll() is None and time.monotonic() < deadline and len(obs.scrapes) < 2:
        for rank in (0, 1):
            try:
                got = scrape(port + rank)
            except OSError:
                continue
            steps = got.get("scalelab_trainer_steps_total", [])
            if steps and float(steps[0]["__value__"]) > 0 and "scalelab_trainer_epoch" in got:
                obs.scrapes[rank] = got
        time.sleep(0.2)
    out, err = proc.communicate(timeout=180)
    obs.code = proc.returncode
    obs.events = parse_events(out)  # type: ignore[assignment]
    assert obs.code == 0, err[-3000:]
    return obs


def test_every_rank_serves_the_documented_series_during_training(observed: Observed) -> None:
    assert set(observed.scrapes) == {0, 1}
    for rank, got in observed.scrapes.items():
        assert set(got) >= SERIES, SERIES - set(got)
        for name in SERIES:
            for labels in got[name]:
                assert labels["experiment"] == "obs"
                assert labels["trial"] == "digits-b64"
                assert labels["batch_size"] == "64"
                assert labels["gpus"] == "2"
                assert labels["rank"] == str(rank)
        kinds = {s["kind"] for s in got["scalelab_trainer_loss"]}
        assert kinds == {"full", "update"}
        info = got["scalelab_trainer_info"][0]
        assert info["optimizer"] == "adam"
        assert info["model"] == "mlp"
        assert info["hidden_units"] == "128"  # snake_case label names, as Prometheus wants
        assert all(k == k.lower() for k in info)


def test_step_histogram_and_counters_agree(observed: Observed) -> None:
    got = observed.scrapes[0]
    steps = float(got["scalelab_trainer_steps_total"][0]["__value__"])
    count = float(got["scalelab_trainer_step_duration_seconds_count"][0]["__value__"])
    samples = float(got["scalelab_trainer_samples_total"][0]["__value__"])
    assert count == steps > 0
    assert samples == pytest.approx(steps * 32, rel=0.05)  # this rank's half of each batch


def test_two_process_mlp_on_digits_reaches_the_stated_test_accuracy(observed: Observed) -> None:
    result = [e for e in observed.events if e["event"] == "result"][-1]
    assert result["phase"] == "Succeeded"
    assert result["processes"] == 2
    assert result["testAccuracy"] >= STATED_TEST_ACCURACY  # type: ignore[operator]
    assert result["samplesPerSecond"] > 0  # type: ignore[operator]
    split = result["stepTimeSplit"]
    assert split["computeSeconds"] > 0  # type: ignore[index]
