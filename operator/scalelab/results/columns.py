"""The one column spec of a results table: results.csv, report.html's table and the live table.

Each column names a `TrialRecord` field once; every table takes the columns it shows in this
order, so a new measurement is added here and appears in all three. The CSV header is the field's
camelCase name (the results.json key); the report and the live table show `label`. A column of
the learning-rate axis (`axis`) is in results.csv and report.html only when the sweep has
learningRates (`shown`), so a sweep without one writes the tables it always did; the input-time
columns (`streamed`) are in report.html only when a trial streamed its input (plugin API 2), the
precision and XLA columns (`compute`) only when a trial set mixedPrecision or jitCompile, and the
queue wait (`queued`) only when a trial waited for quota (a cluster's queue; `scalelab run` has
none), and the GPU time of all runs (`spent`) only when a trial recorded it (a cluster's trials).
"""

from __future__ import annotations

from dataclasses import dataclass

from pydantic.alias_generators import to_camel


@dataclass(frozen=True)
class Column:
    """One column: the record field it shows, its label, and which tables show it."""

    field: str  # TrialRecord attribute
    label: str  # header in report.html and the live table; {kind} = strong | weak
    csv: bool = True  # in results.csv
    html: bool = True  # in report.html's results table
    live: bool = False  # in `scalelab run`'s live table
    text: bool = False  # left-aligned text rather than a number
    axis: bool = False  # only with a sweep.learningRates axis
    streamed: bool = False  # in report.html only when a trial measured its input time
    compute: bool = False  # in report.html only when a trial set mixedPrecision or jitCompile
    queued: bool = False  # in report.html only when a trial waited for quota
    spent: bool = False  # in report.html only when a trial recorded every run's device-seconds

    @property
    def key(self) -> str:
        """The camelCase name: results.json key and results.csv header."""
        return to_camel(self.field)


COLUMNS: tuple[Column, ...] = (
    Column("name", "trial", live=True, text=True),
    Column("batch_size", "batch", live=True),
    Column("gpus", "GPUs", live=True),
    Column("base_learning_rate", "base lr", axis=True),
    Column("repeat", "rep"),
    Column("seed", "seed", html=False),
    Column("learning_rate", "learning rate", html=False),
    Column("phase", "phase", live=True, text=True),
    Column("reason", "reason", live=True, text=True),
    Column("epochs", "epochs", live=True),
    Column("steps", "steps"),
    Column("final_loss", "final loss", live=True),
    Column("samples_per_second", "samples/s", live=True),
    Column("step_seconds", "median step s"),
    Column("scaling_efficiency", "{kind} eff."),
    Column("efficiency_base_gpus", "eff. vs N₀"),
    Column("scaling_efficiency_kind", "efficiency kind", html=False, text=True),
    Column("steps_to_target", "steps→target"),
    Column("epochs_to_target", "epochs→target"),
    Column("modelled_seconds", "modelled time→target s"),
    Column("time_to_target_seconds", "measured time→target s"),
    Column("model_ratio", "measured/modelled"),
    Column("seconds", "training s", html=False),
    Column("wall_seconds", "wall s", html=False),
    Column("gpu_seconds", "GPU-s"),
    Column("device_seconds", "GPU-s incl. preempted runs", spent=True),
    Column("queue_seconds", "queue wait s", queued=True),
    Column("gradient_noise_scale", "B_simple"),
    Column("gradient_noise_scale_stderr", "B_simple SE"),
    Column("critical_batch_size", "B_crit", html=False),
    Column("dataset_size", "examples", html=False),
    Column("input_wait_fraction", "input wait", streamed=True),
    Column("input_bound", "input-bound", text=True, streamed=True),
    Column("precision", "precision", csv=False, text=True, compute=True),
    Column("jit_compile", "XLA", csv=False, text=True, compute=True),
    Column("params", "params", csv=False, text=True),
    Column("optimum", "optimum", csv=False, text=True),
)


def shown(columns: tuple[Column, ...], learning_rates: bool) -> tuple[Column, ...]:
    """`columns` less those of the learning-rate axis when the sweep has none."""
    return columns if learning_rates else tuple(c for c in columns if not c.axis)


CSV_COLUMNS = tuple(c for c in COLUMNS if c.csv)
HTML_COLUMNS = tuple(c for c in COLUMNS if c.html)
LIVE_COLUMNS = tuple(c for c in COLUMNS if c.live)
