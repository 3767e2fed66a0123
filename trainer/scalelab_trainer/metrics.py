"""Out channel 3 of the trial contract: Prometheus metrics, served by every rank.

One `scalelab_trainer_` prefix, base units, `_total` counters, an `_info` with the config. Labels
`experiment`, `trial`, `batch_size`, `gpus`, `rank` (bounded: no uids). The registry is injected;
the HTTP server is started by __main__.py, never at import. Updated by train.py.
"""

from __future__ import annotations

import dataclasses

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info

from scalelab_trainer.config import TrialConfig

LABELS = ("experiment", "trial", "batch_size", "gpus", "rank")
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

    def for_trial(self, cfg: TrialConfig, processes: int, rank: int) -> TrialMetrics:
        """The series of one trial on this rank (call once per trial)."""
        return TrialMetrics(self, cfg, processes, rank)


class TrialMetrics:
    """The labelled series of one trial on one rank."""

    def __init__(self, m: Metrics, cfg: TrialConfig, processes: int, rank: int) -> None:
        self.processes = processes
        labels = {
            "experiment": cfg.experiment,
            "trial": cfg.trial,
            "batch_size": str(cfg.batch_size),
            "gpus": str(processes),
            "rank": str(rank),
        }
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
