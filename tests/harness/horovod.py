"""Runs programs under `horovodrun` with real processes over Gloo on this machine's CPU.

Used by the horovod-tier tests. Horovod here is built with both MPI and Gloo, and horovodrun
defaults to MPI when it can, so Gloo is always asked for explicitly. Launched as the local
executor launches it: horovodrun's command line without its start-up probe
(scalelab_trainer/horovodrun.py), which would import TensorFlow once more per launch.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from scalelab.planner import HOROVODRUN_MODULE

#: horovodrun as `scalelab run` starts it (planner.local_command).
HOROVODRUN = [sys.executable, "-m", HOROVODRUN_MODULE]


def quiet_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment for TensorFlow child processes: silent start-up, one thread pool each."""
    env = dict(os.environ)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    env.update(extra or {})
    return env


def horovodrun(
    np: int,
    argv: Sequence[str],
    timeout: float = 300,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run `argv` as `np` Horovod processes over Gloo on localhost and wait for it."""
    cmd = [*HOROVODRUN, "-np", str(np), "--gloo", "-H", f"localhost:{np}", *argv]
    return subprocess.run(
        cmd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=quiet_env(env),
        cwd=cwd,
        check=False,
    )
