"""One verdict for a spec, wherever it is judged: every file of the corpus (tests/validity/
corpus.py) goes through `scalelab validate` and through `kubectl apply --dry-run=server` against
the real API server with the generated CRDs; both must refuse the invalid files and accept the
boundary-valid ones, and the CLI's message must name the field. The one documented exception:
what no CRD rule can see (a custom workload's parameters, `Case.after_apply`) is accepted by the
API server and refused by the models (the CLI; the operator on the experiment's condition).
What the valid ones become (a trial's pods, labels, PriorityClass) must pass the API server
too."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from scalelab.validation import KubeYamlLoader
from tests.harness.controlplane import REPO, ControlPlane
from tests.validity.conftest import custom_objects
from tests.validity.corpus import Case, cases
from tests.validity.downstream import refusals

pytestmark = pytest.mark.cluster

CREATED = re.compile(r"^scaleexperiment\.scalelab\.dev/(\S+) (?:created|configured)", re.M)


def cli_verdicts(files: dict[str, Path]) -> tuple[dict[str, bool], dict[str, str]]:
    """`scalelab validate` of every file at once: name → accepted, name → its problem lines."""
    run = subprocess.run(
        [sys.executable, "-m", "scalelab", "validate", *map(str, files.values())],
        capture_output=True, text=True, cwd=REPO, timeout=300, check=False,
    )  # fmt: skip
    assert "Traceback" not in run.stderr, run.stderr[-3000:]
    accepted, problems = {}, {}
    for name, path in files.items():
        ok = f"{path}: ok (" in run.stdout
        lines = [
            line
            for line in run.stderr.splitlines()
            if line.startswith(f"{path}: ") and not line.startswith(f"{path}: warning: ")
        ]
        assert ok != bool(lines), (name, run.stdout, lines)
        accepted[name], problems[name] = ok, "\n".join(lines)
    return accepted, problems


def server_verdicts(cp: ControlPlane, folder: Path, corpus: list[Case]) -> dict[str, bool]:
    """One `kubectl apply --dry-run=server -f FOLDER`: name → accepted by the API server (or
    refused by kubectl before it got there, as the API server would see nothing)."""
    run = cp.kubectl("apply", "--dry-run=server", "-f", str(folder), check=False)
    created = set(CREATED.findall(run.stdout))
    verdicts = {}
    for case in corpus:
        refused = f"{folder / case.name}.yaml" in run.stderr
        accepted = case.obj in created
        assert refused != accepted, (case.name, run.stdout[-2000:], run.stderr[-4000:])
        verdicts[case.name] = accepted
    return verdicts


def test_the_cli_and_the_api_server_give_every_case_of_the_corpus_the_same_verdict(
    crds_plane: ControlPlane, tmp_path: Path
) -> None:
    corpus = cases()
    invalid = [c for c in corpus if not c.valid]
    assert len(invalid) >= 100
    assert len(corpus) - len(invalid) >= 20
    assert len({c.name for c in corpus}) == len(corpus)
    files = {}
    for case in corpus:
        files[case.name] = tmp_path / f"{case.name}.yaml"
        files[case.name].write_text(case.text, encoding="utf-8")

    cli, problems = cli_verdicts(files)
    server = server_verdicts(crds_plane, tmp_path, corpus)

    wrong = [
        f"{c.name}: expected {'valid' if c.valid else 'invalid'}"
        f"{' (after apply)' if c.after_apply else ''}, cli "
        f"{'accepts' if cli[c.name] else 'refuses'}, server "
        f"{'accepts' if server[c.name] else 'refuses'}\n{c.text}{problems[c.name]}"
        for c in corpus
        if not (cli[c.name] == c.valid and server[c.name] == (c.valid or c.after_apply))
    ]
    assert not wrong, f"{len(wrong)} disagreements:\n" + "\n".join(wrong[:12])
    unnamed = [
        f"{c.name}: {c.field} not in {problems[c.name]!r}"
        for c in invalid
        if c.field not in problems[c.name]
    ]
    assert not unnamed, "\n".join(unnamed)
    refused_by = {"CLI": sum(not cli[c.name] for c in corpus),
                  "API server": sum(not server[c.name] for c in corpus)}  # fmt: skip
    after = sum(c.after_apply for c in invalid)
    print(f"corpus: {len(invalid)} invalid ({after} after apply), "
          f"{len(corpus) - len(invalid)} valid; refused: {refused_by}")  # fmt: skip
    accepted = [yaml.load(c.text, Loader=KubeYamlLoader) for c in corpus if c.valid]
    refused = refusals(custom_objects(crds_plane).api_client, accepted)
    assert not refused, refused[:5]
