"""The report from synthetic results: which figures appear, and that the HTML is self-contained."""

from __future__ import annotations

import base64
from pathlib import Path

import numpy as np
import pytest

from scalelab.aggregate import recommend, with_scaling
from scalelab.api import TrialPhase
from scalelab.report.render import build_html, render_report
from scalelab.report.surface import LineStats, surface
from scalelab.results.model import ResultsFile, TrialRecord, result_row

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
                    samples_per_second=1000.0 * gpus ** 0.8, steps_to_target=steps,
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
    return results


def test_a_scaling_sweep_gets_the_fit_the_throughput_and_the_pareto_figures(
    tmp_path: Path,
) -> None:
    page, pngs = build_html(sweep(), tmp_path)
    assert set(pngs) == {
        "lab-gd-loss-vs-epoch", "lab-sgd-loss-vs-update", "loss-per-batch", "steps-to-target",
        "throughput-efficiency", "pareto",
    }  # fmt: skip
    for png in pngs.values():
        assert png.startswith(b"\x89PNG")
        assert base64.b64encode(png).decode() in page
    assert "B_crit = 32" in page  # the fit recovers the synthetic critical batch
    assert "global batch 2 is smaller than the 4 processes" in page
    assert "Recommendation:</b> batch 256 on 4 GPU(s)" in page  # fewest steps, most GPUs
    assert "http://" not in page
    assert "https://" not in page


def test_render_report_writes_the_html_and_one_png_per_figure(tmp_path: Path) -> None:
    path = render_report(tmp_path, sweep())
    assert path == tmp_path / "report.html"
    assert len(list((tmp_path / "plots").glob("*.png"))) == 6


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
