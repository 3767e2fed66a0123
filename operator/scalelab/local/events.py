"""Reading the trainer's JSON-lines events (docs/trial-contract.md) from its stdout.

horovodrun prefixes every rank's output (`[0]<stdout>:`); the prefix is stripped. Lines that
are not events (a library printing to stdout) are returned as None and logged by the caller.
"""

from __future__ import annotations

import json
import re
from typing import Any

SCHEMA = "scalelab.trainer/v1"
#: The trainer's event kinds; `progress` comes inside a long epoch (every --progress-seconds).
EVENTS = frozenset({"start", "epoch", "progress", "result", "error"})
_PREFIX = re.compile(r"^(?:\[[0-9,]+\](?:<std(?:out|err)>)?:?)?\s*")


def parse_event(line: str) -> dict[str, Any] | None:
    """The event on one stdout line, or None when the line is not a trainer event."""
    text = _PREFIX.sub("", line.strip(), count=1)
    if not text.startswith("{"):
        return None
    try:
        event = json.loads(text)
    except json.JSONDecodeError:
        return None
    if not isinstance(event, dict) or event.get("schema") != SCHEMA:
        return None
    if event.get("event") not in EVENTS or not isinstance(event.get("trial"), str):
        return None
    return event
