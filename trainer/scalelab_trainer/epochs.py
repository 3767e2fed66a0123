"""The epoch loop of one trial: epochs until a stopping rule applies, an `epoch` event at each end.

An epoch is trained in one of two ways, chosen once per trial (`Plan.epoch_loop`):
- steps per call (`_steps_of_one_epoch`): the epoch's steps, K per call of the step loop, then the
  epoch is closed on the host; with streamed data (plugin API 2) one step per call, each fed this
  rank's share of its global batch from tf.data (stream.Feed), the input's wait timed apart;
- epochs per call (`_epochs_in_one_call`, linear models): one call runs whole epochs with the
  stopping rules inside the graph, and each epoch it returns is closed as if it had been run alone
  (the same sums, events and rules).

Closing an epoch (`_close`) measures the full-dataset loss (comparable across batch sizes), writes
the `epoch` event and metrics, and applies the stopping rules on the host in this order:
divergence, target loss, the lab's relative-change rule, the epoch cap. Inside an epoch of the
first kind a `progress` event is written every --progress-seconds (an epoch may be longer than
the operator's stall threshold). Called by train.py.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import tensorflow as tf

from scalelab_trainer import linear, models, step, stopping, world
from scalelab_trainer.build import Built
from scalelab_trainer.clock import Clock
from scalelab_trainer.config import TrialConfig
from scalelab_trainer.events import Emitter
from scalelab_trainer.metrics import TrialMetrics
from scalelab_trainer.noise import NoiseAccumulator
from scalelab_trainer.stream import INPUT_FIELDS, Feed, InputTime, input_time

STOP_CHECK_CALLS = 50  # with N > 1, ranks agree on a stop request every this many calls
#: Linear models on one process run whole epochs per call, as many as the last call's pace fits
#: in this many seconds (events, metrics and SIGTERM wait for a call), at most 8× the last
#: call's epochs and EPOCH_CALL_STEPS steps.
EPOCH_CALL_SECONDS = 0.25
EPOCH_CALL_STEPS = 10_000


@dataclass(frozen=True)
class Sinks:
    """Where a trial's epochs go, and whether it is asked to stop."""

    emitter: Emitter
    metrics: TrialMetrics | None
    stop_requested: Callable[[], bool]


@dataclass
class Run:
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
    input: InputTime | None = None  # streamed data: the input's wait over all epochs so far
    last_progress: float = 0.0  # perf_counter of the last epoch or progress event

    def noise_summary(self) -> dict[str, Any]:
        """B_simple so far, its standard error, and why it is null when it is."""
        summary = self.noise.summary()
        if self.noise_unmeasured is not None:
            summary["gradientNoiseScaleReason"] = self.noise_unmeasured
        return summary

    def stopped(self) -> stopping.Stop:
        assert self.stop is not None  # train returns only once a rule applied
        return self.stop


@dataclass
class Epoch:
    """What one epoch's calls of the step loop added up to."""

    update_loss_sum: float = 0.0
    updates: int = 0
    diverged: bool = False
    target_hit: int | None = None  # global step at which the target was first reached
    last: step.CallOutput | None = None
    input: InputTime | None = None  # streamed data: the epoch's wait for input and step calls


def train(cfg: TrialConfig, b: Built, sinks: Sinks) -> Run:
    """Epochs until a stopping rule applies; an `epoch` event at each epoch end."""
    return EpochLoop(cfg, b, sinks).train()


class EpochLoop:
    """One trial's epochs: the trial's config and built state, where events go, what it has done
    so far (`run`) and the loss the relative rule compares the next epoch's with (`previous`)."""

    def __init__(self, cfg: TrialConfig, b: Built, sinks: Sinks) -> None:
        self.cfg, self.b, self.sinks = cfg, b, sinks
        loss0 = float(b.full_loss())
        self.run = Run(loss0, Clock(cfg.throughput_skip_steps), _curves(cfg, b), 0.0, loss=loss0)
        # A window in epochs (data seen), not in steps: B_simple grows as the loss falls, so a
        # window of fixed steps would lag by many epochs at large batches and few at small ones,
        # and the values at the target would not be comparable across the sweep.
        self.run.noise = NoiseAccumulator(window=cfg.noise_window_epochs * b.layout.steps_per_epoch)
        self.run.noise_unmeasured = _unmeasured(cfg, b)
        # Per-call host work stays small: these never change during a trial.
        self.bounds = (
            tf.constant(stopping.divergence_limit(cfg, loss0), tf.float64),
            tf.constant(cfg.target_loss or 0.0, tf.float64),
        )
        self.previous = loss0 if cfg.stopping_loss == "full" else None
        self.feed: Feed | None = None
        if b.stream is not None:
            self.run.input = InputTime()
            order = functools.partial(step.epoch_order, b.layout.n, cfg.seed, shuffle=cfg.shuffle)
            self.feed = Feed(b.stream, b.layout, order, (1, cfg.max_epochs))

    def train(self) -> Run:
        run = self.run
        run.t_train = run.last_progress = time.perf_counter()
        while run.stop is None:
            if self.b.plan.epoch_loop:
                self._epochs_in_one_call()
                continue
            run.epoch += 1
            t_epoch = time.perf_counter()
            if self.cfg.shuffle and self.b.stream is None:  # (a feed draws its own order)
                self._shuffle(run.epoch)
            epoch = self._steps_of_one_epoch(t_epoch)
            now = time.perf_counter()
            self._close(epoch, (now - t_epoch, now))
        return run

    def _shuffle(self, epoch: int) -> None:
        """Same permutation on every rank: drawn from the trial seed and the epoch number."""
        assert self.b.perm is not None  # data in memory
        self.b.perm.assign(step.epoch_order(self.b.layout.n, self.cfg.seed, epoch, shuffle=True))

    # --- steps per call ---------------------------------------------------------------------

    def _steps_of_one_epoch(self, t_epoch: float) -> Epoch:
        """The epoch's steps, K per call, until the epoch ends, a step diverges or SIGTERM;
        streamed data: one step per call on the batch the feed hands over."""
        cfg, b, run = self.cfg, self.b, self.run
        S, K = b.layout.steps_per_epoch, b.plan.steps_per_call
        samples_per_call = K * cfg.batch_size
        feed = self.feed
        epoch = Epoch()
        pos = 0
        while pos < S:
            k = min(K, S - pos)
            fed = feed.batch(pos) if feed is not None else ()
            t0 = time.perf_counter()
            vector = b.loop(
                tf.constant(run.steps, tf.int64), tf.constant(k, tf.int64), *self.bounds, *fed
            )
            out = step.CallOutput.decode(vector.numpy(), b.plan.recorded_params)
            dt = time.perf_counter() - t0
            done = out.done
            whole = done == K and (
                pos + K < S or b.layout.n % cfg.batch_size == 0
            )  # no short batch
            samples = samples_per_call if whole else b.layout.batch_sizes(run.steps, done)
            # (a step's time includes the wait for its input: the step loop's pace)
            run.clock.add(dt + (feed.last_wait if feed else 0.0), done, samples)
            if self.sinks.metrics:
                self.sinks.metrics.on_steps(done, samples, dt)
            self._add_call(epoch, out)
            pos += k
            run.calls += 1
            if feed is not None:
                feed.called += dt
            self._progress(epoch, t_epoch, feed)
            if out.diverged:
                break
            if agreed_stop(self.sinks.stop_requested, b.layout.size, run.calls):
                run.interrupted = True
                break
        if feed is not None:
            epoch.input = input_time(*feed.epoch_done(), b.layout.size)
        return epoch

    def _progress(self, epoch: Epoch, t_epoch: float, feed: Feed | None) -> None:
        """A `progress` event when --progress-seconds passed since the last event: the epoch so
        far (rank 0's own input wait; the epoch event gives the largest of every rank's)."""
        run, b, every = self.run, self.b, self.cfg.progress_seconds
        now = time.perf_counter()
        if every <= 0 or now - run.last_progress < every:
            return
        run.last_progress = now
        spent = input_time(feed.waited, feed.called, 1) if feed is not None else None
        samples = b.layout.batch_sizes(run.steps - epoch.updates, epoch.updates)
        self.sinks.emitter.emit(
            "progress",
            epoch=run.epoch,
            epochSteps=epoch.updates,
            stepsPerEpoch=b.layout.steps_per_epoch,
            steps=run.steps,
            updateLoss=epoch.update_loss_sum / epoch.updates if epoch.updates else None,
            samplesPerSecond=samples / (now - t_epoch),
            trainingSeconds=now - run.t_train,
            **_input_fields(spent),
        )

    # --- epochs per call --------------------------------------------------------------------

    def _epochs_in_one_call(self) -> None:
        """Linear models: one call of the epoch loop, then each of its epochs closed as one call
        per epoch would be (the same sums, events and rules).

        The first call runs one epoch (the warm-up, apart in the step times), later ones as many
        as `_epochs_per_call` allows. An epoch's seconds are its share of the call's.
        """
        cfg, b, run = self.cfg, self.b, self.run
        count = min(self._epochs_per_call(), cfg.max_epochs - run.epoch)
        if cfg.shuffle:
            self._shuffle(run.epoch + 1)
        t0 = time.perf_counter()
        prev = tf.constant(np.nan if self.previous is None else self.previous, tf.float64)
        first = tf.constant(run.steps, tf.int64)
        vector = b.loop(first, tf.constant(count, tf.int64), *self.bounds, prev)
        S = b.layout.steps_per_epoch
        rows = step.decode_epochs(vector.numpy(), count, S, b.plan.params, b.plan.recorded)
        dt = time.perf_counter() - t0
        run.calls += 1
        run.pace = (len(rows), dt)
        done = sum(o.done for o, _ in rows)
        run.clock.add(dt, done, b.layout.batch_sizes(run.steps, done))
        interrupted = agreed_stop(self.sinks.stop_requested, b.layout.size, run.calls)
        for j, (out, theta) in enumerate(rows):
            if run.stop is not None:
                raise RuntimeError(
                    f"the epoch loop trained past epoch {run.epoch}, where a stopping rule "
                    f"applies ({run.stop.reason}); the graph's rules and stopping.decide disagree"
                )
            run.epoch += 1
            epoch = Epoch()
            share = dt / len(rows)
            if self.sinks.metrics:
                self.sinks.metrics.on_steps(
                    out.done, b.layout.batch_sizes(run.steps, out.done), share
                )
            self._add_call(epoch, out)
            run.interrupted = interrupted and j == len(rows) - 1
            self._close(epoch, (share, t0 + share * (j + 1)), theta)

    def _epochs_per_call(self) -> int:
        """Epochs for the next call of the epoch loop. One on several processes (every rank must
        make the same calls, and a time-based count would differ between them) and with
        shuffling (a new order per epoch); else what the last call's pace fits in
        EPOCH_CALL_SECONDS."""
        if self.b.layout.size > 1 or self.cfg.shuffle or self.run.pace is None:
            return 1
        epochs, seconds = self.run.pace
        fits = int(EPOCH_CALL_SECONDS * epochs / seconds) if seconds > 0 else 8 * epochs
        return max(1, min(fits, 8 * epochs, EPOCH_CALL_STEPS // self.b.layout.steps_per_epoch))

    # --- one call's output, one epoch's end ---------------------------------------------------

    def _add_call(self, epoch: Epoch, out: step.CallOutput) -> None:
        """Fold one call's (or one epoch row's) output into the run and the epoch."""
        run = self.run
        run.steps += out.done
        epoch.update_loss_sum += out.loss_sum
        if self.cfg.record_update_losses:
            run.curves["updateLosses"].extend(float(v) for v in out.update_losses)
        if self.b.plan.recorded_params:
            run.curves["updateParams"].extend(row.tolist() for row in out.update_params)
        epoch.updates += out.done
        run.noise.add(out.g2_sum, out.tr_sum, out.noise_count, out.g2_sq, out.tr_sq, out.g2_tr)
        if out.target_hit is not None and epoch.target_hit is None:
            epoch.target_hit = out.target_hit
        epoch.last = out
        epoch.diverged = epoch.diverged or out.diverged

    def _close(
        self, epoch: Epoch, timing: tuple[float, float], theta: linear.F64 | None = None
    ) -> None:
        """The epoch's event and the stopping rules (`timing`: its seconds and perf_counter at
        its end; `theta`: the linear model's parameters then); sets the rule's loss for the next
        epoch."""
        run, cfg = self.run, self.cfg
        update_loss = self._measure_and_report(epoch, timing, theta)
        end = stopping.EpochEnd(
            epoch=run.epoch,
            loss=run.loss,
            update_loss=update_loss,
            previous=self.previous,
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
            run.noise_at_target = run.noise_summary()
        self.previous = stopping.rule_loss(cfg, run.loss, update_loss)

    def _measure_and_report(
        self, epoch: Epoch, timing: tuple[float, float], theta: linear.F64 | None
    ) -> float:
        """Full loss, curves, the `epoch` event and metrics at an epoch end; the mean update
        loss."""
        b, run = self.b, self.run
        assert epoch.last is not None  # every epoch has at least one step
        run.loss = epoch.last.full_loss
        if np.isnan(run.loss):  # not computed inside the step loop (models other than linear)
            run.loss = float(b.full_loss())
        updates = epoch.updates
        update_loss = epoch.update_loss_sum / updates if updates else float("nan")
        params = b.model.summary() if theta is None else models.Linear.summary_of(theta)
        acc = float(b.accuracy()) if b.accuracy is not None else None
        lr_now = b.sched.rate_at(max(run.steps - 1, 0))
        noise = run.noise_summary()
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
        self.sinks.emitter.emit(
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
            stepSeconds=run.clock.p50(),
            learningRate=lr_now,
            **noise,
            testAccuracy=acc,
            **_input_fields(epoch.input),
        )
        run.last_progress = time.perf_counter()
        if epoch.input is not None and run.input is not None:
            run.input.add(epoch.input)
        if self.sinks.metrics:
            self.sinks.metrics.on_epoch(run.epoch, run.loss, update_loss, gns, lr_now)
        return update_loss


def _curves(cfg: TrialConfig, b: Built) -> dict[str, list[Any]]:
    """The result's curves, empty: one entry per epoch (and per update where recorded)."""
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
    if b.plan.recorded_params:
        curves["updateParams"] = []  # every update's parameters: the lab's SGD path
    return curves


def _input_fields(spent: InputTime | None) -> dict[str, Any]:
    """The input-time fields of an event or the result: null when the data is in memory."""
    if spent is None:
        return dict.fromkeys(INPUT_FIELDS)
    return spent.fields()


def input_summary(run: Run) -> dict[str, Any]:
    """The result's input-time fields: the sums over the epochs (null with data in memory)."""
    return _input_fields(run.input)


def _unmeasured(cfg: TrialConfig, b: Built) -> str | None:
    """Why this trial does not estimate B_simple at all (None when it does)."""
    if not cfg.gradient_noise_scale:
        return "not measured: --no-gradient-noise-scale"
    if b.layout.size == 1 and b.layout.micro < 2:
        return "not measured: a global batch of 1 on one process has no two batch sizes to compare"
    return None


def agreed_stop(requested: Callable[[], bool], size: int, calls: int) -> bool:
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
