"""Predictions at GPU counts not measured: the step-time fit recovers known parameters, the
bootstrap interval covers the truth, the predicted points are the ones promised (up to 4× the
largest measured, within maxGPUs), and a held-out count is checked against its interval."""

from __future__ import annotations

import json
import math
import random

import pytest

from scalelab.api import ResultRow, TrialPhase
from scalelab.report.predictions import predictions_html
from scalelab.scaling import (
    Context,
    Series,
    StepModel,
    StepsSource,
    collect_series,
    curve_step_seconds,
    fit_step_model,
    holdout,
    predict_series,
    prediction_counts,
    predictions,
    row_step_seconds,
)

pytestmark = pytest.mark.unit


def rows_of(
    model: StepModel,
    batches: list[int],
    gpus: list[int],
    *,
    steps: dict[int, float] | None = None,
    repeats: int = 1,
    noise: float = 0.0,
    seed: int = 0,
) -> list[ResultRow]:
    """Trials whose throughput follows `model` (global batch B, or b·N when it is weak), with
    lognormal noise on the step time."""
    rng = random.Random(seed)
    out = []
    for b in batches:
        for n in gpus:
            batch = b * n if model.weak else b
            if batch % n:
                continue
            for r in range(repeats):
                t = model.step_seconds(n) * math.exp(rng.gauss(0, noise))
                s = (steps or {}).get(batch)
                out.append(
                    ResultRow(
                        trial=f"t-b{batch}-g{n}-r{r}",
                        batch_size=batch,
                        gpus=n,
                        repeat=r,
                        phase=TrialPhase.SUCCEEDED,
                        samples_per_second=batch / t,
                        steps=1000,
                        steps_to_target=round(s) if s else None,
                        time_to_target_seconds=s * t if s else None,
                    )
                )
    return out


def test_the_fit_recovers_compute_and_communication_of_noise_free_strong_scaling() -> None:
    true = StepModel(compute=0.2, comm=0.01)
    fit = fit_step_model({n: true.step_seconds(n) for n in (1, 2, 4)})
    assert fit is not None
    assert fit.compute == pytest.approx(0.2, rel=1e-9)
    assert fit.comm == pytest.approx(0.01, rel=1e-9)
    assert fit.serial == 0.0


def test_from_four_counts_the_fit_recovers_a_serial_share_too() -> None:
    true = StepModel(compute=0.2, comm=0.004, serial=0.03)
    fit = fit_step_model({n: true.step_seconds(n) for n in (1, 2, 4, 8, 16)})
    assert fit is not None
    assert (fit.compute, fit.comm, fit.serial) == pytest.approx((0.2, 0.004, 0.03), rel=1e-6)


def test_weak_scaling_fits_a_constant_compute_and_a_growing_allreduce() -> None:
    true = StepModel(compute=0.05, comm=0.002, weak=True)
    fit = fit_step_model({n: true.step_seconds(n) for n in (1, 2, 4)}, weak=True)
    assert fit is not None
    assert (fit.compute, fit.comm) == pytest.approx((0.05, 0.002), rel=1e-9)
    assert fit.efficiency(4, 1) == pytest.approx(0.05 / 0.054)


def test_superlinear_data_gets_no_negative_communication() -> None:
    # 2 processes more than twice as fast (a batch that fits a cache once halved).
    fit = fit_step_model({1: 1.0, 2: 0.4})
    assert fit is not None
    assert fit.comm == 0.0
    assert fit.compute > 0


def test_one_count_is_not_enough_to_fit() -> None:
    assert fit_step_model({2: 0.1}) is None


@pytest.mark.parametrize("shape", ["log2", "ring"])
def test_the_interval_at_four_times_the_largest_count_covers_the_truth(shape: str) -> None:
    true = StepModel(compute=0.2, comm=0.01, shape=shape)
    steps = StepsSource({1024: [100.0]}, "measured")
    ctx = Context(smallest_per_process=256, largest_steps_batch=1024)
    hits = 0
    for seed in range(20):
        rng = random.Random(seed)
        observations = {
            n: tuple(true.step_seconds(n) * math.exp(rng.gauss(0, 0.05)) for _ in range(6))
            for n in (1, 2, 4)
        }
        fitted = predict_series(
            Series(1024, False, observations), [16], steps=steps, ctx=ctx, resamples=100, seed=seed
        )
        assert fitted is not None
        point = next(p for p in fitted.points if p.gpus == 16)
        hits += point.step_seconds_low <= true.step_seconds(16) <= point.step_seconds_high
    assert hits >= 17  # a 95% interval misses about 1 in 20; 3 misses in 20 is already unlikely


def test_counts_double_up_to_four_times_the_largest_and_stop_at_max_gpus() -> None:
    assert prediction_counts([1, 2], max_gpus=64) == [4, 8]
    assert prediction_counts([1, 2, 4], max_gpus=12) == [8, 12]
    assert prediction_counts([1, 2], max_gpus=2) == []


def test_predictions_multiply_steps_by_the_step_time_and_gpus_by_the_time() -> None:
    true = StepModel(compute=0.4, comm=0.02)
    rows = rows_of(true, [256, 1024], [1, 2], steps={256: 400, 1024: 150}, repeats=3, noise=0.03)
    result = predictions(rows, weak=False, max_gpus=16)
    assert [b.batch_size for b in result.batches] == [256, 1024]
    points = {p.gpus: p for p in result.batches[1].points}
    assert sorted(points) == [1, 2, 4, 8]
    p8 = points[8]
    assert not p8.measured
    assert p8.steps_source == "measured"
    assert p8.steps_to_target == pytest.approx(150)
    assert p8.time_to_target_seconds == pytest.approx(150 * p8.step_seconds)
    assert p8.gpu_seconds == pytest.approx(8 * 150 * p8.step_seconds)
    assert p8.step_seconds_low <= true.step_seconds(8) <= p8.step_seconds_high
    assert p8.step_seconds_low <= p8.step_seconds <= p8.step_seconds_high
    low, time, high = p8.time_to_target_low, p8.time_to_target_seconds, p8.time_to_target_high
    assert low is not None
    assert time is not None
    assert high is not None
    assert low <= time <= high
    # 1024/8 = 128 examples per process, as measured at 256 on 2: no warning; 256/8 is below.
    assert p8.warnings == []
    assert any(
        "per process" in w for w in {p.gpus: p for p in result.batches[0].points}[8].warnings
    )


def test_a_count_that_does_not_divide_the_global_batch_is_not_predicted() -> None:
    rows = rows_of(StepModel(compute=0.4, comm=0.02), [12], [1, 2], steps={12: 50}, repeats=2)
    result = predictions(rows, weak=False, max_gpus=8)
    assert [p.gpus for p in result.batches[0].points] == [1, 2, 4]  # 8 does not divide 12


def test_weak_scaling_takes_unmeasured_global_batches_from_the_steps_fit() -> None:
    true = StepModel(compute=0.05, comm=0.003, weak=True)
    steps = {32: 2000.0, 64: 1100.0, 128: 650.0}  # S(B) = 200(1 + 288/B) roughly
    rows = rows_of(true, [32], [1, 2, 4], steps=steps, repeats=2, noise=0.02)
    result = predictions(rows, weak=True, max_gpus=16)
    points = {p.gpus: p for p in result.batches[0].points}
    assert points[16].batch_size == 512
    assert points[16].steps_source == "fit"
    assert points[16].steps_to_target is not None
    assert points[16].steps_to_target < steps[128]
    assert any("beyond the largest batch" in w for w in points[16].warnings)
    assert points[4].steps_source == "measured"


def test_without_a_target_the_steps_run_stand_in_and_say_so() -> None:
    rows = rows_of(StepModel(compute=0.4, comm=0.02), [256], [1, 2])
    point = predictions(rows, weak=False, max_gpus=4).batches[0].points[-1]
    assert point.steps_source == "run"
    assert point.steps_to_target == 1000


def test_processes_beyond_cores_or_one_worker_are_flagged() -> None:
    rows = rows_of(StepModel(compute=0.4, comm=0.02), [256], [1, 2], steps={256: 10})
    result = predictions(rows, weak=False, max_gpus=8, cores=2, processes_per_worker=2)
    warnings = " ".join({p.gpus: p for p in result.batches[0].points}[8].warnings)
    assert "8 processes on 2 cores" in warnings
    assert "one worker" in warnings


def test_predictions_are_json_ready_in_camel_case_and_seeded() -> None:
    model = StepModel(compute=0.4, comm=0.02)
    rows = rows_of(model, [256], [1, 2], steps={256: 10}, repeats=2, noise=0.05)
    first = predictions(rows, weak=False, max_gpus=8).model_dump(by_alias=True, mode="json")
    again = predictions(rows, weak=False, max_gpus=8).model_dump(by_alias=True, mode="json")
    assert first == again
    text = json.dumps(first)
    assert '"timeToTargetLow"' in text
    assert '"maxRelativeResidual"' in text


def test_a_held_out_count_that_follows_the_model_lies_in_its_interval() -> None:
    true = StepModel(compute=0.4, comm=0.02)
    rows = rows_of(true, [256], [1, 2, 4], steps={256: 100}, repeats=4, noise=0.03)
    (check,) = holdout(rows, weak=False, resamples=200)
    assert check.fitted_gpus == (1, 2)
    assert check.predicted.gpus == 4
    assert check.inside is True


def test_a_held_out_count_three_times_slower_than_the_model_is_outside() -> None:
    true = StepModel(compute=0.4, comm=0.02)
    rows = rows_of(true, [256], [1, 2], steps={256: 100}, repeats=4, noise=0.03)
    slow = StepModel(compute=3 * 0.4, comm=3 * 0.02)
    rows += rows_of(slow, [256], [4], steps={256: 100}, repeats=4, noise=0.03, seed=1)
    (check,) = holdout(rows, weak=False, resamples=200)
    assert check.inside is False


def test_epoch_step_times_leave_out_the_first_epoch_of_three_or_more() -> None:
    assert curve_step_seconds(100, [50.0, 1000.0, 500.0]) == [0.1, 0.2]
    assert curve_step_seconds(100, [50.0, None, 0, 1000.0]) == [2.0, 0.1]
    assert curve_step_seconds(100, [50.0, 1000.0]) == [2.0, 0.1]


def test_the_report_section_shows_each_point_with_its_interval_and_caveats() -> None:
    rows = rows_of(StepModel(compute=0.4, comm=0.02), [256], [1, 2], steps={256: 10}, repeats=2)
    section = predictions_html(predictions(rows, weak=False, max_gpus=8, cores=2), cpu=True)
    assert section.count("<tr") == 1 + 4  # header, then 1, 2, 4 and 8 processes
    assert section.count("predicted</td>") == 2
    assert "8 processes on 2 cores" in section
    assert "Where the model fails" in section
    assert predictions_html(predictions(rows[:1], weak=False, max_gpus=8)) == ""


def test_the_trainers_median_step_time_wins_over_batch_per_throughput() -> None:
    row = ResultRow(
        trial="t", batch_size=100, gpus=1, phase=TrialPhase.SUCCEEDED,
        samples_per_second=100.0, step_seconds=0.5,
    )  # fmt: skip
    assert row_step_seconds(row) == 0.5
    assert row_step_seconds(row.model_copy(update={"step_seconds": None})) == 1.0
    assert row_step_seconds(row.model_copy(update={"phase": TrialPhase.FAILED})) is None


def test_epochs_are_scaled_to_their_trials_step_time_and_pooled_over_repeats() -> None:
    rows = rows_of(StepModel(compute=0.4, comm=0.02), [256], [1, 2], steps={256: 10}, repeats=2)
    epochs = {rows[0].trial: [1.0, 2.0, 3.0]}  # median 2: scaled to the trial's 0.4 s
    (series,) = collect_series(rows, weak=False, step_samples=epochs)
    assert series.observations[1] == pytest.approx((0.2, 0.4, 0.6, 0.4))  # + the other repeat
    assert series.medians()[1] == pytest.approx(0.4)  # the trials' median, not the epochs'
    assert series.observations[2] == pytest.approx((0.22, 0.22))
