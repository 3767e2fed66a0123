"""The report from synthetic results: which figures appear, and that the HTML is self-contained."""

from __future__ import annotations

import base64
from pathlib import Path

import numpy as np
import pytest

from scalelab.aggregate import analysis, recommend, with_scaling
from scalelab.api import TrialPhase
from scalelab.report.render import build_html, render_report
from scalelab.report.surface import LineStats, surface
from scalelab.results.model import RecordTimes, ResultsFile, TrialRecord, result_row

pytestmark = pytest.mark.unit


def sweep() -> ResultsFile:
    trials = []
    for batch in (4, 16, 64, 256):
        for gpus in (1, 2, 4):
            steps = round(100 * (1 + 32 / batch))
            trials.append(
                TrialRecord(
                    name=f"s-b{batch}-g{gpus}", batch_size=batch, gpus=gpus,
                    phase=TrialPhase.SUCCEEDED, epochs=3, steps=3 * steps, final_loss=1.0,
                    samples_per_second=100.0 * batch * gpus ** 0.8, steps_to_target=steps,
                    epochs_to_target=2, time_to_target_seconds=steps / gpus ** 0.8 / 100,
                    seconds=1.0, gradient_noise_scale=30.0, initial_loss=9.0,
                    curves={"epochLoss": [4.0, 2.0, 1.0], "updateLoss": [5.0, 2.5, 1.2],
                            "steps": [steps, 2 * steps, 3 * steps]},
                )
            )  # fmt: skip
    trials.append(TrialRecord(name="s-b2-g4", batch_size=2, gpus=4, phase=TrialPhase.SKIPPED,
                              reason="global batch 2 is smaller than the 4 processes"))  # fmt: skip
    results = ResultsFile(experiment="s", spec={"training": {"targetLoss": 1.5}}, trials=trials)
    rows = with_scaling([result_row(t) for t in trials])
    effs = {r.trial: r for r in rows}
    results.trials = [
        t.model_copy(update={"scaling_efficiency": effs[t.name].scaling_efficiency,
                             "gpu_seconds": effs[t.name].gpu_seconds})
        for t in trials
    ]  # fmt: skip
    results.recommendation = recommend(rows, max_gpus=4, has_target=True)
    results.critical_batch = analysis(rows)
    return results


def test_a_scaling_sweep_gets_the_fit_the_throughput_and_the_pareto_figures(
    tmp_path: Path,
) -> None:
    page, pngs = build_html(sweep(), tmp_path)
    # Not lab 1's linear model on lab1-line: no lab 1 section.
    assert set(pngs) == {"loss-per-batch", "steps-to-target", "throughput-efficiency", "pareto"}
    for png in pngs.values():
        assert png.startswith(b"\x89PNG")
        assert base64.b64encode(png).decode() in page
    assert "B_crit ≈ 32.2 (one run per batch: no interval" in page  # the synthetic 32
    assert "B_simple predicts 30" in page
    assert "within 2× of the fit" in page
    assert "global batch 2 is smaller than the 4 processes" in page
    assert "Recommendation:</b> batch 256 on 4 GPU(s)" in page  # fewest steps, most GPUs
    assert "http://" not in page
    assert "https://" not in page


def test_the_trial_counts_include_the_trials_the_adaptive_sweep_pruned(tmp_path: Path) -> None:
    results = sweep()
    results.trials.append(
        TrialRecord(name="s-b512-g1", batch_size=512, gpus=1, phase=TrialPhase.PRUNED,
                    reason="dominated by s-b256-g4", pruned=True)
    )  # fmt: skip
    page, _ = build_html(results, tmp_path)
    assert "Trials: 14 total, 12 succeeded, 0 diverged, 0 failed, 1 skipped, 1 pruned," in page


def test_a_cpu_run_is_reported_in_processes_not_gpus(tmp_path: Path) -> None:
    """The spec says where the trials ran: resources.gpusPerProcess 0 is CPU processes."""
    results = sweep()
    results.spec["resources"] = {"gpusPerProcess": 0}
    page, pngs = build_html(results, tmp_path)
    assert "Recommendation:</b> batch 256 on 4 CPU process(es)" in page
    assert "These trials ran on CPU processes" in page
    assert "<th>processes</th>" in page
    assert "<th>process-s</th>" in page
    assert "<th>GPUs</th>" not in page
    assert "Recommendation: time to target vs CPU process-seconds" in page
    gpu_run, gpu_pngs = build_html(sweep(), tmp_path)
    assert "These trials ran on CPU processes" not in gpu_run
    assert "<th>GPUs</th>" in gpu_run
    assert pngs["throughput-efficiency"] != gpu_pngs["throughput-efficiency"]  # axis words


def test_render_report_writes_the_html_and_one_png_per_figure(tmp_path: Path) -> None:
    path = render_report(tmp_path, sweep())
    assert path == tmp_path / "report.html"
    assert len(list((tmp_path / "plots").glob("*.png"))) == 4


def test_the_loss_surface_from_sufficient_statistics_equals_the_direct_mean() -> None:
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 10, 100)
    y = np.asarray(10 * (x + rng.normal(size=100)) + 2, dtype=np.float64)
    stats = LineStats.of(x, y)
    W, B, L = surface(stats)
    assert L.shape == (200, 200)
    assert (W.min(), W.max(), B.min(), B.max()) == (0.0, 20.0, -18.0, 22.0)
    i, j = 37, 151
    direct = np.mean((W[i, j] * x + B[i, j] - y) ** 2)
    assert L[i, j] == pytest.approx(direct, rel=1e-10)


def _lab1_results(tmp_path: Path, dataset: str = "lab1-line") -> ResultsFile:
    """GD (batch 100 of 100) and SGD (batch 1) on a line, SGD with every update recorded."""
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 10, 100)
    np.savez(tmp_path / "line.npz", x=x[:, None], y=10 * x + 2 + rng.normal(0, 1, 100))
    sgd_path = [[10 * (1 - 0.9**k) + 0.3 * (-1) ** k, 2 * (1 - 0.95**k)] for k in range(1, 301)]
    common = {"gpus": 1, "phase": TrialPhase.SUCCEEDED, "epochs": 3, "initial_loss": 500.0,
              "initial_params": {"w": 0.0, "b": 0.0}, "data_file": "line.npz"}  # fmt: skip
    trials = [
        TrialRecord(name="gd", batch_size=100, steps=3, **common,
                    curves={"epochLoss": [90.0, 40.0, 20.0], "updateLoss": [95.0, 45, 25],
                            "params": [{"w": 3.0, "b": 0.5}, {"w": 6.0, "b": 1.0},
                                       {"w": 9.0, "b": 1.5}]}),
        TrialRecord(name="sgd", batch_size=1, steps=300, **common,
                    curves={"epochLoss": [30.0, 5.0, 1.5], "updateLoss": [60.0, 9, 2],
                            "params": [{"w": p[0], "b": p[1]} for p in sgd_path[99::100]],
                            "updateLosses": list(np.geomspace(400, 1, 300)),
                            "updateParams": sgd_path}),
    ]  # fmt: skip
    workload = {"model": "linear", "dataset": dataset, "datasetSize": 100}
    return ResultsFile(experiment="lab", spec={"workload": workload}, trials=trials)


def test_lab1_sections_draw_every_update_and_appear_only_for_lab1(tmp_path: Path) -> None:
    from scalelab.report import plots

    lab = _lab1_results(tmp_path)
    _, pngs = build_html(lab, tmp_path)
    assert {"lab-gd-loss-vs-epoch", "lab-sgd-loss-vs-update", "lab-trajectory-3d"} <= set(pngs)
    w, b = plots._param_path(lab.trials[1])
    assert len(w) == len(b) == 301  # the start, then every update: the zig-zag path
    assert (w[0], b[0]) == (0.0, 0.0)
    assert w[1:] == [p[0] for p in lab.trials[1].curves["updateParams"]]
    assert len(plots._param_path(lab.trials[0])[0]) == 4  # GD: start + 3 epoch ends
    other = _lab1_results(tmp_path, dataset="regression")
    _, pngs = build_html(other, tmp_path)
    assert not {p for p in pngs if p.startswith("lab-")}


def test_the_params_column_shows_the_weight_norm_of_a_many_dimensional_line() -> None:
    from scalelab.report.render import _params

    assert _params({"wNorm": 3.5, "b": 0.5}) == "|w|=3.5, b=0.5"
    assert _params({"w": 9.9, "b": 2.0}) == "w=9.9, b=2"


_FORKED_VS_HERE = """
import json, os, sys, threading
from pathlib import Path
from scalelab.report import render
from scalelab.results.model import ResultsFile

results, directory = ResultsFile.model_validate_json(sys.stdin.read()), Path(sys.argv[1])
expected = sorted(render._DRAW)
alone = threading.active_count() == 1  # the condition for drawing in forked processes
forked = render._draw_all(results, directory)
held = threading.Event()
other = threading.Thread(target=held.wait)
other.start()
here = render._draw_all(results, directory)  # another thread alive: drawn in this process
held.set()
other.join()
render._DRAW = {name: lambda *_: os.getpid() for name in "abc"}
pids = set(render._draw_all(results, directory).values())
print(json.dumps({
    "alone": alone, "names": sorted(forked), "expected": expected,
    "same": forked == here, "trajectory": forked["lab-trajectory-3d"] is not None,
    "drew_elsewhere": os.getpid() not in pids,
}))
"""


def test_figures_drawn_in_forked_processes_are_the_bytes_drawn_here(tmp_path: Path) -> None:
    """In a process of its own with no other thread (as `scalelab run` and `scalelab report` are
    when they draw; this test process may have other tests' threads), with two cores: the
    figures are drawn in forked processes (seen by the pid that drew them), and they are the
    same PNG bytes as drawn in the process itself, which is what happens when another thread is
    alive."""
    import json
    import os
    import subprocess
    import sys

    if len(os.sched_getaffinity(0)) < 2:
        pytest.fail("this test needs two cores (the project's machines have them)")
    lab = _lab1_results(tmp_path)
    done = subprocess.run(
        [sys.executable, "-c", _FORKED_VS_HERE, str(tmp_path)],
        input=lab.model_dump_json(), capture_output=True, text=True, check=False, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout.splitlines()[-1])
    assert seen["alone"]
    assert seen["names"] == seen["expected"]
    assert seen["same"]
    assert seen["trajectory"]
    assert seen["drew_elsewhere"]


def test_the_input_time_columns_appear_only_when_a_trial_streamed_its_input(
    tmp_path: Path,
) -> None:
    in_memory, _ = build_html(sweep(), tmp_path)
    assert "<th>input-bound</th>" not in in_memory
    results = sweep()
    results.trials[0] = results.trials[0].model_copy(
        update={"input_wait_fraction": 0.25, "input_bound": True}
    )
    page, _ = build_html(results, tmp_path)
    assert "<th>input wait</th><th>input-bound</th>" in page
    assert '<td>0.25</td><td class="l">True</td>' in page


def test_the_queue_wait_is_a_column_and_a_sentence_only_where_trials_waited_for_quota(
    tmp_path: Path,
) -> None:
    local = sweep()
    local.trials = [t.model_copy(update={"queue_seconds": 0.0}) for t in local.trials]
    page, _ = build_html(local, tmp_path)
    assert "<th>queue wait s</th>" not in page
    assert "<code>scalelab run</code> has no queue" in page
    cluster = sweep()
    cluster.host = {"cluster": "https://api:6443", "namespace": "team-a"}
    waits = {"s-b4-g1": (0.0, "07:50:00", "07:51:40"), "s-b4-g2": (300.0, "07:50:00", "08:00:00")}
    for i, trial in enumerate(cluster.trials):
        if trial.name in waits:
            wait, created, finished = waits[trial.name]
            times = RecordTimes(created=f"2027-01-15T{created}Z",
                                finished=f"2027-01-15T{finished}Z")  # fmt: skip
            cluster.trials[i] = trial.model_copy(update={"queue_seconds": wait, "times": times})
    page, _ = build_html(cluster, tmp_path)
    assert "<th>queue wait s</th>" in page
    assert "<td>300</td>" in page
    # 300 s of the 100 + 600 s the two trials took from submission to end.
    assert "the trials waited 300 s for quota in all, 43% of the 700 s" in page
    assert "the longest wait was 300 s (s-b4-g2)" in page


def test_the_gpu_time_of_every_run_is_a_column_and_a_sentence_where_it_was_recorded(
    tmp_path: Path,
) -> None:
    page, _ = build_html(sweep(), tmp_path)  # scalelab run records none
    assert "incl. preempted runs" not in page
    cluster = sweep()
    spent = {"s-b4-g1": 120.0, "s-b4-g2": 7080.0}  # s-b4-g2 ran twice: preempted, then finished
    cluster.trials = [
        t.model_copy(update={"device_seconds": spent[t.name]}) if t.name in spent else t
        for t in cluster.trials
    ]
    page, _ = build_html(cluster, tmp_path)
    assert "<th>GPU-s incl. preempted runs</th>" in page
    assert "<td>7080</td>" in page
    assert "GPU time used incl. preempted runs: 7200 GPU-s (2.00 GPU-hours) over 2 trial(s)" in page
    assert "runs Kueue preempted or interrupted and failed ones included" in page
