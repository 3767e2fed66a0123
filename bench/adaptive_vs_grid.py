"""Adaptive vs grid on held-out sweeps: GPU-seconds saved, the same recommendation (or one the
grid cannot tell apart from its own), B_crit predicted vs fitted.

Each workload (a linear least-squares sweep and an MLP sweep, on seeds no test or example uses)
runs with the real trainer as `strategy: grid` and as `strategy: adaptive`, same candidates,
`--runs` times each. Per run it prints GPU-seconds (Σ processes × time-to-target, or × training
time for a trial that never reached it — what the executor reports), examples processed
(Σ steps × batch: a cost the machine's load does not distort), wall seconds, the recommendation
(on modelled time-to-target, docs/recommendation.md), the grid's indistinguishable set, and
which trials adaptive skipped or stopped; then medians, the saving, whether adaptive's pick is
the grid's or in the grid's indistinguishable set, and B_simple from the pilot beside the grid's
fitted B_crit. Each grid run is also replayed `--replays` times through the adaptive policy on
its own measurements (no second run, so no noise between them): replay 1 in the executor's order
(pilot, then smallest batch first), the others with the non-pilot trials finishing in a random
order, as concurrent trials do. Load average before and after.

    nice -n 5 .venv/bin/python bench/adaptive_vs_grid.py [--runs 1] [--repeats 1] [--replays 10]
        [--workload linear|mlp] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from statistics import median
from typing import Any

import yaml

from scalelab.adaptive import dominated, pilot_trial, progress_of, verdicts
from scalelab.aggregate import recommend, with_scaling
from scalelab.api import ResultRow, TrialPhase
from scalelab.planner import plan
from scalelab.results import store
from scalelab.results.model import result_row
from scalelab.timing import epoch_step_seconds
from scalelab.validation import parse_experiment

WORKLOADS: dict[str, dict[str, Any]] = {
    # lab3's least squares (d = 100, spread spectrum) on a held-out seed.
    "linear": {
        "workload": {"model": "linear", "dataset": "regression", "datasetSize": 4096, "seed": 7},
        "sweep": {"batchSizes": [8, 32, 128, 512, 2048], "gpus": [1]},
        "training": {"optimizer": "sgd", "learningRate": 0.004, "referenceBatchSize": 8,
                     "lrScaling": "linear", "warmupEpochs": 1, "maxEpochs": 60,
                     "convergence": {"relativeTolerance": 0}, "targetLoss": 1.1,
                     "shuffle": True},
    },
    # A 2×128 MLP on scikit-learn's digits (held-out split seed 3), cross-entropy target.
    "mlp": {
        "workload": {"model": "mlp", "dataset": "digits", "datasetSize": 1437, "seed": 3},
        "sweep": {"batchSizes": [8, 32, 128, 512], "gpus": [1]},
        "training": {"optimizer": "sgd", "learningRate": 0.02, "referenceBatchSize": 8,
                     "lrScaling": "linear", "warmupEpochs": 1, "maxEpochs": 40,
                     "convergence": {"relativeTolerance": 0}, "targetLoss": 0.3,
                     "shuffle": True},
    },
}  # fmt: skip


def experiment(name: str, spec: dict[str, Any], strategy: str, repeats: int) -> dict[str, Any]:
    """The workload as a ScaleExperiment of the given strategy, on this machine's CPU."""
    body = json.loads(json.dumps(spec))
    body["sweep"]["strategy"] = strategy
    body["sweep"]["repeats"] = repeats
    body["resources"] = {"gpusPerProcess": 0}
    body["execution"] = {"maxGPUs": 1, "activeDeadlineSeconds": 900}
    return {"apiVersion": "scalelab.dev/v1alpha1", "kind": "ScaleExperiment",
            "metadata": {"name": f"{name}-{strategy}"}, "spec": body}  # fmt: skip


def run(doc: dict[str, Any], tmp: Path) -> dict[str, Any]:
    """One `scalelab run`; the figures this benchmark compares."""
    tmp.mkdir(parents=True, exist_ok=True)
    file, out = tmp / f"{doc['metadata']['name']}.yaml", tmp / doc["metadata"]["name"]
    file.write_text(yaml.safe_dump(doc))
    began = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "scalelab", "run", str(file), "--out", str(out),
                           "--no-report"], check=False, capture_output=True, text=True)  # fmt: skip
    if done.returncode not in (0, 1):  # 1: the sweep ran, some trial Failed (counted below)
        raise RuntimeError(f"scalelab run exited {done.returncode}: {done.stderr[-2000:]}")
    wall = time.monotonic() - began
    results = json.loads((out / "results.json").read_text())
    trials = results["trials"]
    ran = [t for t in trials if t["phase"] != "Skipped"]
    rec = results.get("recommendation") or {}
    pilot = next((t for t in trials if t["reason"] == "" and t["phase"] == "Succeeded"), None)
    first = min(ran, key=lambda t: t.get("finishedAt") or 0) if ran else pilot
    return {
        "gpu_seconds": sum(t.get("gpuSeconds") or 0.0 for t in trials),
        "examples": sum((t.get("steps") or 0) * t["batchSize"] for t in ran),
        "wall": wall,
        "batch": rec.get("batchSize"),
        "pick": (rec.get("batchSize"), rec.get("gpus")),
        "set": [(c["batchSize"], c["gpus"]) for c in rec.get("indistinguishable", [])],
        "confidence": rec.get("confidence"),
        "ran": sorted(t["batchSize"] for t in ran),
        "skipped": sorted(t["batchSize"] for t in trials if t["phase"] == "Skipped"),
        "critical": results.get("criticalBatch") or {},
        "first": first,
        "failed": sorted(t["batchSize"] for t in trials if t["phase"] == "Failed"),
        "pruned": sorted(t["batchSize"] for t in trials if t["phase"] == "Pruned"),
        "out": out,
    }


def _stop_time(
    experiment: Any, trial: Any, record: Any, rows: dict[str, ResultRow]
) -> tuple[float, bool]:
    """The training seconds after which the rule would have stopped `trial`, judged at each of
    its epoch ends as the executor judges them (its epochs' steps, loss, speed and median step
    so far; the training
    time outside the epochs' step loops, evaluation, spread evenly over them), and whether it
    did; all of them when it would not have."""
    row = result_row(record)
    full = row.time_to_target_seconds or row.seconds or 0.0
    curves = record.curves
    steps, seconds = curves.get("steps") or [], curves.get("seconds") or []
    speeds, losses = curves.get("samplesPerSecond") or [], curves.get("epochLoss") or []
    medians = curves.get("stepSeconds") or []
    if not steps or len(seconds) != len(steps):
        return full, False
    outside = max(full - sum(s or 0.0 for s in seconds), 0.0) / len(steps)
    epochs: list[dict[str, Any]] = []
    trained, skip = 0.0, experiment.spec.measurement.throughput_skip_steps
    for k, done in enumerate(steps):
        trained += (seconds[k] or 0.0) + outside
        epochs.append({"steps": done, "samplesPerSecond": speeds[k] if k < len(speeds) else None,
                       "loss": losses[k] if k < len(losses) else None,
                       "stepSeconds": medians[k] if k < len(medians) else None,
                       "trainingSeconds": trained})  # fmt: skip
        progress = progress_of(trial.batch_size, epochs, skip)
        if dominated(experiment, trial, progress, rows) is not None:
            return min(trained, full), True
    return full, False


def replay(grid_out: Path, doc: dict[str, Any], seed: int) -> tuple[float, tuple[Any, Any]]:
    """The adaptive policy applied to the grid's own measurements: the GPU-seconds it would have
    spent and the configuration it would recommend. Seed 0: the executor's order; else the
    non-pilot trials finish in a random order."""
    results = store.load(grid_out)
    assert results is not None
    experiment = parse_experiment(doc)
    measured = {(t.batch_size, t.gpus, t.repeat): t for t in results.trials}
    planned = [p for p in plan(experiment) if not p.skipped]
    pilot = pilot_trial(planned)
    rest = [p for p in planned if p is not pilot]
    if seed:
        random.Random(seed).shuffle(rest)
    order = [pilot, *rest] if pilot else rest
    rows: dict[str, ResultRow] = {}
    phases = {p.name: TrialPhase.PENDING for p in planned}
    spent = 0.0
    for p in order:
        if p.name in verdicts(experiment, planned, rows, phases).skip:
            phases[p.name] = TrialPhase.SKIPPED
            continue
        record = measured[(p.batch_size, p.gpus, p.repeat)]
        row = result_row(record).model_copy(update={"trial": p.name})
        stop, stopped = _stop_time(experiment, p, record, rows)
        spent += p.gpus * stop
        phases[p.name] = TrialPhase.PRUNED if stopped else row.phase
        rows[p.name] = row.model_copy(update={"phase": TrialPhase.PRUNED}) if stopped else row
    spec = experiment.spec
    epochs = {  # what aggregate_results gives the bootstrap: each trial's epochs' step times
        p.name: epoch_step_seconds(p.batch_size, record.curves.get("samplesPerSecond") or [])
        for p in planned
        if (record := measured.get((p.batch_size, p.gpus, p.repeat))) is not None
    }
    rec = recommend(with_scaling(list(rows.values())), spec.execution.max_gpus, True,
                    objective=spec.objective, cpu=True, epochs=epochs)  # fmt: skip
    return spent, (rec.batch_size, rec.gpus)


def _fmt_b_crit(critical: dict[str, Any]) -> str:
    if critical.get("beyondRange"):
        return f"beyond the largest batch measured ({critical.get('largestBatch')})"
    if critical.get("fitted") is None:
        return "no fit"
    low, high = critical.get("fittedLow"), critical.get("fittedHigh")
    interval = f" (95% CI {low:.3g}–{high:.3g})" if low and high else ""
    return f"{critical['fitted']:.3g}{interval}, R² {critical.get('fitR2', 0):.3f}"


def compare(name: str, runs: int, repeats: int, replays: int, tmp: Path) -> dict[str, Any]:
    """Grid and adaptive `runs` times each, alternating; prints each run and the medians."""
    grid, adaptive = [], []
    for i in range(runs):
        grid.append(run(experiment(name, WORKLOADS[name], "grid", repeats), tmp / f"g{i}"))
        doc = experiment(name, WORKLOADS[name], "adaptive", repeats)
        grid[-1]["replays"] = [replay(grid[-1]["out"], doc, seed) for seed in range(replays)]
        adaptive.append(run(doc, tmp / f"a{i}"))
        for label, r in (("grid", grid[-1]), ("adaptive", adaptive[-1])):
            print(f"  {name} run {i + 1} {label:8s}: {r['gpu_seconds']:7.2f} GPU-s, "
                  f"{r['examples']:>10,} examples, {r['wall']:6.1f} s wall, recommends "
                  f"{r['pick']} (indistinguishable {r['set']}), ran {r['ran']}, skipped "
                  f"{r['skipped']}, stopped early {r['pruned']}, failed {r['failed']}; load "
                  f"{os.getloadavg()[0]:.2f}", flush=True)  # fmt: skip
    g_cost, a_cost = (
        median(r["gpu_seconds"] for r in grid),
        median(r["gpu_seconds"] for r in adaptive),
    )
    g_ex, a_ex = median(r["examples"] for r in grid), median(r["examples"] for r in adaptive)
    agree = sum(a["pick"] in [g["pick"], *g["set"]] for g, a in zip(grid, adaptive, strict=True))
    same = sum(g["pick"] == a["pick"] for g, a in zip(grid, adaptive, strict=True))
    pilot = adaptive[0]["first"] or {}
    predicted = pilot.get("criticalBatchSize")
    fitted = grid[0]["critical"].get("fitted")
    print(f"{name}: median GPU-seconds grid {g_cost:.2f}, adaptive {a_cost:.2f}: "
          f"{100 * (1 - a_cost / g_cost):.0f}% saved; examples processed "
          f"{100 * (1 - a_ex / g_ex):.0f}% saved")  # fmt: skip
    replayed = [(g, r) for g in grid for r in g["replays"]]
    r_cost = median(r[0] for _, r in replayed)
    r_agree = sum(r[1] in [g["pick"], *g["set"]] for g, r in replayed)
    print(f"{name}: adaptive replayed on the grid's own measurements ({len(replayed)} replays; "
          f"same data, no load noise between them): {r_cost:.2f} GPU-s, "
          f"{100 * (1 - r_cost / g_cost):.0f}% saved; the grid's pick or one of its "
          f"indistinguishable set in {r_agree}/{len(replayed)} (replay picks "
          f"{sorted({r[1] for _, r in replayed})} vs grid "
          f"{[g['pick'] for g in grid]})")  # fmt: skip
    print(f"{name}: live runs: adaptive picks the grid's configuration in {same}/{runs}, the "
          f"grid's or one of its indistinguishable set in {agree}/{runs}; bootstrap confidence "
          f"of the picks: grid {[r['confidence'] for r in grid]}, adaptive "
          f"{[r['confidence'] for r in adaptive]}")  # fmt: skip
    se = pilot.get("criticalBatchSizeStderr")
    print(f"{name}: B_simple of the pilot (batch {pilot.get('batchSize')}) = "
          f"{predicted if predicted is None else f'{predicted:.3g}'}"
          f"{f' ± {se:.2g}' if se else ''}; grid's fitted B_crit = "
          f"{_fmt_b_crit(grid[0]['critical'])}"
          + (f"; ratio {predicted / fitted:.2f}" if predicted and fitted else ""))  # fmt: skip
    print(f"{name}: grid says: {grid[0]['critical'].get('summary')}", flush=True)
    return {"saved": 1 - a_cost / g_cost}


def main() -> None:
    """Measure and print."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=1, help="sweep.repeats of both sweeps")
    parser.add_argument("--replays", type=int, default=10, help="replays per grid run")
    parser.add_argument("--workload", action="append", choices=sorted(WORKLOADS))
    parser.add_argument("--keep", help="keep the runs' outputs in this new directory")
    args = parser.parse_args()
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}; "
          f"{os.cpu_count()} cores")  # fmt: skip
    with tempfile.TemporaryDirectory() as scratch:
        tmp = args.keep or scratch
        for name in args.workload or sorted(WORKLOADS):
            work = Path(tmp) / name
            work.mkdir(parents=True)
            compare(name, args.runs, args.repeats, args.replays, work)
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
