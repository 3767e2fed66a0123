"""One trial from config to `result` event: build, broadcast, run epochs, stop, report.

The parts: build.py builds the data, model and compiled calls; epochs.py runs the epochs and
applies the stopping rules; this module writes the `start` event, times the trial, adds what is
measured after training (the compute/communication split, the loss surface) and writes the
`result` event. Called by __main__.py once per trial (several times with --trial-list).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import tensorflow as tf

from scalelab_trainer import linear, precision, step
from scalelab_trainer.build import UPDATE_PARAMS_LIMIT, Built, build_trial, trace
from scalelab_trainer.clock import Clock
from scalelab_trainer.config import TrialConfig
from scalelab_trainer.devices import Placement
from scalelab_trainer.epochs import Run, Sinks, input_summary, train
from scalelab_trainer.events import Emitter
from scalelab_trainer.metrics import TrialMetrics


@contextlib.contextmanager
def graph_rewrites(enabled: bool) -> Iterator[None]:
    """Grappler on or off for the functions first called inside (restored on exit).

    The linear model's graphs are tens of scalar ops: Grappler's passes on the first call of each
    function cost more than they could save, and an unrewritten graph computes exactly the ops
    as written. Keras models keep it (fusion, layout, constant folding pay off there).
    """
    if enabled:
        yield
        return
    before = tf.config.optimizer.get_experimental_options().get("disable_meta_optimizer", False)
    tf.config.optimizer.set_experimental_options({"disable_meta_optimizer": True})
    try:
        yield
    finally:
        tf.config.optimizer.set_experimental_options({"disable_meta_optimizer": before})


def run_trial(
    cfg: TrialConfig,
    emitter: Emitter,
    stop_requested: Callable[[], bool],
    metrics: TrialMetrics | None = None,
    placement: Placement | None = None,
) -> dict[str, Any]:
    """Train one trial on `placement`'s device (devices.py; None: whatever TensorFlow sees);
    write `start`, `epoch`s and `result`; return the result event."""
    if placement is None:
        gpu = bool(tf.config.list_logical_devices("GPU"))
        placement = Placement("gpu" if gpu else "cpu", 0 if gpu else None, None, ())
    with graph_rewrites(cfg.model != "linear"):
        return _run_trial(cfg, emitter, stop_requested, metrics, placement)


def _run_trial(
    cfg: TrialConfig,
    emitter: Emitter,
    stop_requested: Callable[[], bool],
    metrics: TrialMetrics | None,
    placement: Placement,
) -> dict[str, Any]:
    t_start = time.perf_counter()
    if placement.on_gpu:  # this trial's peak, not an earlier one's of the trial list
        tf.config.experimental.reset_memory_stats("GPU:0")
    b = build_trial(cfg)
    initial_params = b.model.summary()  # after the broadcast: what every rank starts from
    warnings = _start_warnings(cfg, b, placement)
    emitter.emit(
        "start",
        config=cfg.as_dict(),
        processes=b.layout.size,
        learningRate=b.sched.target,
        baseLearningRate=b.sched.base,
        warmupSteps=b.sched.warmup_steps,
        stepsPerEpoch=b.layout.steps_per_epoch,
        datasetSize=b.layout.n,
        diagnostics=b.diag.as_event() if b.diag else None,
        device=placement.as_event(),
    )
    compile_seconds = trace(b)
    run = train(cfg, b, Sinks(emitter, metrics, stop_requested))
    if b.lin is not None and b.diag is not None and run.stopped().reason.startswith("converged"):
        gap = run.loss - b.diag.optimal_loss
        dist = b.distance() or 0.0
        if b.diag.warnings and dist > 1e-2:
            warnings.append(
                f"stopped by the relative rule at |θ−θ*| = {dist:.3g} with loss gap "
                f"L−L* = {gap:.3g} ({gap / b.diag.optimal_loss:.2%} of L*)"
            )
    # The loss surface is part of the trial's work: computed before `seconds` is read.
    surface = _loss_surface(cfg, b)
    result = _result(cfg, b, run, warnings)
    result["seconds"] = time.perf_counter() - t_start
    result["compileSeconds"] = compile_seconds
    result["initialParams"] = initial_params
    result["trainingSeconds"] = time.perf_counter() - run.t_train
    result |= _compute(cfg, b, placement)
    # The compute/communication split costs one more trace; it matters for throughput
    # workloads, not for the line (whose steps take microseconds).
    # (streamed data: not measured, the twin would need the data on the device)
    timed = result["phase"] == "Succeeded" and not run.interrupted and run.clock.steps
    if timed and not b.lin and b.stream is None:
        result["stepTimeSplit"] = _measure_split(b, run.clock, cfg.jit_compile)
    if surface is not None:
        result["lossSurface"] = surface
    return emitter.emit("result", **result)


def _start_warnings(cfg: TrialConfig, b: Built, placement: Placement) -> list[str]:
    """What the result must say from the start: the linear diagnostics', the device's, the
    precision's, and records left out."""
    warnings = list(b.diag.warnings) if b.diag else []
    warnings += placement.warnings
    warnings += precision.warnings(cfg.mixed_precision, cfg.model, placement.on_gpu)
    if cfg.record_update_losses and b.lin is not None and not b.plan.recorded_params:
        warnings.append(
            f"per-update parameters not recorded: parameters × updates could exceed "
            f"{UPDATE_PARAMS_LIMIT}"
        )
    return warnings


def _compute(cfg: TrialConfig, b: Built, placement: Placement) -> dict[str, Any]:
    """The result's device, GPU memory peak and precision."""
    peak = tf.config.experimental.get_memory_info("GPU:0")["peak"] if placement.on_gpu else None
    return {
        "device": placement.as_event(),
        "gpuMemoryPeakBytes": peak,
        "precision": precision.summary(
            cfg.mixed_precision, cfg.model, placement.on_gpu, b.loss_scale
        ),
    }


def _loss_surface(cfg: TrialConfig, b: Built) -> dict[str, Any] | None:
    """Linear model on 1-D data with --loss-surface-points K: the loss on a K×K (w, b) grid."""
    if b.lin is None or b.ds is None or cfg.loss_surface_points <= 0 or b.ds.x.shape[1] != 1:
        return None
    wg, bg = linear.surface_grid(cfg.data_w, cfg.data_b, cfg.loss_surface_points)
    return {
        "w": wg.tolist(),
        "b": bg.tolist(),
        "loss": linear.loss_surface(b.ds.x, b.ds.y, wg, bg).tolist(),
    }


def _result(cfg: TrialConfig, b: Built, run: Run, warnings: list[str]) -> dict[str, Any]:
    """The `result` event's fields but the timings (the trial contract's result)."""
    # B_simple grows as the loss falls (McCandlish et al. §3); the smoothed value at the end is
    # the one that applies to further training, the value at the target the one for
    # time-to-target (the predicted critical batch size).
    noise = run.noise_summary()
    at_target = run.noise_at_target or noise
    curves = run.curves
    stop = run.stopped()
    return {
        "phase": stop.phase,
        "reason": stop.reason,
        "epochs": run.epoch,
        "steps": run.steps,
        "finalLoss": run.loss,
        "initialLoss": run.loss0,
        "params": b.model.summary(),
        "optimum": b.diag.as_event()["optimum"] if b.diag else None,
        "distanceToOptimum": b.distance(),
        "samplesPerSecond": run.clock.throughput(),
        "stepTimeSeconds": run.clock.step_time(),
        "stepTimeSplit": None,
        **run.to_target,
        **noise,
        "criticalBatchSize": at_target["gradientNoiseScale"],
        "criticalBatchSizeStderr": at_target["gradientNoiseScaleStderr"],
        "testAccuracy": curves["testAccuracy"][-1] if curves.get("testAccuracy") else None,
        "learningRate": b.sched.target,
        "processes": b.layout.size,
        "datasetSize": b.layout.n,  # the examples trained on (a custom workload's: all it gave)
        "seconds": None,
        "compileSeconds": None,
        "trainingSeconds": None,
        "config": cfg.as_dict(),
        "curves": curves,
        "warnings": warnings,
        "interrupted": run.interrupted,
        **input_summary(run),
    }


def _measure_split(b: Built, clock: Clock, jit_compile: bool) -> dict[str, float]:
    """Build the compute-only twin of the step loop and split the step time with it."""
    S, K = b.layout.steps_per_epoch, b.plan.steps_per_call
    probe = step.build_step_loop(
        b.model,
        b.opt,
        b.sched,
        b.layout,
        x=b.x,
        y=b.y,
        perm=b.perm,
        options=step.Options(
            one_per_call=min(S, K) == 1,
            reduce=False,
            loss_scale=b.loss_scale,
            jit_compile=jit_compile,
        ),
    )
    return _split_step_time(probe, clock, min(S, K))


def _split_step_time(probe: step.Compiled, clock: Clock, k: int) -> dict[str, float]:
    """Step time = compute (forward + backward, timed alone) + the rest (allreduce, update).

    The compute-only twin of the step loop runs the same steps without the allreduce and the
    update; its median time per step is subtracted from the training steps' median. It is
    measured after training, so it never slows the run down; every rank runs it in step.
    """
    args = (
        (tf.constant(0, tf.int64), tf.constant(k, tf.int64)),
        (tf.constant(np.inf, tf.float64), tf.constant(0.0, tf.float64)),
    )
    probe(*args[0], *args[1])  # trace and warm up
    times = []
    for _ in range(5):
        t0 = time.perf_counter()
        probe(*args[0], *args[1]).numpy()
        times.append((time.perf_counter() - t0) / k)
    compute = float(np.median(times))
    total = (clock.step_time() or {}).get("p50", compute)
    return {
        "computeSeconds": compute,
        "communicationAndUpdateSeconds": max(total - compute, 0.0),
        "stepSeconds": total,
        "probeSteps": 5 * k,
    }
