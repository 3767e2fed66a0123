"""One trial from config to `result` event: build, broadcast, run epochs, stop, report.

The epoch loop lives on the host; the steps run compiled (step.py). At every epoch end the
full-dataset loss is measured (comparable across batch sizes), an `epoch` event is written, and the
stopping rules are applied in this order: divergence, target loss, the lab's relative-change rule,
the epoch cap. Called by __main__.py once per trial (several times with --trial-list).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import horovod.tensorflow as hvd
import numpy as np
import tensorflow as tf

from scalelab_trainer import datasets, linear, models, schedule, step
from scalelab_trainer.config import TrialConfig
from scalelab_trainer.events import Emitter
from scalelab_trainer.metrics import TrialMetrics
from scalelab_trainer.noise import NoiseAccumulator
from scalelab_trainer.optimizers import Optimizer

STOP_CHECK_CALLS = 50  # with N > 1, ranks agree on a stop request every this many calls


@dataclass
class Clock:
    """Step-call timings of a trial, for steady-state throughput and the step-time distribution."""

    skip_steps: int
    durations: list[float] = field(default_factory=list)  # seconds per step, one per call
    steps: list[int] = field(default_factory=list)
    samples: list[int] = field(default_factory=list)

    def add(self, seconds: float, steps: int, samples: int) -> None:
        if steps:
            self.durations.append(seconds / steps)
            self.steps.append(steps)
            self.samples.append(samples)

    def steady(self) -> slice:
        """Calls after the first `skip_steps` steps (all but the first call if that is nothing)."""
        seen, i = 0, 0
        while i < len(self.steps) and seen < self.skip_steps:
            seen += self.steps[i]
            i += 1
        if i >= len(self.steps):
            i = min(1, len(self.steps) - 1) if len(self.steps) > 1 else 0
        return slice(i, None)

    def throughput(self) -> float | None:
        """Global samples per second over steady-state calls."""
        s = self.steady()
        secs = sum(d * k for d, k in zip(self.durations[s], self.steps[s], strict=True))
        return sum(self.samples[s]) / secs if secs > 0 else None

    def step_time(self) -> dict[str, float] | None:
        s = self.steady()
        per = np.repeat(self.durations[s], self.steps[s])
        if per.size == 0:
            return None
        return {
            "mean": float(per.mean()),
            "p50": float(np.percentile(per, 50)),
            "p90": float(np.percentile(per, 90)),
            "max": float(per.max()),
            "count": int(per.size),
        }


def _quadratic(model: models.Linear, x: linear.F64, y: linear.F64) -> Callable[[], tf.Tensor]:
    """Exact full-dataset loss θᵀQθ − 2θᵀq + s of a linear model, O(d²) per call."""
    A = linear.design(x)
    Q = tf.constant(A.T @ A / len(y))
    q = tf.constant(A.T @ y / len(y))
    s = float(y @ y / len(y))

    def loss() -> tf.Tensor:
        theta = tf.concat([model.w, model.b[None]], 0)
        quad = tf.tensordot(theta, tf.linalg.matvec(Q, theta), 1)
        return quad - 2 * tf.tensordot(theta, q, 1) + s

    return loss


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
) -> dict[str, Any]:
    """Train one trial; write `start`, `epoch`s and `result`; return the result event."""
    with graph_rewrites(cfg.model != "linear"):
        return _run_trial(cfg, emitter, stop_requested, metrics)


def _run_trial(
    cfg: TrialConfig,
    emitter: Emitter,
    stop_requested: Callable[[], bool],
    metrics: TrialMetrics | None,
) -> dict[str, Any]:
    rank, size = hvd.rank(), hvd.size()
    t_start = time.perf_counter()
    ds = datasets.build(cfg)
    if cfg.export_data and rank == 0:
        datasets.export(ds, cfg.export_data)
    model = models.build(cfg, ds)
    opt = Optimizer(cfg, model.trainable)
    if size > 1:
        # Horovod: every rank starts from rank 0's weights and optimizer state. Horovod's
        # examples broadcast after the first step only because Keras creates optimizer slots
        # lazily; ours exist already, so the first step is already identical everywhere.
        hvd.broadcast_variables([*model.state, *opt.variables], root_rank=0)

    classify = ds.classes > 0
    # The data lives on the device that computes (a GPU when one is visible), so no call
    # copies the dataset from host memory.
    device = "/GPU:0" if tf.config.list_logical_devices("GPU") else "/CPU:0"
    with tf.device(device):
        x = tf.identity(tf.constant(ds.x, model.dtype))
        y = tf.identity(tf.constant(ds.y, tf.int64 if classify else model.dtype))
    n = ds.size
    measure_noise = cfg.gradient_noise_scale and (size > 1 or cfg.batch_size // size >= 2)
    layout = step.Layout(n, cfg.batch_size, size, rank, 2 if measure_noise and size == 1 else 1)
    S = layout.steps_per_epoch
    sched = schedule.build(
        base=cfg.learning_rate,
        batch=cfg.batch_size,
        reference=cfg.reference_batch_size,
        rule=cfg.lr_scaling,
        warmup_epochs=cfg.warmup_epochs,
        steps_per_epoch=S,
    )
    perm = tf.Variable(tf.range(n, dtype=tf.int64), trainable=False)
    lin = model if isinstance(model, models.Linear) else None
    quad = _quadratic(lin, ds.x, ds.y) if lin is not None else None
    K = cfg.steps_per_call or (S if lin is not None else 1)
    loop = step.build_step_loop(
        model,
        opt,
        sched,
        layout,
        x=x,
        y=y,
        perm=perm,
        measure_noise=measure_noise,
        quadratic_loss=quad,
        track_target=cfg.target_loss is not None,
        one_per_call=K == 1,
        record_updates=cfg.record_update_losses,
    )
    chunk = 256 if cfg.model == "cnn" else 1024  # evaluation batch: bounded activation memory
    # Linear models: the exact quadratic form, eagerly (nothing to trace); others: compiled.
    compiled_loss = None if quad else step.build_full_loss(model, layout, x, y, chunk)
    full_loss: Callable[[], tf.Tensor] = quad or compiled_loss  # type: ignore[assignment]
    accuracy = (
        step.build_accuracy(
            model, layout, tf.constant(ds.x_test, tf.float32), tf.constant(ds.y_test, tf.int64)
        )
        if classify and ds.x_test is not None and ds.y_test is not None
        else None
    )

    diag = (
        linear.diagnose(
            ds.x,
            ds.y,
            rate=sched.target,
            steps_per_epoch=S,
            tolerance=cfg.relative_tolerance,
            plain_gradient_descent=cfg.optimizer == "sgd" and cfg.warmup_epochs == 0,
        )
        if lin is not None
        else None
    )
    warnings = list(diag.warnings) if diag else []
    emitter.emit(
        "start",
        config=cfg.as_dict(),
        processes=size,
        learningRate=sched.target,
        baseLearningRate=sched.base,
        warmupSteps=sched.warmup_steps,
        stepsPerEpoch=S,
        datasetSize=n,
        diagnostics=diag.as_event() if diag else None,
    )

    def distance() -> float | None:
        return float(np.linalg.norm(lin.theta() - diag.optimum)) if lin and diag else None

    # Trace the compiled functions now, so that graph building is reported as compileSeconds
    # and not mixed into the first epoch's training time.
    t_compile = time.perf_counter()
    scalar = tf.TensorSpec([], tf.int64), tf.TensorSpec([], tf.int64)
    loop.get_concrete_function(
        *scalar, tf.TensorSpec([], tf.float64), tf.TensorSpec([], tf.float64)
    )
    if compiled_loss is not None:
        compiled_loss.get_concrete_function()
    compile_seconds = time.perf_counter() - t_compile
    loss0 = float(full_loss())
    limit = cfg.divergence_factor * max(loss0, 1e-12)
    clock = Clock(cfg.throughput_skip_steps)
    # Per-call host work stays small: these never change during a trial.
    bounds = (tf.constant(limit, tf.float64), tf.constant(cfg.target_loss or 0.0, tf.float64))
    samples_per_call = K * cfg.batch_size
    curves: dict[str, list[Any]] = {
        "epochLoss": [],
        "updateLoss": [],
        "params": [],
        "gradientNoiseScale": [],
        "learningRate": [],
    }
    if accuracy is not None:
        curves["testAccuracy"] = []
    if cfg.record_update_losses:
        curves["updateLosses"] = []  # every update's loss: the lab's loss-vs-update plot
    steps = calls = 0
    phase, reason, interrupted = "Succeeded", f"reached max epochs {cfg.max_epochs}", False
    to_target: dict[str, Any] = {
        "stepsToTarget": None,
        "epochsToTarget": None,
        "timeToTargetSeconds": None,
    }
    noise_at_target: float | None = None
    noise_total, epoch_noise = NoiseAccumulator(), NoiseAccumulator()
    prev = loss0 if cfg.stopping_loss == "full" else None
    epoch = 0
    t_train = time.perf_counter()
    loss = loss0
    while epoch < cfg.max_epochs:
        epoch += 1
        t_epoch = time.perf_counter()
        if cfg.shuffle:
            # Same permutation on every rank: drawn from the trial seed and the epoch number.
            perm.assign(np.random.default_rng([cfg.seed, epoch]).permutation(n))
        epoch_noise = NoiseAccumulator()
        upd_sum = upd_n = 0.0
        diverged = False
        hit = -1
        pos = 0
        while pos < S:
            k = min(K, S - pos)
            t0 = time.perf_counter()
            out = loop(tf.constant(steps, tf.int64), tf.constant(k, tf.int64), *bounds).numpy()
            dt = time.perf_counter() - t0
            done = int(out[step.DONE])
            whole = done == K and (pos + K < S or n % cfg.batch_size == 0)  # no short last batch
            samples = samples_per_call if whole else layout.batch_sizes(steps, done)
            clock.add(dt, done, samples)
            if metrics:
                metrics.on_steps(done, samples, dt)
            steps += done
            pos += k
            calls += 1
            upd_sum += out[step.LOSS_SUM]
            if cfg.record_update_losses:
                curves["updateLosses"].extend(float(v) for v in out[step.FULL_LOSS + 1 :][:done])
            upd_n += done
            epoch_noise.add(out[step.G2_SUM], out[step.TR_SUM], int(out[step.NOISE_COUNT]))
            if out[step.TARGET_HIT] >= 0 and hit < 0:
                hit = int(out[step.TARGET_HIT])
            if out[step.DIVERGED]:
                diverged = True
                break
            if _agreed_stop(stop_requested, size, calls):
                interrupted = True
                break
        noise_total.add(epoch_noise.g2, epoch_noise.tr, epoch_noise.count)
        loss = float(out[step.FULL_LOSS])
        if np.isnan(loss):  # not computed inside the step loop (models other than linear)
            loss = float(full_loss())
        diverged = diverged or not np.isfinite(loss) or loss > limit
        update_loss = upd_sum / upd_n if upd_n else float("nan")
        secs = time.perf_counter() - t_epoch
        params = model.summary()
        acc = float(accuracy()) if accuracy is not None else None
        lr_now = sched.rate_at(max(steps - 1, 0))
        gns = epoch_noise.value()
        for key, val in (
            ("epochLoss", loss),
            ("updateLoss", update_loss),
            ("params", params),
            ("gradientNoiseScale", gns),
            ("learningRate", lr_now),
        ):
            curves[key].append(val)
        if acc is not None:
            curves["testAccuracy"].append(acc)
        emitter.emit(
            "epoch",
            epoch=epoch,
            steps=steps,
            loss=loss,
            updateLoss=update_loss,
            params=params,
            distanceToOptimum=distance(),
            seconds=secs,
            samplesPerSecond=layout.batch_sizes(steps - int(upd_n), int(upd_n)) / secs,
            learningRate=lr_now,
            gradientNoiseScale=gns,
            testAccuracy=acc,
        )
        if metrics:
            metrics.on_epoch(epoch, loss, update_loss, gns, lr_now)
        if diverged:
            phase, reason = (
                "Diverged",
                (
                    f"loss {loss:.4g} is not finite or above "
                    f"{cfg.divergence_factor:g}× the initial loss {loss0:.4g}"
                ),
            )
            break
        if interrupted:
            phase, reason = "Failed", "interrupted by SIGTERM"
            break
        if cfg.target_loss is not None and loss <= cfg.target_loss:
            to_target = {
                "stepsToTarget": hit if hit >= 0 else steps,
                "epochsToTarget": epoch,
                "timeToTargetSeconds": time.perf_counter() - t_train,
            }
            noise_at_target = noise_total.value()
            reason = f"reached target loss {cfg.target_loss:g}"
            break
        current = loss if cfg.stopping_loss == "full" else update_loss
        if cfg.relative_tolerance > 0 and prev is not None and prev != 0:
            change = abs(current - prev) / abs(prev)
            if change < cfg.relative_tolerance:
                reason = (
                    f"converged: relative change of the {cfg.stopping_loss} loss "
                    f"{change:.3g} < {cfg.relative_tolerance:g}"
                )
                break
        prev = current

    if lin is not None and diag is not None and reason.startswith("converged"):
        gap = loss - diag.optimal_loss
        dist = distance() or 0.0
        if diag.warnings and dist > 1e-2:
            warnings.append(
                f"stopped by the relative rule at |θ−θ*| = {dist:.3g} with loss gap "
                f"L−L* = {gap:.3g} ({gap / diag.optimal_loss:.2%} of L*)"
            )
    # B_simple grows as the loss falls (McCandlish et al. §3); the last epoch's value is the one
    # that applies to further training, the value at the target the one for time-to-target.
    last_noise = epoch_noise.value() if epoch_noise.count else noise_total.value()
    # The loss surface is part of the trial's work: computed before `seconds` is read.
    surface: dict[str, Any] | None = None
    if lin is not None and cfg.loss_surface_points > 0 and ds.x.shape[1] == 1:
        wg, bg = linear.surface_grid(cfg.data_w, cfg.data_b, cfg.loss_surface_points)
        surface = {
            "w": wg.tolist(),
            "b": bg.tolist(),
            "loss": linear.loss_surface(ds.x, ds.y, wg, bg).tolist(),
        }
    result: dict[str, Any] = {
        "phase": phase,
        "reason": reason,
        "epochs": epoch,
        "steps": steps,
        "finalLoss": loss,
        "initialLoss": loss0,
        "params": model.summary(),
        "optimum": diag.as_event()["optimum"] if diag else None,
        "distanceToOptimum": distance(),
        "samplesPerSecond": clock.throughput(),
        "stepTimeSeconds": clock.step_time(),
        "stepTimeSplit": None,
        **to_target,
        "gradientNoiseScale": last_noise,
        "criticalBatchSize": noise_at_target if noise_at_target is not None else last_noise,
        "testAccuracy": curves["testAccuracy"][-1] if curves.get("testAccuracy") else None,
        "learningRate": sched.target,
        "processes": size,
        "seconds": time.perf_counter() - t_start,
        "compileSeconds": compile_seconds,
        "trainingSeconds": time.perf_counter() - t_train,
        "config": cfg.as_dict(),
        "curves": curves,
        "warnings": warnings,
        "interrupted": interrupted,
    }
    # The compute/communication split costs one more trace; it matters for throughput
    # workloads, not for the line (whose steps take microseconds).
    if phase == "Succeeded" and not interrupted and clock.steps and lin is None:
        probe = step.build_step_loop(
            model,
            opt,
            sched,
            layout,
            x=x,
            y=y,
            perm=perm,
            measure_noise=False,
            quadratic_loss=None,
            track_target=False,
            one_per_call=min(S, K) == 1,
            reduce=False,
        )
        result["stepTimeSplit"] = _split_step_time(probe, clock, min(S, K), steps)
    if surface is not None:
        result["lossSurface"] = surface
    return emitter.emit("result", **result)


def _split_step_time(probe: step.Compiled, clock: Clock, k: int, at: int) -> dict[str, float]:
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


def _agreed_stop(requested: Callable[[], bool], size: int, calls: int) -> bool:
    """Whether to stop now; with N > 1 all ranks decide together every STOP_CHECK_CALLS calls."""
    if size == 1:
        return requested()
    if calls % STOP_CHECK_CALLS:
        return False
    # Horovod: a SIGTERM may reach the ranks at different times; a MAX-allreduce makes every rank
    # stop after the same call, so none is left waiting in a collective.
    flag = hvd.allreduce(tf.constant(1.0 if requested() else 0.0), op=hvd.Max)
    return bool(flag.numpy() > 0)
