"""Out channel 1 of the trial contract: JSON-lines events on stdout, written by rank 0 only.

Every line is one object with `schema`, `event`, `time`, `experiment`, `trial`. Non-finite floats
(a diverged loss) are written as null, because JSON has no NaN or Infinity. Nothing else may
write to stdout; logs go to stderr. Called by train.py and __main__.py.
"""

from __future__ import annotations

import json
import math
import sys
import time
from collections.abc import Callable
from typing import Any, TextIO

from scalelab_trainer.config import SCHEMA


def finite(value: Any) -> Any:
    """`value` with every non-finite float replaced by None, recursively."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite(v) for v in value]
    return value


class Emitter:
    """Writes events for one trial; a no-op on ranks other than 0."""

    def __init__(
        self,
        experiment: str,
        trial: str,
        rank: int,
        out: TextIO | None = None,
        listeners: list[Callable[[dict[str, Any]], None]] | None = None,
    ) -> None:
        self.experiment, self.trial, self.rank = experiment, trial, rank
        self.out = out or sys.stdout
        self.listeners = listeners or []

    def emit(self, event: str, **fields: Any) -> dict[str, Any]:
        """Write one event line (rank 0) and hand it to the listeners; return it."""
        record: dict[str, Any] = {
            "schema": SCHEMA,
            "event": event,
            "time": time.time(),
            "experiment": self.experiment,
            "trial": self.trial,
            **fields,
        }
        try:  # fast path: nothing non-finite (walking a 200×200 surface costs milliseconds)
            line = json.dumps(record, separators=(",", ":"), allow_nan=False)
        except ValueError:
            record = finite(record)
            line = json.dumps(record, separators=(",", ":"))
        if self.rank == 0:
            self.out.write(line + "\n")
            self.out.flush()
            for listener in self.listeners:
                listener(record)
        return record
