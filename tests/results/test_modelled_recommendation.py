"""The recommendation on modelled time-to-target: steps × median step time, the set the data
cannot tell apart, the tie rule, spec.objective, and the words of a CPU run."""

from __future__ import annotations

from pathlib import Path

import pytest

from scalelab.aggregate import recommend, with_scaling
from scalelab.api import Objective, ResultRow, TrialPhase
from scalelab.timing import FIT, MEASURED, modelled
from scalelab.validation import InvalidExperimentError, load_experiment, parse_experiment

pytestmark = pytest.mark.unit


def row(batch: int, gpus: int, to_target: int | None, step: float, **kw: object) -> ResultRow:
    """A trial that reached the target in `to_target` steps of `step` seconds (its stopwatch
    says the same unless `time_to_target_seconds` is given); `ran`: the steps it ran."""
    repeat = int(kw.pop("repeat", 0))  # type: ignore[call-overload]
    fields: dict[str, object] = {
        "phase": TrialPhase.SUCCEEDED,
        "steps_to_target": to_target,
        "step_seconds": step,
        "samples_per_second": batch / step,
        "time_to_target_seconds": to_target * step if to_target else None,
        "steps": kw.pop("ran", to_target or 1000),
    } | kw
    name = f"t-b{batch}-g{gpus}" + (f"-r{repeat}" if repeat else "")
    return ResultRow(trial=name, batch_size=batch, gpus=gpus, repeat=repeat, **fields)  # type: ignore[arg-type]


def test_a_slow_stopwatch_does_not_move_the_pick_the_median_step_time_decides() -> None:
    rows = with_scaling(
        [
            # the fastest per step, but a neighbour's burst made its stopwatch read 9 s
            row(64, 2, 100, 0.02, time_to_target_seconds=9.0),
            row(64, 1, 100, 0.035),
            row(16, 1, 300, 0.012),
        ]
    )
    rec = recommend(rows, max_gpus=2, has_target=True)
    assert (rec.batch_size, rec.gpus) == (64, 2)
    assert rec.fastest is not None
    assert rec.fastest.modelled_seconds == pytest.approx(2.0)
    assert rec.fastest.measured_seconds == pytest.approx(9.0)  # kept beside it
    assert rec.pareto[0].time_to_target_seconds == pytest.approx(2.0)
    assert rec.pareto[0].measured_seconds == pytest.approx(9.0)
    assert "2 s modelled = 100 steps × 0.02 s; measured 9 s" in rec.reason


def test_steps_come_from_the_fit_where_a_batch_did_not_reach_the_target() -> None:
    rows = [
        row(8, 1, 500 * (1 + 32 // 8), 0.01),
        row(32, 1, 500 * 2, 0.02),
        row(128, 1, round(500 * 1.25), 0.05),
        # capped at 400 steps before the target: the fit says 500·(1 + 32/512) = 531 steps
        row(512, 1, None, 0.1, ran=400),
    ]
    configs = {c.batch_size: c for c in modelled(with_scaling(rows), 1, has_target=True)}
    assert configs[512].source == FIT
    assert configs[512].steps == pytest.approx(531.25, rel=0.02)
    assert configs[128].source == MEASURED
    # a trial that already ran past the fit's count contradicts it: left out, not guessed
    rows[-1] = row(512, 1, None, 0.1, ran=900)
    assert 512 not in {c.batch_size for c in modelled(with_scaling(rows), 1, has_target=True)}


def test_within_the_tolerance_the_fewest_processes_win_and_the_set_is_reported() -> None:
    rows = with_scaling([row(64, 2, 100, 0.0100), row(64, 1, 100, 0.0104), row(8, 1, 400, 0.01)])
    rec = recommend(rows, max_gpus=2, has_target=True)
    assert (rec.batch_size, rec.gpus) == (64, 1)  # 4% slower than 2 processes: a tie
    assert [(c.batch_size, c.gpus) for c in rec.indistinguishable] == [(64, 2), (64, 1)]
    assert rec.indistinguishable_count == 2
    assert "one run per configuration" in rec.noise
    assert "5% tolerance" in rec.noise
    assert "2 configuration(s) are within the noise of the best, batch 64 on 2 GPU(s)" in (
        rec.reason
    )
    tight = recommend(rows, 2, True, objective=Objective(tolerance=0.01))
    assert (tight.batch_size, tight.gpus) == (64, 2)


def test_of_the_fewest_processes_the_best_estimate_wins_not_the_sets_smallest_batch() -> None:
    """Batches 16, 64 and 256 on 1 process within 5% of the best (256 on 2 processes): the
    answer is the fastest of the 1-process ones, 64; the smallest batch, 16, only breaks an
    exact tie."""
    rows = with_scaling([row(256, 2, 100, 0.0100), row(16, 1, 400, 0.00260),
                         row(64, 1, 200, 0.00505), row(256, 1, 100, 0.0104)])  # fmt: skip
    rec = recommend(rows, max_gpus=2, has_target=True)
    assert rec.indistinguishable_count == 4
    assert (rec.batch_size, rec.gpus) == (64, 1)  # 1.01 s, against 1.04 s and 1.04 s
    assert "of those it has the fewest processes and, among them, the best estimate" in rec.reason
    tied = with_scaling([row(256, 2, 100, 0.0100), row(16, 1, 400, 0.0026),
                         row(64, 1, 200, 0.0052)])  # fmt: skip
    assert recommend(tied, max_gpus=2, has_target=True).batch_size == 16  # 1.04 s each


def test_repeats_widen_the_set_by_the_bootstrap_and_give_an_interval() -> None:
    noisy = [row(64, 2, 100, t, repeat=i) for i, t in enumerate([0.010, 0.016, 0.011])] + [
        row(64, 1, 100, t, repeat=i) for i, t in enumerate([0.013, 0.0125, 0.0135])
    ]
    rec = recommend(with_scaling(noisy), 2, True)
    assert rec.fastest is not None
    assert rec.fastest.gpus == 1  # 2 processes are faster on median, but not clearly
    assert rec.indistinguishable_count == 2
    assert "bootstrap over repeats" in rec.noise
    member = rec.indistinguishable[0]
    assert member.low is not None
    assert member.high is not None
    assert member.low <= member.modelled_seconds <= member.high
    assert rec.confidence is not None


def test_the_objective_picks_fastest_cheapest_or_under_a_floor_and_both_are_reported() -> None:
    rows = with_scaling(
        [row(64, 1, 100, 0.04), row(64, 2, 100, 0.025), row(64, 4, 100, 0.016)]
    )  # efficiency 1, 0.8, 0.625
    fastest = recommend(rows, 4, True)
    assert fastest.gpus == 4
    assert fastest.goal == "fastest"
    assert fastest.fastest is not None
    assert fastest.cheapest is not None
    assert (fastest.fastest.gpus, fastest.cheapest.gpus) == (4, 1)
    cheapest = recommend(rows, 4, True, objective=Objective(goal="cheapest"))  # type: ignore[arg-type]
    assert cheapest.gpus == 1
    floor = recommend(rows, 4, True, objective=Objective(min_efficiency=0.7))
    assert floor.gpus == 2
    assert floor.goal == "fastest with efficiency ≥ 0.7"
    assert floor.fastest is not None
    assert floor.fastest.gpus == 4  # the structured fastest answer ignores the floor
    budget = recommend(rows, 4, True, objective=Objective(max_gpu_seconds=4.5))
    assert budget.gpus == 1  # 4 GPU-s; 2 processes spend 5
    none = recommend(rows, 4, True, objective=Objective(max_gpu_seconds=1.0))
    assert none.trial is None
    assert none.cheapest is not None
    assert "no configuration meets the objective" in none.reason


def test_a_cpu_run_speaks_of_processes_and_process_seconds() -> None:
    rows = with_scaling([row(64, 1, 100, 0.04), row(64, 2, 100, 0.015)])
    rec = recommend(rows, 2, True, cpu=True)
    assert rec.reason.startswith("batch 64 on 2 process(es) reaches the target loss fastest")
    assert "process-s" in rec.reason
    assert "GPU(s)" not in rec.reason
    assert "GPU-s" not in rec.reason


def _experiment(spec: dict[str, object]) -> dict[str, object]:
    return {"apiVersion": "scalelab.dev/v1alpha1", "kind": "ScaleExperiment",
            "metadata": {"name": "x"}, "spec": spec}  # fmt: skip


def test_a_floor_or_budget_needs_goal_fastest() -> None:
    ok = parse_experiment(_experiment({"objective": {"minEfficiency": 0.7}}))
    assert ok.spec.objective.min_efficiency == 0.7
    with pytest.raises(InvalidExperimentError) as error:
        parse_experiment(_experiment({"objective": {"goal": "cheapest", "maxGpuSeconds": 10}}))
    assert "constrain goal fastest only" in str(error.value)


def test_validate_warns_when_the_sweep_has_no_one_process_point(tmp_path: Path) -> None:
    file = tmp_path / "x.yaml"
    file.write_text(
        "apiVersion: scalelab.dev/v1alpha1\nkind: ScaleExperiment\nmetadata: {name: x}\n"
        "spec: {sweep: {gpus: [2, 4]}, resources: {gpusPerProcess: 1}}\n"
    )
    warnings: list = []  # type: ignore[type-arg]
    load_experiment(file, warnings)
    assert [w.path for w in warnings] == ["spec.sweep.gpus"]
    assert "relative to the fewest processes" in warnings[0].message
    file.write_text(file.read_text().replace("[2, 4]", "[1, 2]"))
    warnings.clear()
    load_experiment(file, warnings)
    assert warnings == []


def test_with_one_repeat_the_epochs_step_times_give_the_bootstrap_its_noise() -> None:
    rows = with_scaling([row(64, 1, 100, 0.0100), row(16, 1, 380, 0.0029)])  # 1.0 s vs 1.1 s
    quiet = recommend(rows, 1, True)
    assert quiet.indistinguishable_count == 1  # 10% apart, one run each: not a tie
    assert quiet.confidence is None
    bursty = {"t-b64-g1": [0.008, 0.010, 0.013, 0.009, 0.011, 0.016],
              "t-b16-g1": [0.0029, 0.0028, 0.0030, 0.0029]}  # fmt: skip
    noisy = recommend(rows, 1, True, epochs=bursty)
    assert noisy.indistinguishable_count == 2  # b64's epochs spread ±30%: it may be as slow
    # the answer stays the best estimate: the noise widened the set, not the answer, which a
    # rule preferring the set's smallest batch (its edge) would have moved to batch 16
    assert (noisy.batch_size, noisy.gpus) == (quiet.batch_size, quiet.gpus) == (64, 1)
    assert "per-epoch step times" in noisy.noise
    assert noisy.confidence is not None
    member = next(c for c in noisy.indistinguishable if c.batch_size == 64)
    assert member.low is not None
    assert member.high is not None
    assert member.low < member.modelled_seconds < member.high
