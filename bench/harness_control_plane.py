"""Benchmark: how long the real control plane takes to start and how much memory it holds.

Run: .venv/bin/python bench/harness_control_plane.py [--runs 3]
Prints per-run timings (certificates, apiserver /readyz, total) and each component's RSS after a
short settle, then medians. Not a test: figures depend on this machine's load.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.harness.controlplane import start_control_plane


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--settle-seconds", type=float, default=10.0)
    args = ap.parse_args()
    ready, total, rss_total = [], [], []
    for i in range(args.runs):
        cp = start_control_plane()
        try:
            time.sleep(args.settle_seconds)
            rss = cp.memory_rss_mib()
            ready.append(cp.timings["apiserver_ready_seconds"])
            total.append(cp.timings["total_start_seconds"])
            rss_total.append(sum(rss.values()))
            parts = ", ".join(f"{k} {v:.0f}" for k, v in sorted(rss.items()))
            print(
                f"run {i + 1}: certificates {cp.timings['certificates_seconds']:.1f} s, "
                f"apiserver ready {ready[-1]:.1f} s, total {total[-1]:.1f} s; RSS MiB: {parts}"
            )
        finally:
            cp.stop()
            shutil.rmtree(cp.workdir, ignore_errors=True)
    print(
        f"median over {args.runs}: apiserver ready {statistics.median(ready):.1f} s, "
        f"start total {statistics.median(total):.1f} s, "
        f"RSS total {statistics.median(rss_total):.0f} MiB"
    )


if __name__ == "__main__":
    main()
