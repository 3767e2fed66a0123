"""Out channel 3 of the trial contract: Prometheus metrics, served by every rank.

One `scalelab_trainer_` prefix, base units, `_total` counters, an `_info` with the config. Labels
`experiment`, `trial`, `batch_size`, `gpus`, `rank` (bounded: no uids). The registry is injected;
the HTTP server is started by __main__.py, never at import. Updated by train.py.
"""

from __future__ import annotations

import dataclasses
import threading

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info

from scalelab_trainer.config import TrialConfig

LABELS = ("experiment", "trial", "batch_size", "gpus", "rank")
# How long a finished trial's series stay exported (with --trial-list): two scrape intervals of
# 15 s, so its final values are scraped once, but its flat counters never look like a stalled trial.
FINISHED_SERIES_GRACE_SECONDS = 30.0
# Step times from a tiny linear step on a CPU (~100 µs) to a large CNN step (~10 s).
STEP_BUCKETS = (
    1e-4,
    2.5e-4,
    5e-4,
    1e-3,
    2.5e-3,
    5e-3,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)


class Metrics:
    """The metric families of one process; one `TrialMetrics` child set per trial."""

    def __init__(self, registry: CollectorRegistry) -> None:
        p = "scalelab_trainer_"
        self.samples = Counter(
            p + "samples",
            "Training examples processed by this rank (its "
            "share of each global batch; sum over ranks = global).",
            LABELS,
            registry=registry,
        )
        self.steps = Counter(p + "steps", "Optimizer steps taken.", LABELS, registry=registry)
        self.step_seconds = Histogram(
            p + "step_duration_seconds",
            "Wall time of one optimizer step (per-call mean when several run in one call).",
            LABELS,
            buckets=STEP_BUCKETS,
            registry=registry,
        )
        self.loss = Gauge(
            p + "loss",
            "Training loss: kind=full is the full-dataset loss at the "
            "last epoch end, kind=update the epoch's mean per-update loss.",
            (*LABELS, "kind"),
            registry=registry,
        )
        self.epoch = Gauge(p + "epoch", "Epochs completed.", LABELS, registry=registry)
        self.noise = Gauge(
            p + "gradient_noise_scale",
            "Two-batch estimate of B_simple over the last epoch (McCandlish et al. 2018).",
            LABELS,
            registry=registry,
        )
        self.lr = Gauge(
            p + "learning_rate", "Learning rate of the last step.", LABELS, registry=registry
        )
        self.info = Info(p[:-1], "Configuration of the trial.", LABELS, registry=registry)
        self._lock = threading.Lock()
        # Trials started per label-value tuple: a removal scheduled for a finished trial is
        # skipped when a later trial with the same labels has started meanwhile.
        self._generation: dict[tuple[str, ...], int] = {}

    def for_trial(self, cfg: TrialConfig, processes: int, rank: int) -> TrialMetrics:
        """The series of one trial on this rank (call once per trial)."""
        return TrialMetrics(self, cfg, processes, rank)

    def _started(self, values: tuple[str, ...]) -> int:
        with self._lock:
            self._generation[values] = self._generation.get(values, 0) + 1
            return self._generation[values]

    def _remove(self, values: tuple[str, ...], generation: int) -> None:
        """Drop every series of one trial, unless a newer trial has taken its labels."""
        with self._lock:
            if self._generation.get(values) != generation:
                return
            families: tuple[Counter | Gauge | Histogram | Info, ...] = (
                self.samples,
                self.steps,
                self.step_seconds,
                self.epoch,
                self.noise,
                self.lr,
                self.info,
            )
            for family in families:
                family.remove(*values)
            for kind in ("full", "update"):
                self.loss.remove(*values, kind)


class TrialMetrics:
    """The labelled series of one trial on one rank."""

    def __init__(self, m: Metrics, cfg: TrialConfig, processes: int, rank: int) -> None:
        self.processes = processes
        self._metrics = m
        labels = {
            "experiment": cfg.experiment,
            "trial": cfg.trial,
            "batch_size": str(cfg.batch_size),
            "gpus": str(processes),
            "rank": str(rank),
        }
        self._values = tuple(labels[k] for k in LABELS)
        self._generation = m._started(self._values)
        self.samples = m.samples.labels(**labels)
        self.steps = m.steps.labels(**labels)
        self.step_seconds = m.step_seconds.labels(**labels)
        self.loss_full = m.loss.labels(**labels, kind="full")
        self.loss_update = m.loss.labels(**labels, kind="update")
        self.epoch = m.epoch.labels(**labels)
        self.noise = m.noise.labels(**labels)
        self.lr = m.lr.labels(**labels)
        # Prometheus label names are snake_case: the config's field names, not its camelCase
        # event keys; experiment, trial and batch_size are labels already.
        described = {
            f.name: str(getattr(cfg, f.name))
            for f in dataclasses.fields(cfg)
            if f.name not in labels
        }
        m.info.labels(**labels).info(described)
        for c in (self.samples, self.steps):
            c.inc(0)

    def finish(self, grace_seconds: float = FINISHED_SERIES_GRACE_SECONDS) -> None:
        """The trial ended: remove its series after `grace_seconds` (0: now), on a daemon timer."""
        if grace_seconds <= 0:
            self._metrics._remove(self._values, self._generation)
            return
        timer = threading.Timer(
            grace_seconds, self._metrics._remove, (self._values, self._generation)
        )
        timer.daemon = True  # never keeps the process alive after its last trial
        timer.start()

    def on_steps(self, steps: int, samples: int, seconds: float) -> None:
        """After one call of `steps` steps covering `samples` global examples."""
        if steps <= 0:
            return
        self.steps.inc(steps)
        self.samples.inc(samples / self.processes)
        for _ in range(min(steps, 1000)):
            self.step_seconds.observe(seconds / steps)

    def on_epoch(
        self, epoch: int, full: float, update: float, noise: float | None, lr: float
    ) -> None:
        """After each epoch's full-dataset evaluation."""
        self.epoch.set(epoch)
        self.loss_full.set(full)
        self.loss_update.set(update)
        if noise is not None:
            self.noise.set(noise)
        self.lr.set(lr)
