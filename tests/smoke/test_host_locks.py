"""What one machine holds once at a time (the real node's fixed address, bridge and cgroups;
Kueue's /etc/kueue) is taken in turns: a second holder waits for the first's lock (two pytest
sessions, hack/test.sh's two pytest processes, or the suite beside a cluster started by hand),
and gives up with the lock's path after its wait."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.harness.controlplane import REPO
from tests.harness.locks import hold, release

pytestmark = pytest.mark.unit

HOLD = """
import sys, time
from pathlib import Path
from tests.harness.locks import hold
fd = hold(Path(sys.argv[1]), 0, "the holder", "kill it")
print("held", flush=True)
time.sleep(30)
"""


def test_a_second_holder_waits_for_the_first_and_names_the_lock_when_it_gives_up(
    tmp_path: Path,
) -> None:
    lock = tmp_path / "node.lock"
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(lock)], cwd=REPO, stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(TimeoutError, match=str(lock)):
            hold(lock, 1, "the holder", "kill it")
    finally:
        holder.kill()
        holder.wait()
    fd = hold(lock, 5, "the holder", "kill it")  # the holder is gone: its lock went with it
    try:
        assert lock.read_text().strip() == str(os.getpid())
    finally:
        release(fd)
