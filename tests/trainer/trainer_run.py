"""Runs `python -m scalelab_trainer` as the executors do (1 process, or N under horovodrun) and
parses its JSON-lines events. Used by the trainer tests and benches."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from tests.harness.horovod import horovodrun, quiet_env

MODULE = [sys.executable, "-m", "scalelab_trainer"]


@dataclass
class Run:
    code: int
    events: list[dict[str, Any]]
    stderr: str

    def of(self, kind: str, trial: str | None = None) -> list[dict[str, Any]]:
        return [e for e in self.events if e["event"] == kind and trial in (None, e["trial"])]

    @property
    def result(self) -> dict[str, Any]:
        return self.of("result")[-1]

    @property
    def start(self) -> dict[str, Any]:
        return self.of("start")[0]


def parse_events(stdout: str) -> list[dict[str, Any]]:
    """Event objects from stdout; horovodrun prefixes each line with `[rank]<stdout>:`."""
    events = []
    for line in stdout.splitlines():
        if "{" in line and '"schema"' in line:
            events.append(json.loads(line[line.index("{") :]))
    return events


def run_trainer(
    args: Sequence[str], np: int = 1, timeout: float = 240, env: dict[str, str] | None = None
) -> Run:
    """Run the trainer to completion on `np` processes (`env`: extra variables)."""
    if np == 1:
        r = subprocess.run(
            [*MODULE, *args],
            check=False,
            capture_output=True,
            text=True,
            timeout=timeout,
            env=quiet_env(env),
        )
    else:
        r = horovodrun(np, [*MODULE, *args], timeout=timeout, env=env)
    return Run(r.returncode, parse_events(r.stdout), r.stderr)
