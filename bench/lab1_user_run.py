"""Lab 1 as a user runs it: `scalelab run examples/lab1-gd-vs-sgd.yaml --out NEW_DIR` (trials,
results and the report) against the lab's code run headless (tests/trainer/lab1_tf1.py: GD, SGD
and the 200×200 surface, one Session.run each, in one `python` process), both whole processes.

Runs them back to back, alternating, `--repeats` times; prints each pair's wall and CPU seconds
(user + system of the process and its children: on shared cores the CPU time moves less with
other load than the wall time), the load average before and after each pair, the medians and the
median of the per-pair ratios (lab ÷ scalelab: above 1, scalelab is faster).

    .venv/bin/python bench/lab1_user_run.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")


def timed(command: list[str]) -> tuple[float, float]:
    """Wall and CPU seconds (children's user + system) of one whole process."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    began = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True, env=ENV, cwd=ROOT)
    wall = time.perf_counter() - began
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def load() -> str:
    return "{:.1f} {:.1f} {:.1f}".format(*os.getloadavg())


def main() -> None:
    """Measure and print."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    lab = [sys.executable, str(ROOT / "bench" / "trainer_lab1_vs_tf1.py"), "--worker"]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.repeats):
            out = Path(tmp) / f"run{i}"  # a NEW directory each time: nothing is resumed
            run = [sys.executable, "-m", "scalelab", "run", "examples/lab1-gd-vs-sgd.yaml",
                   "--out", str(out)]  # fmt: skip
            before = load()
            if i % 2 == 0:  # alternate which goes first
                (lab_wall, lab_cpu), (sl_wall, sl_cpu) = timed(lab), timed(run)
            else:
                (sl_wall, sl_cpu), (lab_wall, lab_cpu) = timed(run), timed(lab)
            assert (out / "report.html").is_file(), "scalelab run wrote no report"
            rows.append((lab_wall, lab_cpu, sl_wall, sl_cpu))
            print(
                f"pair {i}: lab {lab_wall:.2f} s wall {lab_cpu:.2f} s cpu | scalelab run "
                f"{sl_wall:.2f} s wall {sl_cpu:.2f} s cpu | ratio wall {lab_wall / sl_wall:.2f}x "
                f"cpu {lab_cpu / sl_cpu:.2f}x | load before {before}, after {load()}",
                flush=True,
            )
    med = [statistics.median(r[k] for r in rows) for k in range(4)]
    print(f"median  lab {med[0]:.2f} s wall {med[1]:.2f} s cpu  scalelab run {med[2]:.2f} s wall "
          f"{med[3]:.2f} s cpu")  # fmt: skip
    print(
        "median of per-pair ratios (lab / scalelab run): wall "
        f"{statistics.median(r[0] / r[2] for r in rows):.2f}x, cpu "
        f"{statistics.median(r[1] / r[3] for r in rows):.2f}x"
    )


if __name__ == "__main__":
    main()
