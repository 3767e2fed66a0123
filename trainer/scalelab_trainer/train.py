"""One trial from config to `result` event: build, broadcast, run epochs, stop, report.

The epoch loop lives on the host; the steps run compiled (step.py), and for linear models whole
epochs do, with the stopping rules inside the graph. At every epoch end the full-dataset loss is
measured (comparable across batch sizes), an `epoch` event is written, and the stopping rules are
applied on the host in this order: divergence, target loss, the lab's relative-change rule, the
epoch cap. Called by __main__.py once per trial (several times with --trial-list).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import tensorflow as tf

from scalelab_trainer import custom, datasets, linear, models, schedule, step, stopping, world
from scalelab_trainer.config import TrialConfig
from scalelab_trainer.events import Emitter
from scalelab_trainer.metrics import TrialMetrics
from scalelab_trainer.noise import NoiseAccumulator
from scalelab_trainer.optimizers import Optimizer

STOP_CHECK_CALLS = 50  # with N > 1, ranks agree on a stop request every this many calls
#: Linear models on one process run whole epochs per call, as many as the last call's pace fits
#: in this many seconds (events, metrics and SIGTERM wait for a call), at most 8× the last
#: call's epochs and EPOCH_CALL_STEPS steps.
EPOCH_CALL_SECONDS = 0.25
EPOCH_CALL_STEPS = 10_000
#: Per-update parameters are recorded (--record-update-losses, linear models) while
#: parameters × steps per epoch × max epochs stays within this many numbers.
UPDATE_PARAMS_LIMIT = 200_000


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


@dataclass
class _Built:
    """Everything one trial builds before its first step: data, model, schedule, compiled calls."""

    ds: datasets.Dataset
    model: models.Model
    opt: Optimizer
    layout: step.Layout
    sched: schedule.Schedule
    perm: tf.Variable  # the epoch's example order (identity unless shuffling)
    x: tf.Tensor
    y: tf.Tensor
    steps_per_call: int  # K: optimizer steps per call of the step loop
    loop: step.Compiled
    compiled_loss: step.Compiled | None  # models other than linear: the full loss, compiled
    full_loss: Callable[[], tf.Tensor]
    accuracy: step.Compiled | None
    lin: models.Linear | None = None
    diag: linear.Diagnostics | None = None
    recorded_params: int = 0  # P when every update's parameters are recorded, else 0
    epoch_loop: bool = False  # `loop` runs whole epochs with the stopping rules (linear models)
    params: int = 0  # P, the trainable parameters
    recorded: int = 0  # epoch loop: 0, 1 (every update's loss) or 1 + P (and its parameters)

    def distance(self, theta: linear.F64 | None = None) -> float | None:
        """|θ − θ*| of the linear model (now, or at `theta`), where the optimum is known."""
        if self.lin is None or self.diag is None:
            return None
        now = self.lin.theta() if theta is None else theta
        return float(np.linalg.norm(now - self.diag.optimum))


@dataclass
class _Run:
    """What a trial has done so far, across epochs."""

    loss0: float  # full-dataset loss before the first step
    clock: Clock
    curves: dict[str, list[Any]]
    t_train: float  # perf_counter at the first step
    steps: int = 0
    calls: int = 0
    pace: tuple[int, float] | None = None  # epoch loop: epochs and seconds of the last call
    epoch: int = 0
    loss: float = 0.0
    interrupted: bool = False
    stop: stopping.Stop | None = None
    to_target: dict[str, Any] = field(
        default_factory=lambda: dict.fromkeys(
            ("stepsToTarget", "epochsToTarget", "timeToTargetSeconds")
        )
    )
    noise: NoiseAccumulator = field(default_factory=NoiseAccumulator)  # smoothed across epochs
    noise_at_target: dict[str, Any] | None = None  # noise.summary() when the target was reached
    noise_unmeasured: str | None = None  # why B_simple is not estimated at all


@dataclass
class _Epoch:
    """What one epoch's calls of the step loop added up to."""

    update_loss_sum: float = 0.0
    updates: int = 0
    diverged: bool = False
    target_hit: int | None = None  # global step at which the target was first reached
    last: step.CallOutput | None = None


def _run_trial(
    cfg: TrialConfig,
    emitter: Emitter,
    stop_requested: Callable[[], bool],
    metrics: TrialMetrics | None,
) -> dict[str, Any]:
    t_start = time.perf_counter()
    b = _build(cfg)
    initial_params = b.model.summary()  # after the broadcast: what every rank starts from
    warnings = list(b.diag.warnings) if b.diag else []
    if cfg.record_update_losses and b.lin is not None and not b.recorded_params:
        warnings.append(
            f"per-update parameters not recorded: parameters × updates could exceed "
            f"{UPDATE_PARAMS_LIMIT}"
        )
    emitter.emit(
        "start",
        config=cfg.as_dict(),
        processes=b.layout.size,
        learningRate=b.sched.target,
        baseLearningRate=b.sched.base,
        warmupSteps=b.sched.warmup_steps,
        stepsPerEpoch=b.layout.steps_per_epoch,
        datasetSize=b.ds.size,
        diagnostics=b.diag.as_event() if b.diag else None,
    )
    compile_seconds = _trace(b)
    run = _train(cfg, b, emitter, stop_requested, metrics)
    if b.lin is not None and b.diag is not None and _stop(run).reason.startswith("converged"):
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
    # The compute/communication split costs one more trace; it matters for throughput
    # workloads, not for the line (whose steps take microseconds).
    if result["phase"] == "Succeeded" and not run.interrupted and run.clock.steps and not b.lin:
        result["stepTimeSplit"] = _measure_split(b, run.clock)
    if surface is not None:
        result["lossSurface"] = surface
    return emitter.emit("result", **result)


def _data_and_model(cfg: TrialConfig) -> tuple[datasets.Dataset, models.Model]:
    if cfg.model == "custom":  # a user workload: its data and model, checked on every rank
        return custom.build(cfg)
    ds = datasets.build(cfg)
    return ds, models.build(cfg, ds)


def _build(cfg: TrialConfig) -> _Built:
    """Data on the computing device, the model, its optimizer and the compiled calls."""
    rank, size = world.rank(), world.size()
    ds, model = _data_and_model(cfg)
    if cfg.export_data and rank == 0:
        datasets.export(ds, cfg.export_data)
    opt = Optimizer(cfg, model.trainable)
    if size > 1:
        # Horovod: every rank starts from rank 0's weights and optimizer state. Horovod's
        # examples broadcast after the first step only because Keras creates optimizer slots
        # lazily; ours exist already, so the first step is already identical everywhere.
        world.hvd().broadcast_variables([*model.state, *opt.variables], root_rank=0)
    labels = tf.int64 if np.issubdtype(ds.y.dtype, np.integer) else model.dtype  # class labels
    # The data lives on the device that computes (a GPU when one is visible), so no call
    # copies the dataset from host memory.
    device = "/GPU:0" if tf.config.list_logical_devices("GPU") else "/CPU:0"
    with tf.device(device):
        x = tf.identity(tf.constant(ds.x, model.dtype))
        y = tf.identity(tf.constant(ds.y, labels))
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
    # Linear models without a --steps-per-call: whole epochs per call, rules in the graph.
    epoch_loop = lin is not None and not cfg.steps_per_call
    P = sum(int(np.prod(v.shape)) for v in model.trainable)
    record_params = (
        cfg.record_update_losses
        and lin is not None
        and P * S * cfg.max_epochs <= UPDATE_PARAMS_LIMIT
    )
    loop = step.build_step_loop(
        model,
        opt,
        sched,
        layout,
        x=x,
        y=y,
        perm=perm,
        options=step.Options(
            measure_noise=measure_noise,
            quadratic_loss=quad,
            track_target=cfg.target_loss is not None,
            one_per_call=K == 1,
            record_updates=cfg.record_update_losses,
            record_params=record_params,
            epoch_rule=(cfg.stopping_loss, cfg.relative_tolerance) if epoch_loop else None,
        ),
    )
    # evaluation batch: bounded activation memory
    chunk = 256 if cfg.model in ("cnn", "custom") else 1024
    # Linear models: the exact quadratic form, eagerly (nothing to trace); others: compiled.
    compiled_loss = None if quad else step.build_full_loss(model, layout, x, y, chunk)
    full_loss: Callable[[], tf.Tensor] = quad or compiled_loss  # type: ignore[assignment]
    accuracy = (
        step.build_accuracy(
            model, layout, tf.constant(ds.x_test, tf.float32), tf.constant(ds.y_test, labels)
        )
        if ds.x_test is not None and ds.y_test is not None
        else None
    )
    diag = _diagnose(cfg, ds, sched, S) if lin is not None else None
    return _Built(
        ds, model, opt, layout, sched, perm, x, y, K, loop, compiled_loss, full_loss, accuracy,
        lin, diag, P if record_params else 0, epoch_loop, P,
        (1 + P if record_params else 1) if cfg.record_update_losses else 0,
    )  # fmt: skip


def _diagnose(
    cfg: TrialConfig, ds: datasets.Dataset, sched: schedule.Schedule, steps_per_epoch: int
) -> linear.Diagnostics:
    """The linear model's closed forms: optimum, Hessian spectrum, stability, warnings."""
    return linear.diagnose(
        ds.x,
        ds.y,
        rate=sched.target,
        steps_per_epoch=steps_per_epoch,
        tolerance=cfg.relative_tolerance,
        plain_gradient_descent=cfg.optimizer == "sgd" and cfg.warmup_epochs == 0,
    )


def _trace(b: _Built) -> float:
    """Trace the compiled functions now, so that graph building is reported as compileSeconds
    and not mixed into the first epoch's training time; returns those seconds."""
    t_compile = time.perf_counter()
    scalar = tf.TensorSpec([], tf.int64), tf.TensorSpec([], tf.int64)
    losses = [tf.TensorSpec([], tf.float64)] * (3 if b.epoch_loop else 2)
    b.loop.get_concrete_function(*scalar, *losses)
    if b.compiled_loss is not None:
        b.compiled_loss.get_concrete_function()
    return time.perf_counter() - t_compile


def _train(
    cfg: TrialConfig,
    b: _Built,
    emitter: Emitter,
    stop_requested: Callable[[], bool],
    metrics: TrialMetrics | None,
) -> _Run:
    """Epochs until a stopping rule applies; an `epoch` event at each epoch end."""
    loss0 = float(b.full_loss())
    curves: dict[str, list[Any]] = {
        "epochLoss": [],
        "updateLoss": [],
        "params": [],
        "gradientNoiseScale": [],
        "gradientNoiseScaleStderr": [],
        "learningRate": [],
    }
    if b.accuracy is not None:
        curves["testAccuracy"] = []
    if cfg.record_update_losses:
        curves["updateLosses"] = []  # every update's loss: the lab's loss-vs-update plot
    if b.recorded_params:
        curves["updateParams"] = []  # every update's parameters: the lab's SGD path
    run = _Run(loss0, Clock(cfg.throughput_skip_steps), curves, t_train=0.0, loss=loss0)
    # A window in epochs (data seen), not in steps: B_simple grows as the loss falls, so a window
    # of fixed steps would lag by many epochs at large batches and few at small ones, and the
    # values at the target would not be comparable across the sweep.
    run.noise = NoiseAccumulator(window=cfg.noise_window_epochs * b.layout.steps_per_epoch)
    run.noise_unmeasured = _unmeasured(cfg, b)
    # Per-call host work stays small: these never change during a trial.
    bounds = (
        tf.constant(stopping.divergence_limit(cfg, loss0), tf.float64),
        tf.constant(cfg.target_loss or 0.0, tf.float64),
    )
    previous = loss0 if cfg.stopping_loss == "full" else None
    sinks = _Sinks(emitter, metrics, stop_requested)
    run.t_train = time.perf_counter()
    while run.stop is None:
        if b.epoch_loop:
            previous = _run_epochs(cfg, b, run, bounds, previous, sinks)
            continue
        run.epoch += 1
        t_epoch = time.perf_counter()
        if cfg.shuffle:
            _shuffle(cfg, b, run.epoch)
        epoch = _run_epoch(cfg, b, run, bounds, sinks)
        now = time.perf_counter()
        previous = _close_epoch(cfg, b, run, epoch, (now - t_epoch, now), previous, sinks)
    return run


@dataclass(frozen=True)
class _Sinks:
    """Where a trial's epochs go, and whether it is asked to stop."""

    emitter: Emitter
    metrics: TrialMetrics | None
    stop_requested: Callable[[], bool]


def _shuffle(cfg: TrialConfig, b: _Built, epoch: int) -> None:
    """Same permutation on every rank: drawn from the trial seed and the epoch number."""
    b.perm.assign(np.random.default_rng([cfg.seed, epoch]).permutation(b.ds.size))


def _close_epoch(  # noqa: PLR0917 - the end of one epoch of _train, its state passed explicitly
    cfg: TrialConfig,
    b: _Built,
    run: _Run,
    epoch: _Epoch,
    timing: tuple[float, float],
    previous: float | None,
    sinks: _Sinks,
    theta: linear.F64 | None = None,
) -> float | None:
    """The epoch's event and the stopping rules (`timing`: its seconds and perf_counter at its
    end; `theta`: the linear model's parameters then); the rule's loss for the next epoch."""
    update_loss = _end_epoch(b, run, epoch, timing, sinks, theta=theta)
    end = stopping.EpochEnd(
        epoch=run.epoch,
        loss=run.loss,
        update_loss=update_loss,
        previous=previous,
        initial_loss=run.loss0,
        step_diverged=epoch.diverged,
        interrupted=run.interrupted,
    )
    run.stop = stopping.decide(cfg, end)
    if run.stop is not None and run.stop.target_reached:
        run.to_target = {
            "stepsToTarget": epoch.target_hit if epoch.target_hit is not None else run.steps,
            "epochsToTarget": run.epoch,
            "timeToTargetSeconds": timing[1] - run.t_train,
        }
        run.noise_at_target = _noise_summary(run)
    return stopping.rule_loss(cfg, run.loss, update_loss)


def _run_epochs(  # noqa: PLR0917 - epochs of _train, its state passed explicitly
    cfg: TrialConfig,
    b: _Built,
    run: _Run,
    bounds: tuple[tf.Tensor, tf.Tensor],
    previous: float | None,
    sinks: _Sinks,
) -> float | None:
    """Linear models: one call of the epoch loop, then each of its epochs closed as one call
    per epoch would be (the same sums, events and rules); the rule's loss for the next epoch.

    The first call runs one epoch (the warm-up, apart in the step times), later ones as many as
    `_epochs_per_call` allows. An epoch's seconds are its share of the call's.
    """
    S = b.layout.steps_per_epoch
    count = min(_epochs_per_call(cfg, b, run), cfg.max_epochs - run.epoch)
    if cfg.shuffle:
        _shuffle(cfg, b, run.epoch + 1)
    t0 = time.perf_counter()
    prev = tf.constant(np.nan if previous is None else previous, tf.float64)
    vector = b.loop(tf.constant(run.steps, tf.int64), tf.constant(count, tf.int64), *bounds, prev)
    rows = step.decode_epochs(vector.numpy(), count, S, b.params, b.recorded)
    dt = time.perf_counter() - t0
    run.calls += 1
    run.pace = (len(rows), dt)
    run.clock.add(
        dt,
        sum(o.done for o, _ in rows),
        b.layout.batch_sizes(run.steps, sum(o.done for o, _ in rows)),
    )
    interrupted = _agreed_stop(sinks.stop_requested, b.layout.size, run.calls)
    for j, (out, theta) in enumerate(rows):
        if run.stop is not None:
            raise RuntimeError(
                f"the epoch loop trained past epoch {run.epoch}, where a stopping rule applies "
                f"({run.stop.reason}); the graph's rules and stopping.decide disagree"
            )
        run.epoch += 1
        epoch = _Epoch()
        share = dt / len(rows)
        samples = b.layout.batch_sizes(run.steps, out.done)
        if sinks.metrics:
            sinks.metrics.on_steps(out.done, samples, share)
        _add_call(cfg, b, run, epoch, out)
        run.interrupted = interrupted and j == len(rows) - 1
        timing = (share, t0 + share * (j + 1))
        previous = _close_epoch(cfg, b, run, epoch, timing, previous, sinks, theta)
    return previous


def _epochs_per_call(cfg: TrialConfig, b: _Built, run: _Run) -> int:
    """Epochs for the next call of the epoch loop. One on several processes (every rank must
    make the same calls, and a time-based count would differ between them) and with shuffling
    (a new order per epoch); else what the last call's pace fits in EPOCH_CALL_SECONDS."""
    if b.layout.size > 1 or cfg.shuffle or run.pace is None:
        return 1
    epochs, seconds = run.pace
    fits = int(EPOCH_CALL_SECONDS * epochs / seconds) if seconds > 0 else 8 * epochs
    return max(1, min(fits, 8 * epochs, EPOCH_CALL_STEPS // b.layout.steps_per_epoch))


def _add_call(cfg: TrialConfig, b: _Built, run: _Run, epoch: _Epoch, out: step.CallOutput) -> None:
    """Fold one call's (or one epoch row's) output into the run and the epoch."""
    run.steps += out.done
    epoch.update_loss_sum += out.loss_sum
    if cfg.record_update_losses:
        run.curves["updateLosses"].extend(float(v) for v in out.update_losses)
    if b.recorded_params:
        run.curves["updateParams"].extend(row.tolist() for row in out.update_params)
    epoch.updates += out.done
    run.noise.add(out.g2_sum, out.tr_sum, out.noise_count, out.g2_sq, out.tr_sq, out.g2_tr)
    if out.target_hit is not None and epoch.target_hit is None:
        epoch.target_hit = out.target_hit
    epoch.last = out
    epoch.diverged = epoch.diverged or out.diverged


def _run_epoch(
    cfg: TrialConfig,
    b: _Built,
    run: _Run,
    bounds: tuple[tf.Tensor, tf.Tensor],
    sinks: _Sinks,
) -> _Epoch:
    """The epoch's steps, K per call, until the epoch ends, a step diverges or SIGTERM."""
    S, K = b.layout.steps_per_epoch, b.steps_per_call
    samples_per_call = K * cfg.batch_size
    epoch = _Epoch()
    pos = 0
    while pos < S:
        k = min(K, S - pos)
        t0 = time.perf_counter()
        vector = b.loop(tf.constant(run.steps, tf.int64), tf.constant(k, tf.int64), *bounds)
        out = step.CallOutput.decode(vector.numpy(), b.recorded_params)
        dt = time.perf_counter() - t0
        done = out.done
        whole = done == K and (pos + K < S or b.ds.size % cfg.batch_size == 0)  # no short batch
        samples = samples_per_call if whole else b.layout.batch_sizes(run.steps, done)
        run.clock.add(dt, done, samples)
        if sinks.metrics:
            sinks.metrics.on_steps(done, samples, dt)
        _add_call(cfg, b, run, epoch, out)
        pos += k
        run.calls += 1
        if out.diverged:
            break
        if _agreed_stop(sinks.stop_requested, b.layout.size, run.calls):
            run.interrupted = True
            break
    return epoch


def _end_epoch(
    b: _Built,
    run: _Run,
    epoch: _Epoch,
    timing: tuple[float, float],
    sinks: _Sinks,
    *,
    theta: linear.F64 | None,
) -> float:
    """Full loss, curves, the `epoch` event and metrics at an epoch end; the mean update loss."""
    assert epoch.last is not None  # every epoch has at least one step
    run.loss = epoch.last.full_loss
    if np.isnan(run.loss):  # not computed inside the step loop (models other than linear)
        run.loss = float(b.full_loss())
    updates = epoch.updates
    update_loss = epoch.update_loss_sum / updates if updates else float("nan")
    params = b.model.summary() if theta is None else models.Linear.summary_of(theta)
    acc = float(b.accuracy()) if b.accuracy is not None else None
    lr_now = b.sched.rate_at(max(run.steps - 1, 0))
    noise = _noise_summary(run)
    gns = noise["gradientNoiseScale"]
    run.curves["gradientNoiseScaleStderr"].append(noise["gradientNoiseScaleStderr"])
    for key, val in (
        ("epochLoss", run.loss),
        ("updateLoss", update_loss),
        ("params", params),
        ("gradientNoiseScale", gns),
        ("learningRate", lr_now),
    ):
        run.curves[key].append(val)
    if acc is not None:
        run.curves["testAccuracy"].append(acc)
    seconds, now = timing
    sinks.emitter.emit(
        "epoch",
        epoch=run.epoch,
        steps=run.steps,
        loss=run.loss,
        updateLoss=update_loss,
        params=params,
        distanceToOptimum=b.distance(theta),
        seconds=seconds,
        trainingSeconds=now - run.t_train,
        samplesPerSecond=b.layout.batch_sizes(run.steps - updates, updates) / seconds,
        learningRate=lr_now,
        **noise,
        testAccuracy=acc,
    )
    if sinks.metrics:
        sinks.metrics.on_epoch(run.epoch, run.loss, update_loss, gns, lr_now)
    return update_loss


def _unmeasured(cfg: TrialConfig, b: _Built) -> str | None:
    """Why this trial does not estimate B_simple at all (None when it does)."""
    if not cfg.gradient_noise_scale:
        return "not measured: --no-gradient-noise-scale"
    if b.layout.size == 1 and b.layout.micro < 2:
        return "not measured: a global batch of 1 on one process has no two batch sizes to compare"
    return None


def _noise_summary(run: _Run) -> dict[str, Any]:
    """B_simple so far, its standard error, and why it is null when it is."""
    summary = run.noise.summary()
    if run.noise_unmeasured is not None:
        summary["gradientNoiseScaleReason"] = run.noise_unmeasured
    return summary


def _stop(run: _Run) -> stopping.Stop:
    assert run.stop is not None  # _train returns only once a rule applied
    return run.stop


def _loss_surface(cfg: TrialConfig, b: _Built) -> dict[str, Any] | None:
    """Linear model on 1-D data with --loss-surface-points K: the loss on a K×K (w, b) grid."""
    if b.lin is None or cfg.loss_surface_points <= 0 or b.ds.x.shape[1] != 1:
        return None
    wg, bg = linear.surface_grid(cfg.data_w, cfg.data_b, cfg.loss_surface_points)
    return {
        "w": wg.tolist(),
        "b": bg.tolist(),
        "loss": linear.loss_surface(b.ds.x, b.ds.y, wg, bg).tolist(),
    }


def _result(cfg: TrialConfig, b: _Built, run: _Run, warnings: list[str]) -> dict[str, Any]:
    """The `result` event's fields but the timings (the trial contract's result)."""
    # B_simple grows as the loss falls (McCandlish et al. §3); the smoothed value at the end is
    # the one that applies to further training, the value at the target the one for
    # time-to-target (the predicted critical batch size).
    noise = _noise_summary(run)
    at_target = run.noise_at_target or noise
    curves = run.curves
    stop = _stop(run)
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
        "seconds": None,
        "compileSeconds": None,
        "trainingSeconds": None,
        "config": cfg.as_dict(),
        "curves": curves,
        "warnings": warnings,
        "interrupted": run.interrupted,
    }


def _measure_split(b: _Built, clock: Clock) -> dict[str, float]:
    """Build the compute-only twin of the step loop and split the step time with it."""
    S, K = b.layout.steps_per_epoch, b.steps_per_call
    probe = step.build_step_loop(
        b.model,
        b.opt,
        b.sched,
        b.layout,
        x=b.x,
        y=b.y,
        perm=b.perm,
        options=step.Options(one_per_call=min(S, K) == 1, reduce=False),
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


def _agreed_stop(requested: Callable[[], bool], size: int, calls: int) -> bool:
    """Whether to stop now; with N > 1 all ranks decide together every STOP_CHECK_CALLS calls
    (`calls` = 0: now; the epoch loop's calls are few and long)."""
    if size == 1:
        return requested()
    if calls % STOP_CHECK_CALLS:
        return False
    # Horovod: a SIGTERM may reach the ranks at different times; a MAX-allreduce makes every rank
    # stop after the same call, so none is left waiting in a collective.
    hvd = world.hvd()
    flag = hvd.allreduce(tf.constant(1.0 if requested() else 0.0), op=hvd.Max)
    return bool(flag.numpy() > 0)
