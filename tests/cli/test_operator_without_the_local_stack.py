"""The operator image installs images/requirements/operator.txt only: `scalelab operator`, `crds`,
`validate` and `plan` must import and run without matplotlib, rich and psutil (the `report` extra,
images/requirements/report.txt), let alone TensorFlow and Horovod. Proven in a fresh interpreter
where importing any of them fails, as it would in the image."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
BLOCKED = ("matplotlib", "rich", "psutil", "tensorflow", "horovod", "keras", "numpy")

PROGRAM = textwrap.dedent(
    """
    import importlib.abc, sys

    BLOCKED = {blocked!r}

    class Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ModuleNotFoundError(f"No module named {{name!r}} (blocked)")
            return None

    sys.meta_path.insert(0, Block())
    import scalelab.cli
    import scalelab.kube.handlers
    import scalelab.kube.main
    import scalelab.kube.operations
    from scalelab.cli import main

    codes = [
        main(["crds", "--check", "--out", "manifests/crds"]),
        main(["validate", "examples/lab1-batch-size.yaml"]),
        main(["plan", "examples/lab1-batch-size.yaml"]),
    ]
    loaded = sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)
    print("codes", codes, "loaded", loaded)
    """
)


def test_the_operator_commands_run_without_the_local_or_training_stack() -> None:
    examples = sorted(p.name for p in (ROOT / "examples").glob("*.yaml"))
    assert "lab1-batch-size.yaml" in examples, examples
    done = subprocess.run(
        [sys.executable, "-c", PROGRAM.format(blocked=BLOCKED)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().endswith("codes [0, 0, 0] loaded []"), done.stdout[-2000:]
