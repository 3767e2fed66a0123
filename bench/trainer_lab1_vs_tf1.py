"""Lab 1 the lab's way (TF1 graph, one Session.run per update and per surface point) vs scalelab.

Both compute the same things on the same data (seed 0): gradient descent and SGD with the lab's
stopping rule, and the 200×200 loss surface. Prints, per repeat and as medians: the compute time of
each (TF1: the three computations after `import tensorflow`, graph building included; scalelab: the
`seconds` of its two trials, which include data, model, diagnostics, the surface and graph tracing,
and the same less `compileSeconds`, the one-time tracing of its compiled loops), the whole-process
wall time, the speed ratios, and whether the answers agree (epochs exactly, w and b to 1e-8,
surface to 1e-10). Neither side's compute includes interpreter, TensorFlow or Horovod start-up;
the process time does. The machine's load average is printed before and after: on shared cores
only ratios from the same run compare.

Beside them, each repeat runs the floor (bench/lab1_tf2_floor.py): the least TF2 program doing the
same work, once with a graph traced per trial and once with one graph shared by both trials. Its
ratio to TF1 is the most any TF2 trainer could show here with tracing counted, per-trial or shared,
and its answers are checked against the lab's too.

    .venv/bin/python bench/trainer_lab1_vs_tf1.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
TRIALS = [
    [
        "--trial",
        "gd",
        "--batch-size",
        "100",
        "--stopping-loss",
        "update",
        "--loss-surface-points",
        "200",
    ],
    ["--trial", "sgd", "--batch-size", "1", "--stopping-loss", "update"],
]


def tf1_worker() -> None:
    """Child process: the lab's way, printing one JSON line with its answers and compute time."""
    sys.path.insert(0, str(ROOT))
    import numpy as np
    from tests.trainer.lab1_tf1 import lab_data, lab_gd, lab_sgd, lab_surface

    x, y = lab_data(0)
    t0 = time.perf_counter()
    gd, sgd = lab_gd(x, y), lab_sgd(x, y)
    surface = lab_surface(x, y, np.linspace(0, 20, 200), np.linspace(-18, 22, 200))
    compute = time.perf_counter() - t0
    print(
        json.dumps(
            {
                "compute": compute,
                "gd": [gd.epochs, gd.w, gd.b],
                "sgd": [sgd.epochs, sgd.w, sgd.b],
                "surface": surface.tolist(),
            }
        )
    )


def child(argv: list[str]) -> tuple[float, str]:
    """Wall seconds and stdout of one child process."""
    t0 = time.perf_counter()
    out = subprocess.run(argv, capture_output=True, text=True, env=ENV, check=True, cwd=ROOT)
    return time.perf_counter() - t0, out.stdout


def run_tf1() -> tuple[float, dict[str, object]]:
    wall, out = child([sys.executable, __file__, "--worker"])
    return wall, json.loads(out.strip().splitlines()[-1])


def run_floor(shared: bool) -> tuple[float, dict[str, object]]:
    flags = ["--shared-trace"] if shared else []
    _, out = child([sys.executable, str(ROOT / "bench" / "lab1_tf2_floor.py"), *flags])
    last = json.loads(out.strip().splitlines()[-1])
    return float(last["compute"]), last


def same_as_lab(tf1: dict[str, object], other: dict[str, object]) -> bool:
    """A floor's answers are the lab's: epochs exactly, w and b to 1e-8, the surface to 1e-10."""
    import numpy as np

    return all(
        other[k][0] == tf1[k][0]  # type: ignore[index]
        and abs(other[k][1] - tf1[k][1]) < 1e-8 * abs(tf1[k][1])  # type: ignore[index]
        and abs(other[k][2] - tf1[k][2]) < 1e-8 * abs(tf1[k][2])  # type: ignore[index]
        for k in ("gd", "sgd")
    ) and bool(np.allclose(np.array(other["surface"]), np.array(tf1["surface"]), rtol=1e-10))


def run_scalelab(trials: Path) -> tuple[float, dict[str, dict[str, object]]]:
    wall, out = child([sys.executable, "-m", "scalelab_trainer", "--trial-list", str(trials)])
    results = {}
    for line in out.splitlines():
        e = json.loads(line)
        if e["event"] == "result":
            results[e["trial"]] = e
    return wall, results


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--worker", action="store_true")
    args = p.parse_args()
    if args.worker:
        tf1_worker()
        return
    import numpy as np

    rows = []
    print("load average before: {:.1f} {:.1f} {:.1f}".format(*os.getloadavg()), flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        trials = Path(tmp) / "trials.json"
        trials.write_text(json.dumps(TRIALS))
        for i in range(args.repeats):
            tf1_wall, tf1 = run_tf1()
            sl_wall, sl = run_scalelab(trials)
            floor, floor_answers = run_floor(shared=False)
            floor_shared, shared_answers = run_floor(shared=True)
            sl_compute = sum(float(r["seconds"]) for r in sl.values())  # type: ignore[arg-type]
            sl_traced = sl_compute - sum(float(r["compileSeconds"]) for r in sl.values())  # type: ignore[arg-type]
            agree = all(
                sl[k]["epochs"] == tf1[k][0]  # type: ignore[index]
                and abs(sl[k]["params"]["w"] - tf1[k][1]) < 1e-8 * abs(tf1[k][1])  # type: ignore[index]
                and abs(sl[k]["params"]["b"] - tf1[k][2]) < 1e-8 * abs(tf1[k][2])  # type: ignore[index]
                for k in ("gd", "sgd")
            )
            surf = np.array(sl["gd"]["lossSurface"]["loss"])  # type: ignore[index]
            agree = agree and bool(np.allclose(surf, np.array(tf1["surface"]), rtol=1e-10))
            row = {
                "tf1_compute": float(tf1["compute"]),
                "scalelab_compute": sl_compute,  # type: ignore[arg-type]
                "scalelab_compute_after_tracing": sl_traced,
                "tf1_wall": tf1_wall,
                "scalelab_wall": sl_wall,
                "floor_compute": floor,
                "floor_shared_trace_compute": floor_shared,
                "same_answers": agree,
                "floors_same_answers": same_as_lab(tf1, floor_answers)
                and same_as_lab(tf1, shared_answers),
            }
            rows.append(row)
            print(
                f"repeat {i}: "
                + ", ".join(
                    f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()
                ),
                flush=True,
            )
    print("load average after: {:.1f} {:.1f} {:.1f}".format(*os.getloadavg()))
    med = {k: statistics.median(float(r[k]) for r in rows) for k in rows[0] if "same" not in k}
    print(
        f"epochs: GD {tf1['gd'][0]}, SGD {tf1['sgd'][0]} (both, every repeat agreeing: "  # type: ignore[index]
        f"{all(r['same_answers'] for r in rows)})"
    )
    print(
        f"median compute  TF1 {med['tf1_compute']:.3f} s  scalelab {med['scalelab_compute']:.3f} s"
        f"  ratio {med['tf1_compute'] / med['scalelab_compute']:.1f}x"
    )
    print(
        f"median compute without one-time graph tracing: scalelab "
        f"{med['scalelab_compute_after_tracing']:.3f} s  ratio "
        f"{med['tf1_compute'] / med['scalelab_compute_after_tracing']:.1f}x"
    )
    print(
        f"median compute of the TF2 floor (answers the lab's in every repeat: "
        f"{all(r['floors_same_answers'] for r in rows)}): a graph per trial "
        f"{med['floor_compute']:.3f} s ratio {med['tf1_compute'] / med['floor_compute']:.1f}x, "
        f"one graph shared {med['floor_shared_trace_compute']:.3f} s ratio "
        f"{med['tf1_compute'] / med['floor_shared_trace_compute']:.1f}x"
    )
    print(
        f"median process  TF1 {med['tf1_wall']:.3f} s  scalelab {med['scalelab_wall']:.3f} s"
        f"  ratio {med['tf1_wall'] / med['scalelab_wall']:.2f}x"
    )

    def paired(num: str, den: str) -> float:
        """Median over repeats of the ratio within a repeat (both ran back to back)."""
        return statistics.median(float(r[num]) / float(r[den]) for r in rows)

    print(
        "paired ratios (median of per-repeat ratios, robust to load drifting between repeats): "
        f"compute {paired('tf1_compute', 'scalelab_compute'):.1f}x, without tracing "
        f"{paired('tf1_compute', 'scalelab_compute_after_tracing'):.1f}x, floor per trial "
        f"{paired('tf1_compute', 'floor_compute'):.1f}x, floor shared "
        f"{paired('tf1_compute', 'floor_shared_trace_compute'):.1f}x, process "
        f"{paired('tf1_wall', 'scalelab_wall'):.2f}x"
    )


if __name__ == "__main__":
    main()
