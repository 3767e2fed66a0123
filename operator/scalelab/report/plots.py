"""The report's figures, each a pure function from results to PNG bytes (None when not applicable).

The lab's plots as the lab drew them (loss vs epoch for GD, loss vs update for SGD, the 3D
trajectory over the loss surface) and the scaling plots (loss per batch size, steps-/epochs-to-
target with the S = S_min(1 + B_crit/B) fit, throughput and efficiency vs GPUs, the Pareto
front). matplotlib with the Agg backend: no display needed. Called by render.py.

With a sweep.learningRates axis a curve is one (batch, learning rate): the loss curves are one per
pair, steps-to-target draws one line per rate and fits the best rate of each batch (critical.py
says why), and the Pareto points name their rate. Throughput does not depend on the rate, so
the throughput plot stays one line per batch size.
"""

from __future__ import annotations

import io
from collections import defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path
from statistics import mean, median
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

from scalelab.aggregate import MEASURED
from scalelab.critical import CriticalBatchFit, fit_critical_batch
from scalelab.report.surface import LineStats, load_line_data, surface
from scalelab.results.model import ResultsFile, TrialRecord, has_learning_rates

DPI = 90


def _png(fig: Figure) -> bytes:
    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="png", dpi=DPI)
    plt.close(fig)
    return buffer.getvalue()


def on_cpu(results: ResultsFile) -> bool:
    """True when the trials ran on CPU processes (the spec's resources.gpusPerProcess is 0), so
    the report says processes where a GPU run says GPUs."""
    resources = results.spec.get("resources") or {}
    return bool(resources.get("gpusPerProcess") == 0)


def device_words(results: ResultsFile, text: str) -> str:
    """`text` with GPU-seconds as CPU process-seconds when the trials ran on CPU."""
    return text.replace("GPU-seconds", "CPU process-seconds") if on_cpu(results) else text


def _floats(values: Sequence[Any]) -> list[float]:
    return [float(v) if isinstance(v, int | float) else float("nan") for v in values]


def _curve(record: TrialRecord, key: str) -> list[float]:
    return _floats(record.curves.get(key) or [])


def _measured(results: ResultsFile) -> list[TrialRecord]:
    return [t for t in results.trials if t.phase in MEASURED and t.curves.get("epochLoss")]


def _label(record: TrialRecord) -> str:
    """ "B=64", or "B=64, lr=0.1" with a learning-rate axis."""
    rate = record.base_learning_rate
    return f"B={record.batch_size}" + (f", lr={rate:g}" if rate is not None else "")


def _single_process(results: ResultsFile) -> list[TrialRecord]:
    """Repeat-0 curves at the smallest process count of each batch size (and learning rate), by
    batch size."""
    best: dict[tuple[int, float], TrialRecord] = {}
    for t in _measured(results):
        key = (t.batch_size, t.base_learning_rate or 0.0)
        if t.repeat == 0 and (key not in best or t.gpus < best[key].gpus):
            best[key] = t
    return [best[k] for k in sorted(best)]


def _updates(record: TrialRecord) -> list[float]:
    steps = _floats(record.curves.get("steps") or [])
    if steps and len(steps) == len(_curve(record, "updateLoss")):
        return steps
    per_epoch = (record.steps or 0) / max(record.epochs or 1, 1)
    return [per_epoch * (i + 1) for i in range(len(_curve(record, "updateLoss")))]


def _from_zero(record: TrialRecord, key: str) -> tuple[list[float], list[float]]:
    """(updates, loss) with the initial loss at update 0 prepended when the trainer gave it."""
    x, y = _updates(record), _curve(record, key)
    if record.initial_loss is not None:
        return [0.0, *x], [record.initial_loss, *y]
    return x, y


def _lab1(results: ResultsFile) -> list[TrialRecord]:
    """Lab 1's trials (the linear model on lab1-line), by batch size; [] for other experiments,
    whose report has no lab 1 section."""
    workload = results.spec.get("workload") or {}
    if workload.get("model") != "linear" or workload.get("dataset") != "lab1-line":
        return []
    return _single_process(results)


def lab_gd_loss_vs_epoch(results: ResultsFile) -> bytes | None:
    """The lab's GD plot: full-dataset loss vs epoch of the full-batch trial (batch = dataset)."""
    size = (results.spec.get("workload") or {}).get("datasetSize")
    full = [t for t in _lab1(results) if isinstance(size, int) and t.batch_size >= size]
    if not full:
        return None
    gd = full[-1]
    fig, ax = plt.subplots(figsize=(6.5, 4))
    loss = _curve(gd, "epochLoss")
    ax.plot(range(1, len(loss) + 1), loss, color="tab:blue")
    ax.set(
        xlabel="epoch",
        ylabel="loss (MSE, full dataset)",
        yscale="log",
        title=f"Gradient descent, batch {gd.batch_size}: loss vs epoch",
    )
    _optimum_line(ax, gd)
    return _png(fig)


def lab_sgd_loss_vs_update(results: ResultsFile) -> bytes | None:
    """The lab's SGD plot: every update's loss of the smallest batch (the zig-zag), with the
    epoch means and the full loss; epoch means only when updates were not recorded."""
    trials = _lab1(results)
    if not trials:
        return None
    sgd = trials[0]
    fig, ax = plt.subplots(figsize=(6.5, 4))
    every = _curve(sgd, "updateLosses")
    if every:
        ax.plot(range(1, len(every) + 1), every, color="tab:orange", lw=0.5, alpha=0.7,
                label="loss of each update (its batch, before the update)")  # fmt: skip
    ax.plot(
        _updates(sgd),
        _curve(sgd, "updateLoss"),
        color="tab:red" if every else "tab:orange",
        label="update loss (mean per epoch)",
    )
    ax.plot(_updates(sgd), _curve(sgd, "epochLoss"), color="tab:blue", lw=1, label="full loss")
    ax.set(
        xlabel="update (optimizer step)",
        ylabel="loss (MSE)",
        yscale="log",
        title=f"SGD, batch {sgd.batch_size}: loss vs update",
    )
    _optimum_line(ax, sgd)
    ax.legend()
    return _png(fig)


def _optimum_line(ax: Any, record: TrialRecord) -> None:
    optimum = record.optimum or record.diagnostics.get("optimum") or {}
    if isinstance(optimum.get("loss"), int | float):
        ax.axhline(optimum["loss"], color="gray", ls="--", lw=1, label="optimum L*")


#: Where the trainer starts the linear model when its result carries no initialParams
#: (trainer/scalelab_trainer/models.py initialises w and b at zero).
LINEAR_START = {"w": 0.0, "b": 0.0}


def _param_path(record: TrialRecord) -> tuple[list[float], list[float]]:
    """(w, b) from the trial's real start through every update when the trainer recorded them
    (`updateParams`, [w, b] per update), else through every epoch end."""
    start = record.initial_params or LINEAR_START
    rows = [r for r in record.curves.get("updateParams") or [] if isinstance(r, list)]
    if rows and all(len(r) == 2 for r in rows):
        return _floats([start.get("w"), *(r[0] for r in rows)]), _floats(
            [start.get("b"), *(r[1] for r in rows)]
        )
    points = [p for p in record.curves.get("params") or [] if isinstance(p, dict)]
    if points:
        points = [start, *points]
    return _floats([p.get("w") for p in points]), _floats([p.get("b") for p in points])


def trajectory_3d(results: ResultsFile, directory: Path) -> bytes | None:
    """The lab's 3D plot: parameter trajectories of GD and SGD over the loss surface (+ contour)."""
    trials = [t for t in _lab1(results) if t.data_file and _param_path(t)[0]]
    if not trials:
        return None
    data = load_line_data(directory / str(trials[0].data_file))
    if data is None:
        return None
    stats = LineStats.of(*data)
    W, B, L = surface(stats)
    shown = trials if len(trials) <= 3 else [trials[0], trials[len(trials) // 2], trials[-1]]
    fig = plt.figure(figsize=(12, 5))
    ax3 = fig.add_subplot(1, 2, 1, projection="3d")
    ax3.plot_surface(W, B, L, cmap="viridis", alpha=0.6, rcount=30, ccount=30, linewidth=0)
    ax2 = fig.add_subplot(1, 2, 2)
    levels = np.geomspace(max(float(L.min()), 1e-9), float(L.max()), 25)
    ax2.contour(W, B, L, levels=levels, cmap="viridis", linewidths=0.7)
    colors = plt.get_cmap("tab10")
    for i, t in enumerate(shown):
        w, b = _param_path(t)
        z = stats.loss(np.array(w), np.array(b))
        label = f"batch {t.batch_size}" + (" (GD)" if t is trials[-1] else "")
        ax3.plot(w, b, z, color=colors(i), lw=1 if len(w) > 200 else 2, label=label)
        ax2.plot(w, b, color=colors(i), lw=0.8, marker=".", ms=1.5, label=label)
    optimum = trials[0].optimum or trials[0].diagnostics.get("optimum") or {}
    if isinstance(optimum.get("w"), int | float) and isinstance(optimum.get("b"), int | float):
        ax2.plot([optimum["w"]], [optimum["b"]], "k*", ms=10, label="optimum θ*")
    ax3.set(xlabel="w", ylabel="b", zlabel="loss", title="Trajectories over the loss surface")
    ax2.set(
        xlabel="w",
        ylabel="b",
        xlim=(0, 20),
        ylim=(-18, 22),
        title="Same, from above (log-spaced contours)",
    )
    ax2.legend(loc="upper left", fontsize=8)
    return _png(fig)


def loss_per_batch(results: ResultsFile) -> bytes | None:
    """Loss curves of every batch size on one axis: per epoch and per update."""
    trials = _single_process(results)
    if not trials:
        return None
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.2))
    for t in trials:
        loss = _curve(t, "epochLoss")
        left.plot(range(1, len(loss) + 1), loss, label=_label(t))
        right.plot(*_from_zero(t, "epochLoss"), label=_label(t))
    left.set(
        xlabel="epoch",
        ylabel="full-dataset loss",
        yscale="log",
        xscale="log",
        title="Loss vs epoch, per batch size",
    )
    right.set(
        xlabel="optimizer steps",
        ylabel="full-dataset loss",
        yscale="log",
        xscale="log",
        title="Loss vs update, per batch size",
    )
    target = results.spec.get("training", {}).get("targetLoss")
    for ax in (left, right):
        if isinstance(target, int | float):
            ax.axhline(target, color="gray", ls=":", lw=1, label="target")
        ax.legend(fontsize=8)
    return _png(fig)


def _to_target_by_batch(results: ResultsFile) -> dict[int, list[TrialRecord]]:
    """Measured trials that reached the target, at the fewest processes of their batch size."""
    by_batch: dict[int, list[TrialRecord]] = defaultdict(list)
    for t in results.trials:
        if (
            t.phase in MEASURED
            and t.steps_to_target
            and t.gpus == min(x.gpus for x in results.trials if x.batch_size == t.batch_size)
        ):
            by_batch[t.batch_size].append(t)
    return by_batch


def _by_rate(trials: Sequence[TrialRecord]) -> dict[float | None, list[TrialRecord]]:
    rates: dict[float | None, list[TrialRecord]] = defaultdict(list)
    for t in trials:
        rates[t.base_learning_rate].append(t)
    return rates


def _best_rate(trials: Sequence[TrialRecord]) -> list[TrialRecord]:
    """The trials of one batch at its best learning rate, as critical.best_rate_steps picks it
    (most runs at the target, then fewest mean steps); all of them without the axis."""
    return min(
        _by_rate(trials).values(),
        key=lambda ts: (-len(ts), mean(float(t.steps_to_target or 0) for t in ts)),
    )


def _rate_lines(ax: Any, by_batch: dict[int, list[TrialRecord]], key: str) -> None:
    """One faint line per learning rate (with an axis): `key` (steps or epochs) vs batch."""
    by_rate: dict[float, dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    for batch, trials in by_batch.items():
        for t in trials:
            if t.base_learning_rate is not None:
                by_rate[t.base_learning_rate][batch].append(float(getattr(t, key) or 0))
    for rate, points in sorted(by_rate.items()):
        batches = sorted(points)
        values = [mean(points[b]) for b in batches]
        ax.plot(batches, values, ".--", lw=1, alpha=0.6, label=f"lr={rate:g}")


def steps_to_target_fit(results: ResultsFile) -> tuple[bytes | None, CriticalBatchFit | None]:
    """Steps- and epochs-to-target vs batch with the fit S = S_min(1 + B_crit/B)."""
    by_batch = _to_target_by_batch(results)
    if len(by_batch) < 2:
        return None, None
    rated = {b: _best_rate(ts) for b, ts in by_batch.items()}
    batches = sorted(by_batch)
    steps = [mean(float(t.steps_to_target or 0) for t in rated[b]) for b in batches]
    epochs = [mean(float(t.epochs_to_target or 0) for t in rated[b]) for b in batches]
    fit = fit_critical_batch(batches, steps)
    noise = [
        t.gradient_noise_scale for ts in by_batch.values() for t in ts if t.gradient_noise_scale
    ]
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.2))
    _rate_lines(left, by_batch, "steps_to_target")
    _steps_panel(left, results, batches, steps, fit, noise)
    _rate_lines(right, by_batch, "epochs_to_target")
    right.plot(batches, epochs, "o-", color="tab:purple")
    # A custom workload without datasetSize trains on what it provides: no size to draw with.
    size = results.spec.get("workload", {}).get("datasetSize")
    if fit is not None and size:
        size = float(size)
        grid = np.geomspace(min(batches), max(batches), 100)
        right.plot(
            grid,
            [fit.steps(b) * b / size for b in grid],
            "-",
            color="tab:orange",
            label="E = S·B/n from the fit",
        )
        right.legend(fontsize=8)
    right.set(
        xscale="log",
        yscale="log",
        xlabel="global batch size B",
        ylabel="epochs to target",
        title="Epochs to target vs batch",
    )
    return _png(fig), fit


def _steps_panel(  # noqa: PLR0917 - one panel's inputs, drawn once
    ax: Any,
    results: ResultsFile,
    batches: list[int],
    steps: list[float],
    fit: CriticalBatchFit | None,
    noise: list[float],
) -> None:
    """Steps to target vs batch: the measurements (each batch's best learning rate, with an
    axis), the fit, its B_crit and B_simple."""
    rates = has_learning_rates(results)
    ax.plot(batches, steps, "o", label="measured, best rate per batch" if rates else "measured")
    if fit is not None:
        grid = np.geomspace(min(batches), max(batches), 100)
        ax.plot(
            grid,
            [fit.steps(b) for b in grid],
            "-",
            label=f"S_min(1+B_crit/B): S_min={fit.s_min:.3g}, B_crit={fit.b_crit:.3g}, "
            f"R²(log)={fit.r2:.2f}",
        )
        beyond = results.critical_batch is not None and results.critical_batch.beyond_range
        if not beyond and min(batches) / 10 <= fit.b_crit <= max(batches) * 10:
            ax.axvline(fit.b_crit, color="tab:green", ls="--", lw=1, label="fitted B_crit")
    if noise:
        ax.axvline(
            median(noise),
            color="tab:red",
            ls=":",
            lw=1,
            label=f"measured B_simple (median) = {median(noise):.3g}",
        )
    ax.set(
        xscale="log",
        yscale="log",
        xlabel="global batch size B",
        ylabel="steps to target",
        title="Steps to target vs batch",
    )
    ax.legend(fontsize=8)


def throughput_and_efficiency(results: ResultsFile) -> bytes | None:
    """Samples/s and scaling efficiency vs process count, one line per batch size."""
    rows = [t for t in results.trials if t.phase in MEASURED and t.samples_per_second]
    if not rows:
        return None
    groups: dict[int, dict[int, list[TrialRecord]]] = defaultdict(lambda: defaultdict(list))
    for t in rows:
        groups[t.batch_size][t.gpus].append(t)
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.2))
    if len({t.gpus for t in rows}) > 1:
        _per_process_count(left, right, results, groups)
    else:
        _per_batch(left, right, groups)
    return _png(fig)


def _per_process_count(
    left: Any, right: Any, results: ResultsFile, groups: dict[int, dict[int, list[TrialRecord]]]
) -> None:
    """Throughput (left) and scaling efficiency (right) vs processes, a line per batch size."""
    for batch, by_gpus in sorted(groups.items()):
        gpus = sorted(by_gpus)
        left.plot(
            gpus,
            [mean(float(t.samples_per_second or 0) for t in by_gpus[g]) for g in gpus],
            "o-",
            label=f"B={batch}",
        )
        eff = []
        for g in gpus:
            known = [
                float(t.scaling_efficiency) for t in by_gpus[g] if t.scaling_efficiency is not None
            ]
            if known:
                eff.append((g, mean(known)))
        if eff:
            right.plot([g for g, _ in eff], [e for _, e in eff], "o-", label=f"B={batch}")
    right.axhline(1.0, color="gray", ls="--", lw=1, label="ideal")
    ticks = sorted({g for by_gpus in groups.values() for g in by_gpus})
    for ax in (left, right):
        ax.set_xscale("log", base=2)
        ax.set_xticks(ticks, [str(g) for g in ticks])
    axis, devices = (
        ("processes (CPU)", "processes") if on_cpu(results) else ("processes (GPUs)", "GPUs")
    )
    left.set(xlabel=axis, ylabel="samples/s", title=f"Throughput vs {devices}")
    right.set(
        xlabel=axis,
        ylabel=f"{results.scaling_efficiency_kind} scaling efficiency",
        title=f"Scaling efficiency vs {devices}",
        ylim=(0, 1.2),
    )
    right.legend(fontsize=8)
    left.legend(fontsize=8)


def _per_batch(left: Any, right: Any, groups: dict[int, dict[int, list[TrialRecord]]]) -> None:
    """One process count: throughput (left) and optimizer steps/s (right) vs batch size."""
    batches = sorted(groups)
    speed = [
        mean(float(t.samples_per_second or 0) for ts in groups[b].values() for t in ts)
        for b in batches
    ]
    left.plot(batches, speed, "o-")
    left.set(
        xscale="log",
        xlabel="global batch size",
        ylabel="samples/s",
        title="Throughput vs batch size (1 configuration per batch)",
    )
    steps = [s / b for s, b in zip(speed, batches, strict=True)]
    right.plot(batches, steps, "o-", color="tab:green")
    right.set(
        xscale="log",
        yscale="log",
        xlabel="global batch size",
        ylabel="steps/s",
        title="Optimizer steps per second vs batch size",
    )


def pareto(results: ResultsFile) -> bytes | None:
    """Time-to-target vs GPU-seconds of every configuration; the front and the recommendation."""
    rec = results.recommendation
    if rec is None or not rec.pareto:
        return None
    points = [
        t for t in results.trials if t.gpu_seconds and (t.time_to_target_seconds or t.seconds)
    ]
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    ax.scatter(
        [float(t.time_to_target_seconds or t.seconds or 0) for t in points],
        [float(t.gpu_seconds or 0) for t in points],
        color="lightgray",
        label="trials",
    )
    front = rec.pareto
    ax.plot(
        [p.time_to_target_seconds for p in front],
        [p.gpu_seconds for p in front],
        "o-",
        color="tab:blue",
        label="Pareto front",
    )
    for p in front:
        rate = f", lr={p.base_learning_rate:g}" if p.base_learning_rate is not None else ""
        ax.annotate(
            f"B={p.batch_size}, N={p.gpus}{rate}",
            (p.time_to_target_seconds, p.gpu_seconds),
            fontsize=7,
            xytext=(4, 4),
            textcoords="offset points",
        )
    ax.plot(
        [front[0].time_to_target_seconds],
        [front[0].gpu_seconds],
        "*",
        ms=15,
        color="tab:red",
        label="recommended",
    )
    ax.set(
        xlabel="time to target (s)",
        ylabel=device_words(results, "GPU-seconds"),
        xscale="log",
        yscale="log",
        title="Cost vs time to target",
    )
    ax.legend(fontsize=8)
    return _png(fig)


#: Figure file name → (title, caption, function) for the figures that need only the results.
SIMPLE_FIGURES: dict[str, tuple[str, Callable[[ResultsFile], bytes | None]]] = {
    "lab-gd-loss-vs-epoch": ("Lab 1: gradient descent, loss vs epoch", lab_gd_loss_vs_epoch),
    "lab-sgd-loss-vs-update": ("Lab 1: SGD, loss vs update", lab_sgd_loss_vs_update),
    "loss-per-batch": ("Loss curves per batch size", loss_per_batch),
    "throughput-efficiency": ("Throughput and scaling efficiency", throughput_and_efficiency),
    "pareto": ("Recommendation: time to target vs GPU-seconds", pareto),
}
