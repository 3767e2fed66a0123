"""Benchmark: what the operator keeps in memory per finished experiment, its /metrics series.

Once a finished experiment's results are archived its ScaleTrials and MPIJobs leave the
operator's watches (kube/apply.py `retire`), so what a replica holds for it is its metric series:
the phase counts and one tuple per result row (kube/metrics.py `_Series`). This builds N
experiments of R rows each as the operator observes them and prints the Python memory they keep
(tracemalloc, after a collection): the part of a restarted operator's memory that grows with the
finished experiments a cluster keeps, beyond bench/operator_1000_points.py's restarted figure.

    .venv/bin/python bench/finished_metrics_memory.py [--experiments 20] [--rows 1000]

2026-12-07: 1 x 1,000 rows 0.5 MiB; 20 x 100 rows 1.0 MiB; 20 x 1,000 rows 9.9 MiB (520 bytes a
row).
"""

from __future__ import annotations

import argparse
import gc
import random
import tracemalloc

from prometheus_client import CollectorRegistry

from scalelab.api import ResultRow, TrialPhase
from scalelab.kube.metrics import OperatorMetrics, Snapshot
from scalelab.kube.state import Usage

#: 20 batch sizes x 5 process counts, as bench/operator_1000_points.py sweeps them.
BATCHES, PROCESSES = 20, 5


def rows(experiment: int, count: int, rng: random.Random) -> list[ResultRow]:
    """`count` Succeeded rows with every measured field set (what costs most)."""
    out = []
    for i in range(count):
        batch, gpus, repeat = 8 * (i % BATCHES + 1), i % PROCESSES + 1, i // (BATCHES * PROCESSES)
        out.append(ResultRow(
            trial=f"thousand-{experiment:02d}-b{batch}-g{gpus}-r{repeat}", batch_size=batch,
            gpus=gpus, repeat=repeat, phase=TrialPhase.SUCCEEDED, epochs=10, steps=100 + i,
            final_loss=rng.random(), samples_per_second=rng.random() * 1e4,
            scaling_efficiency=rng.random(), time_to_target_seconds=rng.random() * 100,
            seconds=rng.random() * 100, gpu_seconds=rng.random() * 500,
        ))  # fmt: skip
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--experiments", type=int, default=20)
    ap.add_argument("--rows", type=int, default=1000, help="result rows per experiment")
    args = ap.parse_args()
    metrics = OperatorMetrics(CollectorRegistry(), ("plan", "resume", "reconcile"))
    rng = random.Random(0)
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    for e in range(args.experiments):
        made = rows(e, args.rows, rng)
        phases = {row.trial: row.phase for row in made}
        metrics.observe("bench", f"thousand-{e:02d}", Snapshot(phases, Usage(), made))
        del made, phases
    gc.collect()
    kept = tracemalloc.get_traced_memory()[0] - base
    print(
        f"{args.experiments} finished experiments x {args.rows} rows: the metrics keep "
        f"{kept / 2**20:.1f} MiB ({kept / (args.experiments * args.rows):.0f} bytes a row)"
    )


if __name__ == "__main__":
    main()
