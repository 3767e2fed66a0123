"""strategy adaptive, pure and in the operator's decide: the pilot first, batch sizes placed
around its B_simple, a batch above a diverged one never started, the reasons on the trials."""

from __future__ import annotations

import random
from typing import Any

import pytest

from scalelab.adaptive import Progress, dominated, pilot_trial, progress_of, verdicts
from scalelab.aggregate import recommend, with_scaling
from scalelab.api import ConditionType, ResultRow, TrialPhase
from scalelab.kube.decide import decide
from scalelab.kube.observed import JobPhase, JobState, TrialState, parse, trial_entry
from scalelab.kube.state import Memory
from scalelab.planner import plan

pytestmark = pytest.mark.unit

NOW = 1_800_000_000.0
SPEC: dict[str, Any] = {
    "sweep": {
        "strategy": "adaptive",
        "batchSizes": [1024, 8, 16, 32, 64, 128, 256, 512, 2048],
        "gpus": [1, 2],
    },
    "workload": {"datasetSize": 8192},
    "training": {"lrScaling": "linear", "referenceBatchSize": 8},
    "resources": {"gpusPerProcess": 1},
    "execution": {"maxConcurrentTrials": 4, "maxGPUs": 4},
}


def _body(spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "scalelab.dev/v1alpha1",
        "kind": "ScaleExperiment",
        "metadata": {"name": "exp", "namespace": "ns", "uid": "u", "generation": 1},
        "spec": spec,
    }


def _ok(name: str, batch: int, noise: float | None, se: float | None = None) -> ResultRow:
    return ResultRow(
        trial=name, batch_size=batch, gpus=1, phase=TrialPhase.SUCCEEDED,
        critical_batch_size=noise, critical_batch_size_stderr=se,
    )  # fmt: skip


def test_trials_run_smallest_batch_first_and_the_pilot_is_the_middle_batch() -> None:
    planned = plan(parse(_body(SPEC)))
    assert [p.batch_size for p in planned[::2]] == [8, 16, 32, 64, 128, 256, 512, 1024, 2048]
    pilot = pilot_trial(planned)
    assert pilot is not None
    assert (pilot.batch_size, pilot.gpus, pilot.repeat) == (128, 1, 0)


def test_batches_far_from_the_pilots_prediction_are_skipped_with_the_reason() -> None:
    experiment = parse(_body(SPEC))
    planned = plan(experiment)
    phases = {p.name: TrialPhase.PENDING for p in planned} | {"exp-b128-g1": TrialPhase.SUCCEEDED}
    v = verdicts(experiment, planned, {"exp-b128-g1": _ok("exp-b128-g1", 128, 500.0, 20.0)}, phases)
    # 500 ± 2·20, width 4: 115 .. 2160 runs.
    assert v.prediction is not None
    assert v.prediction.low == pytest.approx(460 / 4)
    assert v.prediction.high == pytest.approx(540 * 4)
    skipped = sorted({int(n.split("-b")[1].split("-")[0]) for n in v.skip})
    assert skipped == [8, 16, 32, 64]
    assert (
        "outside 115–2.16e+03, 4× around the critical batch 500 predicted by the pilot "
        in (v.skip["exp-b8-g2"])
    )
    assert v.waiting == set()


def test_a_prediction_below_every_batch_still_keeps_min_points_batches() -> None:
    experiment = parse(_body(SPEC))
    planned = plan(experiment)
    phases = {p.name: TrialPhase.PENDING for p in planned} | {"exp-b128-g1": TrialPhase.SUCCEEDED}
    v = verdicts(experiment, planned, {"exp-b128-g1": _ok("exp-b128-g1", 128, 0.5)}, phases)
    kept = {p.batch_size for p in planned if p.name not in v.skip}
    assert kept == {8, 16, 32, 128}  # the three nearest to 0.5, and the pilot's batch


def test_a_pilot_without_b_simple_falls_back_to_the_grid_and_says_why() -> None:
    experiment = parse(_body(SPEC))
    planned = plan(experiment)
    phases = {p.name: TrialPhase.PENDING for p in planned} | {"exp-b128-g1": TrialPhase.SUCCEEDED}
    row = _ok("exp-b128-g1", 128, None).model_copy(
        update={"gradient_noise_scale_reason": "the |G|² estimate is not positive over 9 steps"}
    )
    v = verdicts(experiment, planned, {"exp-b128-g1": row}, phases)
    assert v.skip == {}
    assert "gave no B_simple (the |G|² estimate is not positive" in v.note


def test_a_batch_above_a_diverged_one_is_not_started_and_the_reason_names_it() -> None:
    experiment = parse(_body(SPEC))
    planned = plan(experiment)
    rows = {
        "exp-b128-g1": _ok("exp-b128-g1", 128, 500.0, 20.0),
        "exp-b512-g1": ResultRow(
            trial="exp-b512-g1", batch_size=512, gpus=1, phase=TrialPhase.DIVERGED
        ),
    }
    phases = {p.name: TrialPhase.PENDING for p in planned} | {n: r.phase for n, r in rows.items()}
    v = verdicts(experiment, planned, rows, phases)
    assert v.skip["exp-b1024-g1"] == (
        "adaptive: not started: batch 512 (exp-b512-g1) Diverged, and lrScaling linear gives "
        "batch 1024 a larger learning rate"
    )
    assert "exp-b2048-g2" in v.skip
    assert "exp-b256-g2" not in v.skip


def test_the_operator_launches_only_the_pilot_then_prunes_from_its_result() -> None:
    body = _body(SPEC)
    experiment = parse(body)
    planned = plan(experiment)
    trials = [TrialState(p.name, f"uid-{p.name}", TrialPhase.PENDING) for p in planned]
    first = decide(experiment, body, trials, [], Memory(), now=NOW)
    assert [t.name for t, _ in first.actions.launch] == ["exp-b128-g1"]
    assert first.status["trials"]["pending"] == 18
    plan_condition = next(
        c for c in first.status["conditions"] if c["type"] == ConditionType.ADAPTIVE_PLAN
    )
    assert plan_condition["reason"] == "PilotRunning"

    result = {"phase": "Succeeded", "criticalBatchSize": 500.0, "criticalBatchSizeStderr": 20.0,
              "stepsToTarget": 400, "timeToTargetSeconds": 3.0, "seconds": 3.0}  # fmt: skip
    trials = [
        TrialState(t.name, t.uid, TrialPhase.SUCCEEDED, result=result)
        if t.name == "exp-b128-g1"
        else t
        for t in trials
    ]
    jobs = [JobState("exp-b128-g1", JobPhase.SUCCEEDED)]
    second = decide(experiment, body, trials, jobs, Memory(), now=NOW)
    patches = second.actions.trial_status
    assert patches["exp-b8-g1"]["phase"] == "Skipped"
    assert patches["exp-b8-g1"]["reason"].startswith("adaptive: batch 8 is outside")
    # smallest first under maxGPUs=4 (b256-g2 would be a 5th GPU: b512-g1 backfills)
    assert [t.name for t, _ in second.actions.launch] == [
        "exp-b128-g2", "exp-b256-g1", "exp-b512-g1"
    ]  # fmt: skip
    rows = {r["trial"]: r for r in second.status["results"]}
    assert rows["exp-b8-g1"]["pruned"] is True
    assert second.status["trials"]["skipped"] == 8
    placed = next(
        c for c in second.status["conditions"] if c["type"] == ConditionType.ADAPTIVE_PLAN
    )
    assert placed["message"] == "pilot exp-b128-g1: B_simple 500; batches 115–2.16e+03 run"
    assert second.status["criticalBatch"]["predicted"] == 500.0


def _timed(name: str, batch: int, gpus: int, seconds: float) -> ResultRow:
    return ResultRow(trial=name, batch_size=batch, gpus=gpus, phase=TrialPhase.SUCCEEDED,
                     time_to_target_seconds=seconds)  # fmt: skip


def _modelled(
    name: str, batch: int, gpus: int, steps: int, step: float, *, clock: float
) -> ResultRow:
    """A finished trial: `steps` to the target at `step` s each, its stopwatch `clock` s."""
    return ResultRow(trial=name, batch_size=batch, gpus=gpus, phase=TrialPhase.SUCCEEDED,
                     steps_to_target=steps, step_seconds=step,
                     time_to_target_seconds=clock)  # fmt: skip


def _at(steps: int, step: float, seconds: float | None = None, loss: float = 2.0) -> Progress:
    """A running trial after `steps` steps of `step` s, its last epoch's loss above 1.0."""
    return Progress(steps=steps, step_seconds=step, training_seconds=seconds, loss=loss)


def test_a_running_trial_is_pruned_only_once_dominated_on_both_axes_whatever_it_does() -> None:
    spec = SPEC | {"training": SPEC["training"] | {"targetLoss": 1.0}}
    experiment = parse(_body(spec))
    b512g2 = next(p for p in plan(experiment) if p.name == "exp-b512-g2")
    rows = {"exp-b256-g1": _modelled("exp-b256-g1", 256, 1, 100, 0.04, clock=5.0)}  # 4 s modelled
    # 100 steps of 0.03 s on 2 GPUs: 6 GPU-s already, but 3 s: it may still win on time.
    assert dominated(experiment, b512g2, _at(100, 0.03), rows) is None
    why = dominated(experiment, b512g2, _at(150, 0.03, seconds=6.0), rows)
    assert why == (
        "adaptive: stopped after 150 steps, 6 s of training without reaching the target: at "
        "least 4.5 s modelled (150 steps × 0.03 s per step, 9 GPU-s); exp-b256-g1 reached the "
        "target in 4 s modelled (4 GPU-s), less on both by more than the 5% tolerance, so this "
        "trial cannot be the answer nor within its noise"
    )
    # within the tolerance of the finished one: it may still be in the noise of the best
    assert dominated(experiment, b512g2, _at(137, 0.03), rows) is None
    # its own configuration's other repeats do not count, nor does a sweep without a target
    own = {"x": _modelled("x", 512, 2, 10, 0.01, clock=1.0)}
    assert dominated(experiment, b512g2, _at(900, 0.03), own) is None
    assert dominated(parse(_body(SPEC)), b512g2, _at(900, 0.03), rows) is None
    # nor a trial whose last epoch end reached the target (its result follows), nor one whose
    # step time is not known yet
    assert dominated(experiment, b512g2, _at(900, 0.03, loss=0.9), rows) is None
    assert dominated(experiment, b512g2, Progress(900, None), rows) is None


def test_start_up_and_evaluation_do_not_stop_the_fastest_configuration() -> None:
    """The bound is the running trial's steps × its step time, the model's own quantity: a
    trial whose stopwatch runs long (evaluation after each of many short epochs, a slow start)
    while its modelled time is the best is not stopped, whatever the finished trials' ratio of
    measured to modelled time was."""
    spec = SPEC | {"training": SPEC["training"] | {"targetLoss": 1.0}}
    experiment = parse(_body(spec))
    b512g1 = next(p for p in plan(experiment) if p.name == "exp-b512-g1")
    rows = {"exp-b256-g1": _modelled("exp-b256-g1", 256, 1, 100, 0.02, clock=2.2)}  # 2 s modelled
    # 60 steps at 0.03 s: 1.8 s modelled so far (it may end the fastest), though 12 s of its
    # training went by: its evaluations and start-up are its own, not the model's.
    assert dominated(experiment, b512g1, _at(60, 0.03, seconds=12.0), rows) is None
    assert dominated(experiment, b512g1, _at(69, 0.03, seconds=14.0), rows) is None  # 2.07 s
    assert dominated(experiment, b512g1, _at(71, 0.03, seconds=14.0), rows) is not None


def test_progress_leaves_out_the_warm_up_epochs_as_the_trainers_steady_state_does() -> None:
    """Steps and loss of the last epoch event; the step time is the trainer's median steady step
    so far (`stepSeconds`), else the median of global batch / each epoch's samplesPerSecond over
    the epochs that began after the first `skip` steps, the first epoch never (its call warms up:
    on a CPU 3 to 40 times the steady step); none before such an epoch has ended."""
    events = [
        {"epoch": 1, "steps": 8, "loss": 3.0, "samplesPerSecond": 25.6, "trainingSeconds": 0.2},
        {"epoch": 2, "steps": 16, "loss": 2.0, "samplesPerSecond": 400.0, "trainingSeconds": 0.3},
        {"epoch": 3, "steps": 24, "loss": 1.8, "samplesPerSecond": 1280.0, "trainingSeconds": 0.4},
        {"epoch": 4, "steps": 32, "loss": 1.5, "samplesPerSecond": 640.0, "trainingSeconds": 0.5},
    ]
    got = progress_of(64, events, 10)
    assert got is not None
    assert (got.steps, got.training_seconds, got.loss) == (32, 0.5, 1.5)
    assert got.step_seconds == pytest.approx(0.075)  # epochs 3 and 4 (0.05, 0.1): from step 16
    assert progress_of(64, events, 0).step_seconds == pytest.approx(0.1)  # not epoch 1's 2.5 s
    assert progress_of(64, events[:2], 10) == Progress(16, None, 0.3, 2.0)  # nothing steady yet
    assert progress_of(64, events[:1], 0) == Progress(8, None, 0.2, 3.0)
    assert progress_of(64, [], 10) is None
    assert progress_of(64, [{"steps": None}], 10) is None
    # the trainer's own median steady step so far, where the events carry it (the model's t)
    timed = [e | {"stepSeconds": 0.04} for e in events]
    assert progress_of(64, timed, 10) == Progress(32, 0.04, 0.5, 1.5)
    assert progress_of(64, timed[:2], 10) == Progress(16, None, 0.3, 2.0)  # not steady yet


def test_the_operator_marks_a_dominated_running_trial_pruned_and_deletes_its_mpijob() -> None:
    spec = SPEC | {"training": SPEC["training"] | {"targetLoss": 1.0}}
    body = _body(spec)
    experiment = parse(body)
    pilot = {"phase": "Succeeded", "criticalBatchSize": 500.0, "stepsToTarget": 40,
             "stepTimeSeconds": {"p50": 0.05}, "timeToTargetSeconds": 3.0,
             "seconds": 3.0}  # fmt: skip  # 2 s modelled
    trials = [
        TrialState("exp-b128-g1", "u1", TrialPhase.SUCCEEDED, result=pilot),
        # 20 steps of 256 / 3,200 samples/s = 0.08 s: 1.6 s so far, 3.2 GPU-s; its stopwatch's
        # 9 s (start-up, evaluation) do not count: it may still be the fastest
        TrialState("exp-b256-g2", "u2", TrialPhase.RUNNING, training_seconds=9.0, epoch=2, steps=20,
                   samples_per_second=3200.0, loss=1.5),
        # 25 steps of 0.1 s (the trainer's median; its mean 0.05 s): at least 2.5 s, 2.5 GPU-s:
        # beaten on both beyond the tolerance
        TrialState("exp-b256-g1", "u3", TrialPhase.RUNNING, training_seconds=2.5, epoch=5, steps=25,
                   samples_per_second=5120.0, step_seconds=0.1, loss=1.5),
        # its first epoch's speed (its call's warm-up) is no steady step time: not judged yet
        TrialState("exp-b512-g1", "u4", TrialPhase.RUNNING, training_seconds=2.5, epoch=1, steps=40,
                   samples_per_second=512.0, loss=1.5),
    ]  # fmt: skip
    jobs = [JobState("exp-b128-g1", JobPhase.SUCCEEDED)] + [
        JobState(name, JobPhase.RUNNING) for name in ("exp-b256-g2", "exp-b256-g1", "exp-b512-g1")
    ]
    d = decide(experiment, body, trials, jobs, Memory(), now=NOW)
    assert d.actions.delete_jobs == ["exp-b256-g1"]
    patch = d.actions.trial_status["exp-b256-g1"]
    assert patch["phase"] == "Pruned"
    assert patch["reason"].startswith("adaptive: stopped after 25 steps, 2.5 s of training")
    assert d.status["trials"]["pruned"] == 1
    row = next(r for r in d.status["results"] if r["trial"] == "exp-b256-g1")
    assert row["pruned"] is True
    assert row["gpuSeconds"] == 2.5  # what it spent before it was stopped


def test_the_operator_reads_a_running_trials_progress_from_its_status() -> None:
    """status.progress's steps, samplesPerSecond and the last epoch end's loss."""
    progress = {"epoch": 3, "steps": 30, "samplesPerSecond": 3200.0, "loss": 1.5,
                "trainingSeconds": 9.0, "stepSeconds": 0.07}  # fmt: skip
    body = {"apiVersion": "scalelab.dev/v1alpha1", "kind": "ScaleTrial",
            "metadata": {"name": "t", "namespace": "ns", "uid": "u",
                         "labels": {"scalelab.dev/experiment": "exp"}},
            "status": {"phase": "Running", "progress": progress}}  # fmt: skip
    (state,) = trial_entry(body).values()
    assert (state.epoch, state.steps, state.samples_per_second, state.loss) == (3, 30, 3200.0, 1.5)
    assert (state.training_seconds, state.step_seconds) == (9.0, 0.07)


def test_pareto_pruning_never_stops_the_configuration_the_full_grid_recommends() -> None:
    """On 200 random sweeps measured in a random order, each running trial judged at each of its
    epoch ends: whatever the rule stops, the survivors' recommendation is the full grid's (the
    same measurements, pruned or not), however long each trial's stopwatch ran."""
    spec = SPEC | {"training": SPEC["training"] | {"targetLoss": 1.0}}
    experiment = parse(_body(spec))
    planned = [p for p in plan(experiment) if not p.skipped]
    rng = random.Random(0)
    for _ in range(200):
        steps = {b: rng.randint(20, 400) for b in {p.batch_size for p in planned}}
        step = {p.name: rng.lognormvariate(-4, 0.5) for p in planned if p.gpus <= 4}
        clock = {name: rng.uniform(1, 10) for name in step}  # start-up, evaluation: anything
        order = rng.sample(sorted(step), len(step))
        finished: dict[str, ResultRow] = {}
        everything, stopped = [], set()
        for name in order:
            p = next(t for t in planned if t.name == name)
            S, t = steps[p.batch_size], step[name]
            row = _modelled(name, p.batch_size, p.gpus, S, t, clock=clock[name] * S * t)
            everything.append(row)
            epochs = range(10, S, 10)  # epoch ends before the one that reaches the target
            if any(dominated(experiment, p, _at(k, t), finished) for k in epochs):
                stopped.add(name)
                continue
            finished[name] = row
        full = recommend(with_scaling(everything), 4, True)
        kept = recommend(with_scaling(list(finished.values())), 4, True)
        assert full.trial not in stopped
        assert (kept.batch_size, kept.gpus) == (full.batch_size, full.gpus)
        assert {(c.batch_size, c.gpus) for c in kept.indistinguishable} <= {
            (c.batch_size, c.gpus) for c in full.indistinguishable
        }


def test_a_configuration_is_measured_in_full_or_not_at_all() -> None:
    """Stopping a slow repeat of a configuration whose other repeats finished would bias its mean
    towards the fast ones: once one repeat finished, none is stopped; once one was stopped, the
    rest do not start, and the recommendation leaves the configuration out."""
    spec = SPEC | {"sweep": SPEC["sweep"] | {"repeats": 3},
                   "training": SPEC["training"] | {"targetLoss": 1.0}}  # fmt: skip
    experiment = parse(_body(spec))
    planned = plan(experiment)
    r1 = next(p for p in planned if p.name == "exp-b512-g1-r1")
    rows = {"exp-b256-g1": _timed("exp-b256-g1", 256, 1, 1.0),
            "exp-b512-g1": _timed("exp-b512-g1", 512, 1, 0.5)}  # fmt: skip
    assert dominated(experiment, r1, _at(900, 0.03), rows) is None
    pruned = ResultRow(trial="exp-b512-g1", batch_size=512, gpus=1, repeat=0,
                       phase=TrialPhase.PRUNED, reason="adaptive: stopped after 2 s")  # fmt: skip
    rows["exp-b512-g1"] = pruned
    phases = {p.name: TrialPhase.PENDING for p in planned} | {n: r.phase for n, r in rows.items()}
    phases["exp-b128-g1"] = TrialPhase.FAILED  # the pilot: no prediction, no placement
    v = verdicts(experiment, planned, rows, phases)
    assert v.skip["exp-b512-g1-r2"] == (
        "adaptive: not started: exp-b512-g1 of this configuration was stopped (it could not "
        "be the answer)"
    )
    fast = _timed("exp-b512-g1-r1", 512, 1, 0.1)
    rec = recommend(with_scaling([*rows.values(), fast]), 4, True)
    assert rec.batch_size == 256


def test_pruning_judges_the_finished_configurations_on_their_modelled_time() -> None:
    """A finished trial whose stopwatch ran long (start-up, a neighbour's burst) is judged on
    steps × median step time, as the recommendation judges it, and so is the running one."""
    spec = SPEC | {"training": SPEC["training"] | {"targetLoss": 1.0}}
    experiment = parse(_body(spec))
    b512g2 = next(p for p in plan(experiment) if p.name == "exp-b512-g2")
    rows = {"exp-b256-g1": _modelled("exp-b256-g1", 256, 1, 100, 0.02, clock=8.0)}  # 2 s modelled
    assert dominated(experiment, b512g2, _at(69, 0.03, seconds=8.0), rows) is None  # 2.07 s
    why = dominated(experiment, b512g2, _at(150, 0.03, seconds=7.0), rows)
    assert why is not None
    assert "reached the target in 2 s modelled" in why
