"""The learning-rate axis, as pure functions: sweep.learningRates is checked as the other axes are,
multiplies the grid, names each trial's rate exactly, and makes the learning rate part of every
configuration the aggregation groups, fits and recommends."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from scalelab import api
from scalelab.adaptive import Progress, dominated, verdicts
from scalelab.aggregate import analysis, efficiency_intervals, recommend, with_scaling
from scalelab.api import ResultRow, TrialPhase
from scalelab.critical import critical_batch
from scalelab.kube.metrics import OperatorMetrics, Snapshot
from scalelab.kube.state import Usage
from scalelab.names import MAX_TRIAL_NAME_LENGTH, learning_rate_part, trial_name
from scalelab.planner import plan, trainer_flags
from scalelab.report import render
from scalelab.results import store
from scalelab.results.model import (
    aggregate_results,
    has_learning_rates,
    new_results,
    planned_record,
)
from scalelab.validation import InvalidExperimentError, parse_experiment

pytestmark = pytest.mark.unit

DNS_1035 = r"^[a-z]([-a-z0-9]*[a-z0-9])?$"
OK, DIVERGED = TrialPhase.SUCCEEDED, TrialPhase.DIVERGED


def experiment(name: str = "demo", **spec: Any) -> api.ScaleExperiment:
    return parse_experiment({"metadata": {"name": name}, "spec": spec})


def problems(**spec: Any) -> list[str]:
    with pytest.raises(InvalidExperimentError) as caught:
        parse_experiment({"metadata": {"name": "demo"}, "spec": spec})
    return [p.render("x.yaml") for p in caught.value.problems]


# ------------------------------------------------------------------------------- the spec field


def test_without_learning_rates_the_plan_is_as_before_the_axis() -> None:
    trials = plan(experiment(sweep={"batchSizes": [8, 16], "gpus": [1, 2], "repeats": 2}))
    assert [t.name for t in trials][:3] == ["demo-b8-g1", "demo-b8-g1-r1", "demo-b8-g2"]
    assert {t.base_learning_rate for t in trials} == {None}
    assert {t.spec.training.learning_rate for t in trials} == {0.001}


def test_the_grid_is_batches_times_gpus_times_learning_rates_times_repeats() -> None:
    exp = experiment(
        sweep={"batchSizes": [8, 16], "gpus": [1, 2], "learningRates": [0.1, 3e-5, 1.0],
               "repeats": 2},
        execution={"maxGPUs": 2},
    )  # fmt: skip
    trials = plan(exp)
    assert len(trials) == 2 * 2 * 3 * 2
    assert len({t.name for t in trials}) == len(trials)
    # batches, then GPUs, then rates as listed, then repeats
    assert [t.name for t in trials][:6] == [
        "demo-b8-g1-lr0p1", "demo-b8-g1-lr0p1-r1", "demo-b8-g1-lr3em05", "demo-b8-g1-lr3em05-r1",
        "demo-b8-g1-lr1", "demo-b8-g1-lr1-r1",
    ]  # fmt: skip
    assert [t.base_learning_rate for t in trials[:6:2]] == [0.1, 3e-5, 1.0]


def test_each_trial_trains_at_its_base_rate_scaled_as_training_learning_rate_is() -> None:
    exp = experiment(
        sweep={"batchSizes": [32], "learningRates": [0.01, 0.04]},
        training={"learningRate": 0.5, "referenceBatchSize": 8, "lrScaling": "linear"},
    )
    low, high = plan(exp)
    assert (low.spec.training.learning_rate, high.spec.training.learning_rate) == (0.01, 0.04)
    assert low.spec.learning_rate == pytest.approx(0.04)  # 0.01 × 32/8
    assert high.spec.learning_rate == pytest.approx(0.16)
    flags = trainer_flags(high.spec, high.name)
    assert flags[flags.index("--learning-rate") + 1] == "0.04"  # the trainer scales it itself


def test_learning_rates_are_positive_finite_unique_and_few() -> None:
    assert problems(sweep={"learningRates": [0.1, 0.1]}) == [
        "x.yaml: spec.sweep.learningRates: must not repeat values, got [0.1, 0.1]"
    ]
    assert problems(sweep={"learningRates": [0]})[0].startswith(
        "x.yaml: spec.sweep.learningRates[0]: "
    )
    assert problems(sweep={"learningRates": [float("inf")]})
    assert problems(sweep={"learningRates": [2e6]})
    assert problems(sweep={"learningRates": []})
    assert problems(sweep={"learningRates": [0.001 * (i + 1) for i in range(17)]})
    assert experiment(sweep={"learningRates": [0.001 * (i + 1) for i in range(16)]})


def test_the_trial_cap_counts_the_learning_rates_and_says_so() -> None:
    (message,) = problems(
        sweep={"batchSizes": list(range(1, 11)), "gpus": [1], "learningRates": [0.1, 0.2],
               "repeats": 51},
        workload={"datasetSize": 1000},
    )  # fmt: skip
    assert message.startswith(f"x.yaml: spec.sweep: must have at most {api.MAX_TRIALS} trials")
    assert "batchSizes × gpus × learningRates × repeats" in message
    assert "split the sweep into several ScaleExperiments" in message
    assert message.endswith("got 1020")
    # Without the axis the same grid is half as large and allowed.
    assert experiment(
        sweep={"batchSizes": list(range(1, 11)), "repeats": 51}, workload={"datasetSize": 1000}
    )


def test_the_crd_carries_the_learning_rate_rules_as_cel() -> None:
    rules = [r["rule"] for r in api.Sweep.model_json_schema()["x-kubernetes-validations"]]
    assert any("has(self.learningRates) ? size(self.learningRates) : 1" in r for r in rules)
    assert any(r.startswith("(!has(self.learningRates) || ") for r in rules)


# --------------------------------------------------------------------------------------- names


@pytest.mark.parametrize(
    ("rate", "part"),
    [(0.1, "0p1"), (3e-05, "3em05"), (1.0, "1"), (2.5, "2p5"), (1e-4, "0p0001"),
     (1e20, "1e20"), (1.5e-7, "1p5em07")],
)  # fmt: skip
def test_a_learning_rate_is_named_by_its_shortest_exact_decimal(rate: float, part: str) -> None:
    assert learning_rate_part(rate) == part


def test_distinct_rates_get_distinct_dns_safe_names_even_when_long() -> None:
    rates = [0.1, 0.2, 0.30000000000000004, 0.3, 1 / 3, 2 / 3, 1e-300, 5e-324, 123456.789012345]
    parts = [learning_rate_part(r) for r in rates]
    assert len(set(parts)) == len(parts)
    assert all(re.fullmatch(r"[a-z0-9]{1,14}", p) for p in parts)


def test_names_with_a_rate_keep_the_length_cap_and_stay_labels() -> None:
    long_name = "x" * 80
    names = {
        trial_name(long_name, b, g, r, lr)
        for b in (1, 65536, 2**62)
        for g in (1, 512, 2**31 - 1)
        for r in (0, 99)
        for lr in (0.1, 1 / 3, 5e-324)
    }
    assert len(names) == 3 * 3 * 2 * 3
    for name in names:
        assert len(name) <= MAX_TRIAL_NAME_LENGTH
        assert re.fullmatch(DNS_1035, name), name
    assert trial_name("exp", 256, 2, 1, 0.1) == "exp-b256-g2-lr0p1-r1"


# ------------------------------------------------------------------------ aggregation by rate


def row(batch: int, gpus: int, rate: float | None, phase: TrialPhase = OK, **kw: Any) -> ResultRow:
    tag = f"-lr{learning_rate_part(rate)}" if rate is not None else ""
    repeat = kw.get("repeat", 0)
    name = f"t-b{batch}-g{gpus}{tag}" + (f"-r{repeat}" if repeat else "")
    return ResultRow(
        trial=name, batch_size=batch, gpus=gpus, base_learning_rate=rate, phase=phase, **kw
    )


def test_the_recommendation_names_the_learning_rate_of_the_fastest_configuration() -> None:
    rows = with_scaling(
        [
            row(64, 1, 0.1, time_to_target_seconds=10.0, samples_per_second=100.0),
            row(64, 1, 0.4, DIVERGED, samples_per_second=100.0),
            row(64, 1, 0.02, time_to_target_seconds=30.0, samples_per_second=100.0),
        ]
    )
    rec = recommend(rows, 1, True, {"t-b64-g1-lr0p1": 0.8})
    assert (rec.batch_size, rec.gpus, rec.base_learning_rate) == (64, 1, 0.1)
    assert rec.learning_rate == 0.8  # the rate scaled to this batch
    assert rec.reason.startswith(
        "batch 64 on 1 GPU(s) at learning rate 0.1 (scaled to 0.8 at this batch) reaches the "
        "target loss fastest"
    )
    assert "among 2 configuration(s)" in rec.reason  # the diverged rate is none
    assert [p.base_learning_rate for p in rec.pareto] == [0.1]


def test_repeats_of_one_rate_are_one_configuration_and_rates_are_never_mixed() -> None:
    rows = [
        row(64, 1, 0.1, time_to_target_seconds=t, repeat=i) for i, t in enumerate((9.0, 11.0))
    ] + [row(64, 1, 0.2, time_to_target_seconds=t, repeat=i) for i, t in enumerate((12.0, 8.5))]
    rec = recommend(rows, 1, True)
    # 0.1 averages 10 s, 0.2 averages 10.25 s: mixing would average both to one "batch 64".
    assert rec.base_learning_rate == 0.1
    assert rec.pareto[0].time_to_target_seconds == pytest.approx(10.0)


def test_without_the_axis_the_recommendation_reads_as_before() -> None:
    rec = recommend([row(64, 1, None, time_to_target_seconds=3.0)], 1, True, {"t-b64-g1": 0.1})
    assert rec.reason.startswith("batch 64 on 1 GPU(s) reaches the target loss fastest (3 s")
    assert rec.base_learning_rate is None
    assert rec.learning_rate == 0.1


def test_scaling_efficiency_compares_with_the_one_process_trial_at_the_same_rate() -> None:
    rows = with_scaling(
        [
            row(64, 1, 0.1, samples_per_second=100.0),
            row(64, 1, 0.2, samples_per_second=50.0),
            row(64, 2, 0.1, samples_per_second=150.0),
            row(64, 2, 0.2, samples_per_second=150.0),
        ]
    )
    eff = {(r.gpus, r.base_learning_rate): r.scaling_efficiency for r in rows}
    assert eff[(2, 0.1)] == pytest.approx(0.75)
    assert eff[(2, 0.2)] == pytest.approx(1.5)
    intervals = {(e.gpus, e.base_learning_rate): e.mean for e in efficiency_intervals(rows)}
    assert intervals == {(2, 0.1): pytest.approx(0.75), (2, 0.2): pytest.approx(1.5)}


def test_the_critical_batch_fit_takes_each_batch_at_its_best_learning_rate() -> None:
    # S(B) = 100(1 + 64/B) at the best rate of each batch; the other rate is slower everywhere,
    # and at batch 256 the larger rate wins.
    best = {16: (0.1, 500.0), 64: (0.1, 200.0), 256: (0.4, 125.0), 1024: (0.4, 106.25)}
    rows = []
    for batch, (rate, steps) in best.items():
        other = 0.4 if rate == 0.1 else 0.1
        rows += [
            row(batch, 1, rate, steps_to_target=round(steps)),
            row(batch, 1, other, steps_to_target=round(steps * 1.5)),
        ]
    rows.append(row(4096, 1, 0.4, DIVERGED))
    result = critical_batch(rows)
    assert [(s.batch_size, s.base_learning_rate) for s in result.steps] == [
        (b, rate) for b, (rate, _) in best.items()
    ]
    assert result.fitted == pytest.approx(64, rel=0.05)


def test_a_rate_that_reached_the_target_in_more_repeats_is_preferred_to_a_lucky_one() -> None:
    rows = [
        row(64, 1, 0.1, steps_to_target=100, repeat=0),
        row(64, 1, 0.1, steps_to_target=110, repeat=1),
        row(64, 1, 0.8, steps_to_target=50, repeat=0),
        row(64, 1, 0.8, DIVERGED, repeat=1),
    ]
    (steps,) = critical_batch(rows).steps
    assert (steps.base_learning_rate, steps.runs) == (0.1, 2)


def test_analysis_keeps_every_rates_efficiency() -> None:
    rows = with_scaling(
        [row(8, g, r, samples_per_second=10.0 * g) for g in (1, 2) for r in (0.1, 0.2)]
    )
    assert {e.base_learning_rate for e in analysis(rows).efficiency} == {0.1, 0.2}


# ------------------------------------------------------------------------- adaptive and metrics


def test_the_adaptive_pilot_is_the_first_rate_and_a_diverged_rate_rules_out_only_its_own() -> None:
    exp = experiment(
        sweep={"strategy": "adaptive", "batchSizes": [8, 32, 128], "learningRates": [0.01, 0.05]},
        training={"lrScaling": "linear", "referenceBatchSize": 8},
        workload={"datasetSize": 1024},
    )
    planned = plan(exp)
    names = [p.name for p in planned]
    assert names == [
        "demo-b8-g1-lr0p01", "demo-b8-g1-lr0p05", "demo-b32-g1-lr0p01", "demo-b32-g1-lr0p05",
        "demo-b128-g1-lr0p01", "demo-b128-g1-lr0p05",
    ]  # fmt: skip
    phases = dict.fromkeys(names, TrialPhase.PENDING)
    assert verdicts(exp, planned, {}, phases).pilot == "demo-b32-g1-lr0p01"
    finished = {
        "demo-b32-g1-lr0p01": row(32, 1, 0.01, gradient_noise_scale_reason="none"),
        "demo-b8-g1-lr0p05": row(8, 1, 0.05, DIVERGED),
    }
    phases |= {"demo-b32-g1-lr0p01": OK, "demo-b8-g1-lr0p05": DIVERGED}
    skip = verdicts(exp, planned, finished, phases).skip
    assert set(skip) == {"demo-b32-g1-lr0p05", "demo-b128-g1-lr0p05"}  # 0.01 runs on
    assert "batch 8 (t-b8-g1-lr0p05) Diverged" in skip["demo-b128-g1-lr0p05"]


def test_a_running_trial_is_dominated_only_by_other_configurations_including_other_rates() -> None:
    exp = experiment(
        sweep={"batchSizes": [8], "learningRates": [0.01, 0.05]}, training={"targetLoss": 1.0}
    )
    slow, _ = plan(exp)
    far = Progress(steps=500, step_seconds=0.1, loss=2.0)  # 50 s modelled at least
    same = {"a": row(8, 1, 0.01, time_to_target_seconds=1.0)}
    assert dominated(exp, slow, far, same) is None  # its own configuration has finished
    other = {"b": row(8, 1, 0.05, time_to_target_seconds=1.0)}
    reason = dominated(exp, slow, far, other)
    assert reason is not None
    assert "t-b8-g1-lr0p05 reached the target" in reason


def test_result_metrics_get_a_learning_rate_label_only_with_the_axis() -> None:
    from prometheus_client import CollectorRegistry, generate_latest

    registry = CollectorRegistry()
    metrics = OperatorMetrics(registry, ["reconcile"])
    rows = [row(8, 1, 0.1, final_loss=1.0), row(8, 1, 0.2, final_loss=2.0)]
    metrics.observe("ns", "lr", Snapshot({}, Usage(), rows))
    metrics.observe("ns", "plain", Snapshot({}, Usage(), [row(8, 1, None, final_loss=3.0)]))
    text = generate_latest(registry).decode()
    assert (
        'scalelab_trial_result_final_loss{batch_size="8",experiment="lr",gpus="1",'
        'learning_rate="0.1",namespace="ns",repeat="0"} 1.0'
    ) in text
    assert 'learning_rate="0.2"' in text
    assert (
        'scalelab_trial_result_final_loss{batch_size="8",experiment="plain",gpus="1",'
        'namespace="ns",repeat="0"} 3.0'
    ) in text


# ---------------------------------------------------------------------------- results tables


def _saved(tmp_path: Path, **sweep: Any) -> tuple[dict[str, Any], str, str]:
    exp = experiment(sweep={"batchSizes": [8], **sweep})
    records = [planned_record(t, []) for t in plan(exp)]
    results = new_results(exp, records, {})
    aggregate_results(results, exp)
    store.save(tmp_path, results)
    table = render._table(results.trials, "strong", learning_rates=has_learning_rates(results))
    header = (tmp_path / "results.csv").read_text().splitlines()[0]
    return results.spec, header, table


def test_the_tables_show_the_learning_rate_only_with_the_axis(tmp_path: Path) -> None:
    spec, header, table = _saved(tmp_path / "plain")
    assert "learningRates" not in spec["sweep"]  # the spec it always wrote
    assert "baseLearningRate" not in header.split(",")
    assert "base lr" not in table
    spec, header, table = _saved(tmp_path / "rates", learningRates=[0.1, 0.2])
    assert spec["sweep"]["learningRates"] == [0.1, 0.2]
    assert header.split(",")[:4] == ["name", "batchSize", "gpus", "baseLearningRate"]
    assert "<th>base lr</th>" in table
    assert "<td>0.2</td>" in table
