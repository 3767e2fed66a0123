"""A finished trial's Prometheus series leave the registry; the next trial's stay untouched."""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry

from scalelab_trainer.config import parse_config
from scalelab_trainer.metrics import Metrics, TrialMetrics

FAMILIES = (
    "scalelab_trainer_samples_total",
    "scalelab_trainer_steps_total",
    "scalelab_trainer_step_duration_seconds_count",
    "scalelab_trainer_epoch",
    "scalelab_trainer_gradient_noise_scale",
    "scalelab_trainer_learning_rate",
)


def labels(trial: str) -> dict[str, str]:
    return {"experiment": "e", "trial": trial, "batch_size": "10", "gpus": "1", "rank": "0"}


def started(m: Metrics, trial: str) -> TrialMetrics:
    series = m.for_trial(
        parse_config(["--experiment", "e", "--trial", trial, "--batch-size", "10"]), 1, 0
    )
    series.on_steps(5, 50, 0.01)
    series.on_epoch(1, 2.0, 3.0, 4.0, 0.1)
    return series


def exported(reg: CollectorRegistry, trial: str) -> dict[str, float | None]:
    got = {f: reg.get_sample_value(f, labels(trial)) for f in FAMILIES}
    for kind in ("full", "update"):
        got[f"loss/{kind}"] = reg.get_sample_value(
            "scalelab_trainer_loss", {**labels(trial), "kind": kind}
        )
    info = [
        s
        for fam in reg.collect()
        if fam.name == "scalelab_trainer"
        for s in fam.samples
        if s.labels.get("trial") == trial
    ]
    got["info"] = 1.0 if info else None
    return got


def test_finished_trial_series_are_removed_and_the_next_trials_stay() -> None:
    reg = CollectorRegistry()
    m = Metrics(reg)
    first = started(m, "a")
    assert all(v is not None for v in exported(reg, "a").values())
    first.finish(grace_seconds=0)
    started(m, "b")
    assert all(v is None for v in exported(reg, "a").values())
    assert all(v is not None for v in exported(reg, "b").values())


def test_removal_waits_for_the_grace_period() -> None:
    reg = CollectorRegistry()
    m = Metrics(reg)
    # A grace long enough that a loaded machine cannot let it pass before the next line.
    started(m, "a").finish(grace_seconds=1.0)
    assert exported(reg, "a")["scalelab_trainer_steps_total"] == 5
    deadline = time.monotonic() + 5
    while exported(reg, "a")["scalelab_trainer_steps_total"] is not None:
        assert time.monotonic() < deadline, "series of the finished trial still exported"
        time.sleep(0.05)
    assert all(v is None for v in exported(reg, "a").values())


def test_a_late_removal_spares_a_newer_trial_with_the_same_labels() -> None:
    reg = CollectorRegistry()
    m = Metrics(reg)
    # The grace must not pass before `again` has started (else there is nothing to spare);
    # the sleep outlasts it, so the late removal has run when the series are checked.
    started(m, "a").finish(grace_seconds=0.5)
    again = started(m, "a")  # same labels (e.g. a rerun within one --trial-list)
    time.sleep(0.8)
    assert exported(reg, "a")["scalelab_trainer_steps_total"] == 10
    again.finish(grace_seconds=0)
    assert exported(reg, "a")["scalelab_trainer_steps_total"] is None
