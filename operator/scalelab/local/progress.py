"""What the local executor reports while it runs, and to whom: a `Progress` the caller provides.

The executor calls `trial_started`, `epoch`, `trial_finished` and `note`; it never prints. The CLI
passes a display (scalelab/cli/progress.py: a live table or plain lines); without one a run is
quiet (`Quiet`), as in tests and library use.
"""

from __future__ import annotations

from typing import Any, Protocol

from scalelab.results.model import TrialRecord


class Progress(Protocol):
    """What the executor reports while it runs."""

    def __enter__(self) -> Progress: ...
    def __exit__(self, *exc: object) -> None: ...
    def trial_started(self, record: TrialRecord) -> None: ...
    def epoch(self, record: TrialRecord, event: dict[str, Any]) -> None: ...
    def trial_finished(self, record: TrialRecord) -> None: ...
    def note(self, text: str) -> None: ...


class Quiet:
    """Reports nothing."""

    def __enter__(self) -> Quiet:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def trial_started(self, record: TrialRecord) -> None:
        return None

    def epoch(self, record: TrialRecord, event: dict[str, Any]) -> None:
        return None

    def trial_finished(self, record: TrialRecord) -> None:
        return None

    def note(self, text: str) -> None:
        return None
