"""What one trial builds before its first step: data on the computing device, the model, its
optimizer (rank 0's state broadcast), the schedule and the compiled calls.

Called by train.py once per trial; the epoch loop (epochs.py) then reads the `Built` it returns.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import tensorflow as tf

from scalelab_trainer import custom, datasets, linear, models, precision, schedule, step, world
from scalelab_trainer.config import TrialConfig
from scalelab_trainer.optimizers import Optimizer
from scalelab_trainer.precision import LossScale
from scalelab_trainer.stream import Stream, streamed_mean

#: Per-update parameters are recorded (--record-update-losses, linear models) while
#: parameters × steps per epoch × max epochs stays within this many numbers.
UPDATE_PARAMS_LIMIT = 200_000


@dataclass(frozen=True)
class Plan:
    """How the step loop is called: its steps per call and what each call records."""

    steps_per_call: int  # K: optimizer steps per call of the step loop
    epoch_loop: bool  # `loop` runs whole epochs with the stopping rules (linear models)
    params: int  # P, the trainable parameters
    recorded_params: int  # P when every update's parameters are recorded, else 0
    recorded: int  # epoch loop: 0, 1 (every update's loss) or 1 + P (and its parameters)


@dataclass(frozen=True)
class Built:
    """Everything one trial builds before its first step: data, model, schedule, compiled calls."""

    ds: datasets.Dataset | None  # the examples in memory (None: streamed)
    model: models.Model
    opt: Optimizer
    layout: step.Layout
    sched: schedule.Schedule
    perm: tf.Variable | None  # the epoch's example order (identity unless shuffling)
    x: tf.Tensor | None
    y: tf.Tensor | None
    plan: Plan
    loop: step.Compiled
    compiled_loss: step.Compiled | None  # models other than linear: the full loss, compiled
    full_loss: Callable[[], tf.Tensor]
    accuracy: Callable[[], tf.Tensor] | None
    lin: models.Linear | None = None
    diag: linear.Diagnostics | None = None
    stream: Stream | None = None  # plugin API 2: the examples read through tf.data
    loss_scale: LossScale | None = None  # float16 mixed precision on a Keras model

    def distance(self, theta: linear.F64 | None = None) -> float | None:
        """|θ − θ*| of the linear model (now, or at `theta`), where the optimum is known."""
        if self.lin is None or self.diag is None:
            return None
        now = self.lin.theta() if theta is None else theta
        return float(np.linalg.norm(now - self.diag.optimum))


@dataclass(frozen=True)
class _Parts:
    """What every trial builds the same way, whether its data is in memory or streamed."""

    model: models.Model
    opt: Optimizer
    layout: step.Layout
    sched: schedule.Schedule
    plan: Plan
    measure_noise: bool
    loss_scale: LossScale | None


def build_trial(cfg: TrialConfig) -> Built:
    """Data (on the computing device, or streamed), the model, its optimizer and the compiled
    calls."""
    rank, size = world.rank(), world.size()
    with precision.keras_policy(cfg.mixed_precision):
        data, model = _data_and_model(cfg)
    if cfg.export_data and rank == 0 and isinstance(data, datasets.Dataset):
        datasets.export(data, cfg.export_data)
    opt = Optimizer(cfg, model.trainable)
    if size > 1:
        # Horovod: every rank starts from rank 0's weights and optimizer state. Horovod's
        # examples broadcast after the first step only because Keras creates optimizer slots
        # lazily; ours exist already, so the first step is already identical everywhere.
        world.hvd().broadcast_variables([*model.state, *opt.variables], root_rank=0)
    measure_noise = cfg.gradient_noise_scale and (size > 1 or cfg.batch_size // size >= 2)
    micro = 2 if measure_noise and size == 1 else 1
    layout = step.Layout(data.size, cfg.batch_size, size, rank, micro)
    sched = _schedule(cfg, layout.steps_per_epoch)
    # float16 needs its loss scaled; the float64 linear model does not compute in it.
    scaled = cfg.mixed_precision == "float16" and not isinstance(model, models.Linear)
    plan = _plan(cfg, layout, model)
    parts = _Parts(model, opt, layout, sched, plan, measure_noise, LossScale() if scaled else None)
    if isinstance(data, Stream):
        return _streamed(cfg, data, parts)
    return _in_memory(cfg, data, parts)


def _in_memory(cfg: TrialConfig, ds: datasets.Dataset, p: _Parts) -> Built:
    """The dataset on the device, gathered by the step loop in the epoch's order."""
    model, layout = p.model, p.layout
    labels = tf.int64 if np.issubdtype(ds.y.dtype, np.integer) else model.dtype  # class labels
    # The data lives on the device that computes (a GPU when one is visible), so no call
    # copies the dataset from host memory.
    device = "/GPU:0" if tf.config.list_logical_devices("GPU") else "/CPU:0"
    with tf.device(device):
        x = tf.identity(tf.constant(ds.x, model.dtype))
        y = tf.identity(tf.constant(ds.y, labels))
    perm = tf.Variable(tf.range(ds.size, dtype=tf.int64), trainable=False)
    lin = model if isinstance(model, models.Linear) else None
    quad = _quadratic(lin, ds.x, ds.y) if lin is not None else None
    options = _options(cfg, p, quadratic_loss=quad)
    loop = step.build_step_loop(model, p.opt, p.sched, layout, x=x, y=y, perm=perm, options=options)
    # Linear models: the exact quadratic form, eagerly (nothing to trace); others: compiled.
    compiled_loss = None if quad else step.build_full_loss(model, layout, x, y, _chunk(cfg))
    full_loss: Callable[[], tf.Tensor] = quad or compiled_loss  # type: ignore[assignment]
    accuracy = (
        step.build_accuracy(
            model, layout, tf.constant(ds.x_test, tf.float32), tf.constant(ds.y_test, labels)
        )
        if ds.x_test is not None and ds.y_test is not None
        else None
    )
    return Built(
        ds=ds, model=model, opt=p.opt, layout=layout, sched=p.sched, perm=perm, x=x, y=y,
        plan=p.plan, loop=loop, compiled_loss=compiled_loss, full_loss=full_loss,
        accuracy=accuracy, lin=lin,
        diag=_diagnose(cfg, ds, p.sched, layout.steps_per_epoch) if lin is not None else None,
        loss_scale=p.loss_scale,
    )  # fmt: skip


def _streamed(cfg: TrialConfig, data: Stream, p: _Parts) -> Built:
    """Plugin API 2: one step per call on this rank's share, fed from tf.data (stream.py); the
    full-dataset loss and the accuracy are streamed passes over the data."""
    model, layout = p.model, p.layout
    options = _options(cfg, p, quadratic_loss=None)
    loop = step.build_fed_step(model, p.opt, p.sched, layout, options)

    def summed_loss(x: tf.Tensor, y: tf.Tensor) -> tf.Tensor:
        return tf.reduce_sum(model.per_example_loss(x, y, training=False))

    mean = streamed_mean(summed_loss, data, layout, _chunk(cfg))
    penalty = model.has_penalty()

    def full_loss() -> tf.Tensor:
        loss = mean()
        return loss + tf.cast(model.penalty(), tf.float64) if penalty else loss

    test = data.test
    accuracy = streamed_mean(model.correct, test, layout, _chunk(cfg)) if test else None
    return Built(
        ds=None, model=model, opt=p.opt, layout=layout, sched=p.sched, perm=None, x=None,
        y=None, plan=p.plan, loop=loop, compiled_loss=None, full_loss=full_loss,
        accuracy=accuracy, stream=data, loss_scale=p.loss_scale,
    )  # fmt: skip


def _chunk(cfg: TrialConfig) -> int:
    """Evaluation batch: bounded activation memory."""
    return 256 if cfg.model in ("cnn", "custom") else 1024


def _data_and_model(cfg: TrialConfig) -> tuple[datasets.Dataset | Stream, models.Model]:
    if cfg.model == "custom":  # a user workload: its data and model, checked on every rank
        return custom.build(cfg)
    ds = datasets.build(cfg)
    return ds, models.build(cfg, ds)


def _schedule(cfg: TrialConfig, steps_per_epoch: int) -> schedule.Schedule:
    return schedule.build(
        base=cfg.learning_rate,
        batch=cfg.batch_size,
        reference=cfg.reference_batch_size,
        rule=cfg.lr_scaling,
        warmup_epochs=cfg.warmup_epochs,
        steps_per_epoch=steps_per_epoch,
    )


def _plan(cfg: TrialConfig, layout: step.Layout, model: models.Model) -> Plan:
    """Steps per call and records: linear models without a --steps-per-call run whole epochs
    per call, with the stopping rules in the graph; others one step per call by default."""
    S = layout.steps_per_epoch
    linear_model = isinstance(model, models.Linear)
    P = sum(int(np.prod(v.shape)) for v in model.trainable)
    record_params = (
        cfg.record_update_losses and linear_model and P * S * cfg.max_epochs <= UPDATE_PARAMS_LIMIT
    )
    return Plan(
        steps_per_call=cfg.steps_per_call or (S if linear_model else 1),
        epoch_loop=linear_model and not cfg.steps_per_call,
        params=P,
        recorded_params=P if record_params else 0,
        recorded=(1 + P if record_params else 1) if cfg.record_update_losses else 0,
    )


def _options(
    cfg: TrialConfig, p: _Parts, *, quadratic_loss: Callable[[], tf.Tensor] | None
) -> step.Options:
    """What the training step loop computes besides the steps."""
    plan = p.plan
    return step.Options(
        measure_noise=p.measure_noise,
        quadratic_loss=quadratic_loss,
        track_target=cfg.target_loss is not None,
        one_per_call=plan.steps_per_call == 1,
        record_updates=cfg.record_update_losses,
        record_params=plan.recorded_params > 0,
        epoch_rule=(cfg.stopping_loss, cfg.relative_tolerance) if plan.epoch_loop else None,
        loss_scale=p.loss_scale,
        jit_compile=cfg.jit_compile,
    )


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


def trace(b: Built) -> float:
    """Trace the compiled functions now, so that graph building is reported as compileSeconds
    and not mixed into the first epoch's training time; returns those seconds."""
    t_compile = time.perf_counter()
    scalar = tf.TensorSpec([], tf.int64), tf.TensorSpec([], tf.int64)
    losses = [tf.TensorSpec([], tf.float64)] * (3 if b.plan.epoch_loop else 2)
    if b.stream is not None:  # ... and this rank's share of a step's examples
        x, y = b.stream.x_spec, b.stream.y_spec
        losses += [
            tf.TensorSpec([None, *x.shape], x.dtype),
            tf.TensorSpec([None, *y.shape], y.dtype),
        ]
    b.loop.get_concrete_function(*scalar, *losses)
    if b.compiled_loss is not None:
        b.compiled_loss.get_concrete_function()
    return time.perf_counter() - t_compile
