"""What `--trial-list` saves: the fixed cost per trial of the local executor, with and without it.

Runs the same K tiny lab1 trials (1 process, 2 epochs each, so training time is negligible) twice
with the real trainer: once as K trainer processes (`scalelab run --separate-processes`) and once
as one process with `--trial-list` (the default). Prints wall time per trial both ways, the
start-up the executor measured (launch → first `start` event), and the saving.

    .venv/bin/python bench/local_startup.py [--trials 6] [--processes 1]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml


def experiment(trials: int, processes: int) -> dict[str, object]:
    """K grid points of lab1 that each train for two epochs."""
    return {
        "apiVersion": "scalelab.dev/v1alpha1",
        "kind": "ScaleExperiment",
        "metadata": {"name": "bench-startup"},
        "spec": {
            "sweep": {"batchSizes": [100 // (2**i) * processes for i in range(trials)][:trials],
                      "gpus": [processes]},
            "training": {"maxEpochs": 2, "convergence": {"relativeTolerance": 0}},
            "workload": {"datasetSize": 100 * processes},
            "execution": {"maxGPUs": processes},
        },
    }  # fmt: skip


def run(file: Path, out: Path, separate: bool) -> tuple[float, list[float]]:
    """Wall seconds of `scalelab run` and the start-up seconds of each trainer launch."""
    args = [sys.executable, "-m", "scalelab", "run", str(file), "--out", str(out), "--no-report"]
    began = time.monotonic()
    subprocess.run(args + (["--separate-processes"] if separate else []), check=True,
                   capture_output=True)  # fmt: skip
    wall = time.monotonic() - began
    groups = json.loads((out / "results.json").read_text())["groups"]
    return wall, [g["startupSeconds"] for g in groups]


def main() -> None:
    """Measure and print."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=6)
    parser.add_argument("--processes", type=int, default=1)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        file = Path(tmp) / "x.yaml"
        spec = experiment(args.trials, args.processes)
        file.write_text(yaml.safe_dump(spec))
        k = len(spec["spec"]["sweep"]["batchSizes"])  # type: ignore[index]
        sep_wall, sep_start = run(file, Path(tmp) / "separate", separate=True)
        one_wall, one_start = run(file, Path(tmp) / "list", separate=False)
    print(f"{k} trials × {args.processes} process(es), 2 epochs each")
    print(f"one process per trial: {sep_wall:6.2f} s wall, {sep_wall / k:5.2f} s/trial, "
          f"start-up {sum(sep_start) / len(sep_start):.2f} s per launch")  # fmt: skip
    print(f"--trial-list:          {one_wall:6.2f} s wall, {one_wall / k:5.2f} s/trial, "
          f"start-up {one_start[0]:.2f} s once")  # fmt: skip
    print(f"saved: {sep_wall - one_wall:.2f} s = {(sep_wall - one_wall) / (k - 1):.2f} s per "
          f"extra trial ({100 * (1 - one_wall / sep_wall):.0f}% of the wall time)")  # fmt: skip


if __name__ == "__main__":
    main()
