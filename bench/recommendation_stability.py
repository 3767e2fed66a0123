"""Does the recommendation hold when the same sweep runs again, on a quiet or a busy machine?

Two small workloads (least squares, and an MLP on digits), each a grid of batch sizes × 1–2
processes on this machine's CPU, run `--runs` times (default 5) with the real trainer; the last
`--busy` runs (default 2) beside CPU burners (one busy-looping process per core). Per run it
prints the recommended configuration, the indistinguishable set (spec.objective's tolerance, and
the bootstrap where repeats give one), what the old rule (the smallest measured wall-clock
time-to-target) would have picked, the load average and the wall time; then per workload how
many runs gave the same pick, by either rule.

    nice -n 5 .venv/bin/python bench/recommendation_stability.py [--runs 5] [--busy 2]
        [--workload linear|mlp] [--repeats 1] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from statistics import mean
from typing import Any

import yaml

WORKLOADS: dict[str, dict[str, Any]] = {
    "linear": {
        "workload": {"model": "linear", "dataset": "regression", "datasetSize": 4096, "seed": 11},
        "sweep": {"batchSizes": [16, 64, 256], "gpus": [1, 2]},
        "training": {"optimizer": "sgd", "learningRate": 0.004, "referenceBatchSize": 8,
                     "lrScaling": "linear", "warmupEpochs": 1, "maxEpochs": 60,
                     "convergence": {"relativeTolerance": 0}, "targetLoss": 1.1,
                     "shuffle": True},
    },
    "mlp": {
        "workload": {"model": "mlp", "dataset": "digits", "datasetSize": 1437, "seed": 5},
        "sweep": {"batchSizes": [32, 64, 128], "gpus": [1, 2]},
        "training": {"optimizer": "sgd", "learningRate": 0.02, "referenceBatchSize": 8,
                     "lrScaling": "sqrt", "warmupEpochs": 1, "maxEpochs": 40,
                     "convergence": {"relativeTolerance": 0}, "targetLoss": 0.3,
                     "shuffle": True},
    },
}  # fmt: skip


def experiment(name: str, spec: dict[str, Any], repeats: int) -> dict[str, Any]:
    """The workload as a grid ScaleExperiment on this machine's CPU processes."""
    body = json.loads(json.dumps(spec))
    body["sweep"]["repeats"] = repeats
    body["resources"] = {"gpusPerProcess": 0}
    body["execution"] = {"maxGPUs": 2, "activeDeadlineSeconds": 600}
    body["measurement"] = {"gradientNoiseScale": False}
    return {"apiVersion": "scalelab.dev/v1alpha1", "kind": "ScaleExperiment",
            "metadata": {"name": name}, "spec": body}  # fmt: skip


def _burn() -> None:
    while True:
        pass


def _label(batch: Any, gpus: Any) -> str:
    return f"b{batch}×{gpus}"


def _old_pick(trials: list[dict[str, Any]]) -> str | None:
    """The rule before the model: the smallest mean measured time-to-target."""
    times: dict[tuple[int, int], list[float]] = {}
    for t in trials:
        if t["phase"] == "Succeeded" and t.get("timeToTargetSeconds"):
            times.setdefault((t["batchSize"], t["gpus"]), []).append(t["timeToTargetSeconds"])
    if not times:
        return None
    batch, gpus = min(times, key=lambda k: (mean(times[k]), k[1]))
    return _label(batch, gpus)


def run(doc: dict[str, Any], tmp: Path, busy: bool) -> dict[str, Any]:
    """One `scalelab run` (beside burners when `busy`); what this benchmark compares."""
    tmp.mkdir(parents=True, exist_ok=True)
    file, out = tmp / "x.yaml", tmp / "out"
    file.write_text(yaml.safe_dump(doc))
    burners = [
        multiprocessing.Process(target=_burn, daemon=True) for _ in range(os.cpu_count() or 1)
    ]
    for b in burners if busy else []:
        b.start()
    load_before = os.getloadavg()[0]
    began = time.monotonic()
    try:
        done = subprocess.run([sys.executable, "-m", "scalelab", "run", str(file), "--out",
                               str(out), "--no-report"], check=False, capture_output=True,
                              text=True)  # fmt: skip
    finally:
        for b in burners if busy else []:
            b.terminate()
            b.join()
    if done.returncode not in (0, 1):
        raise RuntimeError(f"scalelab run exited {done.returncode}: {done.stderr[-2000:]}")
    results = json.loads((out / "results.json").read_text())
    rec = results.get("recommendation") or {}
    trials = results["trials"]
    return {
        "pick": _label(rec.get("batchSize"), rec.get("gpus")) if rec.get("trial") else None,
        "set": [_label(c["batchSize"], c["gpus"]) for c in rec.get("indistinguishable", [])],
        "old": _old_pick(trials),
        "reached": sum(1 for t in trials if t.get("stepsToTarget")),
        "trials": len(trials),
        "ratios": [round(t["modelRatio"], 2) for t in trials if t.get("modelRatio")],
        "load": (load_before, os.getloadavg()[0]),
        "wall": time.monotonic() - began,
        "confidence": rec.get("confidence"),
    }


def study(name: str, runs: int, busy: int, repeats: int, tmp: Path) -> None:
    """`runs` sweeps of one workload, the last `busy` beside burners; prints each and a tally."""
    picks, old = [], []
    for i in range(runs):
        loaded = i >= runs - busy
        r = run(experiment(f"stab-{name}", WORKLOADS[name], repeats), tmp / f"{name}{i}", loaded)
        picks.append(r["pick"])
        old.append(r["old"])
        print(f"  {name} run {i + 1}{' (burners)' if loaded else ''}: pick {r['pick']}, "
              f"indistinguishable {r['set']}, old rule {r['old']}; {r['reached']}/{r['trials']} "
              f"reached the target; measured/modelled {r['ratios']}; load "
              f"{r['load'][0]:.2f}→{r['load'][1]:.2f}; {r['wall']:.0f} s", flush=True)  # fmt: skip
    top, count = Counter(picks).most_common(1)[0]
    old_top, old_count = Counter(old).most_common(1)[0]
    print(f"{name}: same pick in {count}/{runs} runs ({top}); the old wall-clock rule: "
          f"{old_count}/{runs} ({old_top}); picks {picks}, old {old}", flush=True)  # fmt: skip


def main() -> None:
    """Measure and print."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--busy", type=int, default=2, help="of the runs, beside CPU burners")
    parser.add_argument("--repeats", type=int, default=1, help="sweep.repeats")
    parser.add_argument("--workload", action="append", choices=sorted(WORKLOADS))
    parser.add_argument("--keep", help="keep the runs' outputs in this new directory")
    args = parser.parse_args()
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}; "
          f"{os.cpu_count()} cores", flush=True)  # fmt: skip
    with tempfile.TemporaryDirectory() as scratch:
        tmp = args.keep or scratch
        for name in args.workload or sorted(WORKLOADS):
            study(name, args.runs, args.busy, args.repeats, Path(tmp))
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
