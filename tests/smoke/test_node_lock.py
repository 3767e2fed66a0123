"""One real node per machine: a second `start_cluster` waits for the first node's lock instead of
sharing its fixed address, bridge and cgroups (two pytest sessions, or the suite beside a
cluster started by hand), and gives up with the lock's path after its wait."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.harness import cluster
from tests.harness.controlplane import REPO

pytestmark = pytest.mark.unit

HOLD = """
import sys, time
from pathlib import Path
from tests.harness import cluster
cluster.NODE_LOCK = Path(sys.argv[1])
fd = cluster._node_lock(wait=0)
print("held", flush=True)
time.sleep(30)
"""


def test_a_second_node_waits_for_the_first_and_names_the_lock_when_it_gives_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    lock = tmp_path / "node.lock"
    monkeypatch.setattr(cluster, "NODE_LOCK", lock)
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(lock)], cwd=REPO, stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(TimeoutError, match=str(lock)):
            cluster._node_lock(wait=1)
    finally:
        holder.kill()
        holder.wait()
    fd = cluster._node_lock(wait=5)  # the holder is gone: its lock went with it
    try:
        assert lock.read_text().strip() == str(os.getpid())
    finally:
        cluster._release(fd)
