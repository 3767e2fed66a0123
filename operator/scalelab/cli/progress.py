"""Live progress of `scalelab run`: a rich table on a terminal, plain rate-limited lines otherwise.

Both implement local.progress.Progress; the executor calls `trial_started`, `epoch`,
`trial_finished` and `note` and does not know which display is on. Plain lines stay greppable
in CI logs: one at start, at most one per trial every `interval` seconds, one at the end. With a
sweep.learningRates axis both say each trial's base learning rate (the live table in a column of
its own). Part of the CLI layer: the only place besides cli/__init__.py that prints.
"""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO

from rich.console import Console
from rich.live import Live
from rich.table import Table

from scalelab.api import TrialPhase
from scalelab.local.progress import Progress
from scalelab.results.columns import COLUMNS, Column, shown
from scalelab.results.model import TrialRecord


def _fmt(value: Any, spec: str = ".4g") -> str:
    return "-" if value is None else format(value, spec)


def live_columns(learning_rates: bool) -> tuple[Column, ...]:
    """The live table's columns: results.columns' live ones, and the base learning rate when
    the sweep has the axis (trials of one batch and GPU count differ only by it)."""
    return shown(tuple(c for c in COLUMNS if c.live or c.axis), learning_rates)


def _rate(record: TrialRecord) -> str:
    """The start line's words for a trial of the learningRates axis: ", at base learning rate
    0.1"; empty without the axis."""
    rate = record.base_learning_rate
    return "" if rate is None else f", at base learning rate {rate:g}"


class PlainProgress:
    """One line per start and finish, and per trial at most one epoch line every `interval` s."""

    def __init__(self, max_epochs: int, out: TextIO | None = None, interval: float = 5.0) -> None:
        self.max_epochs = max_epochs
        self.out = out or sys.stdout
        self.interval = interval
        self._last: dict[str, float] = {}

    def __enter__(self) -> PlainProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.out.flush()

    def _print(self, text: str) -> None:
        print(text, file=self.out, flush=True)

    def trial_started(self, record: TrialRecord) -> None:
        self._last[record.name] = time.monotonic()
        self._print(
            f"[{record.name}] started: batch {record.batch_size}, {record.gpus} process(es)"
            f"{_rate(record)}"
        )

    def epoch(self, record: TrialRecord, event: dict[str, Any]) -> None:
        now = time.monotonic()
        if now - self._last.get(record.name, 0.0) < self.interval:
            return
        self._last[record.name] = now
        self._print(
            f"[{record.name}] epoch {event.get('epoch')}/{self.max_epochs} "
            f"loss {_fmt(event.get('loss'))} samples/s {_fmt(event.get('samplesPerSecond'))}"
        )

    def trial_finished(self, record: TrialRecord) -> None:
        reason = f" ({record.reason})" if record.reason else ""
        self._print(
            f"[{record.name}] {record.phase.value}{reason}: epochs {_fmt(record.epochs)} "
            f"loss {_fmt(record.final_loss)} samples/s {_fmt(record.samples_per_second)}"
        )

    def note(self, text: str) -> None:
        self._print(text)


class RichProgress:
    """A live table, one row per trial: phase, epoch, loss, samples/s (and base lr)."""

    def __init__(
        self, records: list[TrialRecord], max_epochs: int, learning_rates: bool = False
    ) -> None:
        self.max_epochs = max_epochs
        self.columns = live_columns(learning_rates)
        self.rows: dict[str, list[str]] = {
            r.name: self._row(r, r.epochs, r.final_loss, r.samples_per_second) for r in records
        }
        self.console = Console()
        self.live = Live(self._table(), console=self.console, refresh_per_second=4)

    def _row(self, r: TrialRecord, epoch: Any, loss: Any, speed: Any) -> list[str]:
        """The live cells of one trial: the record, with the running epoch, loss and speed."""
        live: dict[str, str] = {
            "epochs": f"{_fmt(epoch, 'd') if isinstance(epoch, int) else '-'}/{self.max_epochs}",
            "final_loss": _fmt(loss),
            "samples_per_second": _fmt(speed, ".4g"),
            "reason": r.reason[:60],
            "phase": r.phase.value,
            "base_learning_rate": _fmt(r.base_learning_rate, "g"),
        }
        return [
            live[c.field] if c.field in live else str(getattr(r, c.field)) for c in self.columns
        ]

    def _table(self) -> Table:
        table = Table(title="scalelab run", expand=False)
        for column in self.columns:
            table.add_column(column.label, justify="left" if column.text else "right")
        for row in self.rows.values():
            table.add_row(*row)
        return table

    def __enter__(self) -> RichProgress:
        self.live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.live.update(self._table())
        self.live.__exit__(None, None, None)

    def _refresh(self) -> None:
        self.live.update(self._table())

    def trial_started(self, record: TrialRecord) -> None:
        self.rows[record.name] = self._row(
            record.model_copy(update={"phase": TrialPhase.RUNNING}), 0, None, None
        )
        self._refresh()

    def epoch(self, record: TrialRecord, event: dict[str, Any]) -> None:
        running = record.model_copy(update={"phase": TrialPhase.RUNNING})
        self.rows[record.name] = self._row(
            running, event.get("epoch"), event.get("loss"), event.get("samplesPerSecond")
        )
        self._refresh()

    def trial_finished(self, record: TrialRecord) -> None:
        self.rows[record.name] = self._row(
            record, record.epochs, record.final_loss, record.samples_per_second
        )
        self._refresh()

    def note(self, text: str) -> None:
        self.live.console.print(text)


def make_progress(
    records: list[TrialRecord], max_epochs: int, learning_rates: bool = False
) -> Progress:
    """A rich display when stdout is a terminal, plain lines otherwise; `learning_rates`: the
    sweep has a learningRates axis, so the live table gets a base-lr column."""
    if sys.stdout.isatty():
        return RichProgress(records, max_epochs, learning_rates)
    return PlainProgress(max_epochs)
