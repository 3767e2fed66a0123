"""What a cluster keeps per trial for `scalelab report --experiment`: the bytes of each trial's
results ConfigMap (trial contract, Out 4).

Runs every trial of an experiment with the real trainer on one process, exactly as the MPIJob
launcher does (the planner's flags, `--export-data` where the operator asks for it), takes its
stdout events and packs them as rank 0 would (`store_results.pack`, `store_results.configmap`).
Prints per trial: epochs, the raw event lines, the gzip'd events, the data, binaryData in total
(what etcd stores) and the ConfigMap as JSON on the wire (base64), and the thinning stride.

    .venv/bin/python bench/stored_results_bytes.py examples/lab1-gd-vs-sgd.yaml
    .venv/bin/python bench/stored_results_bytes.py --mlp-epochs 1000
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from scalelab.planner import exports_data, plan, trainer_command, trainer_flags
from scalelab.validation import load_experiment, parse_experiment
from scalelab_trainer import store_results


def mlp_experiment(epochs: int) -> dict[str, Any]:
    """One MLP trial on digits that runs exactly `epochs` epochs."""
    return {
        "apiVersion": "scalelab.dev/v1alpha1",
        "kind": "ScaleExperiment",
        "metadata": {"name": "bench-mlp"},
        "spec": {
            "workload": {"model": "mlp", "dataset": "digits", "datasetSize": 1797},
            "sweep": {"batchSizes": [256], "gpus": [1]},
            "training": {"optimizer": "adam", "learningRate": 0.001, "maxEpochs": epochs,
                         "convergence": {"relativeTolerance": 0}},
            "resources": {"gpusPerProcess": 0},
        },
    }  # fmt: skip


def measure(spec: Any, name: str, tmp: Path) -> dict[str, Any]:
    """Run one trial as the launcher would; the sizes of what rank 0 would store."""
    flags = trainer_flags(spec, name)
    data_path = tmp / f"{name}.npz"
    if exports_data(spec):
        flags += ["--export-data", str(data_path)]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    run = subprocess.run(
        trainer_command(flags, python=sys.executable),
        capture_output=True, text=True, check=True, env=env,
    )  # fmt: skip
    events = [json.loads(line) for line in run.stdout.splitlines() if line.startswith("{")]
    kept = [e for e in events if e.get("event") in store_results.KEPT_EVENTS]
    data = data_path.read_bytes() if data_path.exists() else None
    binary, stride = store_results.pack(kept, data)
    body = store_results.configmap(spec.experiment, name, "default", "0" * 36, binary)
    result = kept[-1]
    return {
        "trial": name,
        "epochs": result.get("epochs"),
        "event_bytes": sum(len(json.dumps(e, separators=(",", ":"))) + 1 for e in kept),
        "events_gz": len(binary[store_results.EVENTS_KEY]),
        "data": len(binary.get(store_results.DATA_KEY, b"")),
        "binary_total": sum(len(v) for v in binary.values()),
        "configmap_json": len(json.dumps(body, separators=(",", ":"))),
        "stride": stride,
    }


def main() -> None:
    """Measure and print one line per trial."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("file", nargs="?", help="a ScaleExperiment YAML")
    parser.add_argument("--mlp-epochs", type=int, default=0, help="instead: one MLP trial")
    args = parser.parse_args()
    experiment = (
        parse_experiment(mlp_experiment(args.mlp_epochs))
        if args.mlp_epochs
        else load_experiment(args.file)
    )
    print(f"budget {store_results.BUDGET_BYTES} bytes per trial; load {os.getloadavg()}")
    columns = ("trial", "epochs", "event_bytes", "events_gz", "data", "binary_total",
               "configmap_json", "stride")  # fmt: skip
    print(" ".join(f"{c:>14}" for c in columns))
    with tempfile.TemporaryDirectory() as tmp:
        for trial in plan(experiment):
            if not trial.skipped:
                row = measure(trial.spec, trial.name, Path(tmp))
                print(" ".join(f"{row[c]!s:>14}" for c in columns), flush=True)


if __name__ == "__main__":
    main()
