"""The rules framework (scalelab.rules) as pure functions: an expression's CEL text and its Python
value are the same rule, formats judge strings as Kubernetes does, the CRD generator carries every
model rule and refuses a spec field without an upper bound, and YAML reads as kubectl reads it.
The real API server's side of each is in test_parity.py and test_fuzz.py."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, Field

from scalelab import api, rules
from scalelab.kube import crd
from scalelab.planner import RUNNABLE_GRID
from scalelab.validation import InvalidExperimentError, Problem, load_experiment

pytestmark = pytest.mark.unit


def test_an_expression_prints_as_cel_and_evaluates_the_same_rule_in_python() -> None:
    g, b = rules.var("g"), rules.var("b")
    expr = rules.at("sweep.gpus").exists("g", rules.if_(g.eq(0), b, g * b) % 3 <= 1)
    assert expr.cel == "self.sweep.gpus.exists(g, ((((g == 0) ? b : (g * b)) % 3) <= 1))"
    assert expr({"self": {"sweep": {"gpus": [1, 2]}}, "b": 4}) is True  # 4 % 3 = 1
    assert expr({"self": {"sweep": {"gpus": [2]}}, "b": 1}) is False  # 2 % 3 = 2
    # CEL's remainder truncates toward zero, as Go's does; Python's floors.
    assert (rules.lift(-7) % 3)({}) == -1
    guarded = rules.has("value") & rules.at("value").eq("x")
    assert guarded.cel == "(has(self.value) && (self.value == 'x'))"
    assert guarded({"self": {}}) is False  # lazy, like CEL: no KeyError
    assert rules.lift("it's").cel == "'it\\'s'"


@pytest.mark.parametrize(
    ("fmt", "good", "bad"),
    [
        (rules.DNS_LABEL, ["a", "0a", "a-b", "a" * 63], ["", "A", "-a", "a-", "a.b", "a" * 64]),
        (rules.DNS_SUBDOMAIN, ["a.b-c", "a" * 253], ["a..b", ".a", "a_b", "a" * 254]),
        (
            rules.LABEL_KEY,
            ["k", "A_b.c-D", "example.com/k", "a" * 253 + "/" + "b" * 63],
            ["", "/k", "a/b/c", "k!", "-k", "example.com/", "a" * 254 + "/k", "b" * 64],
        ),
        (rules.LABEL_VALUE, ["", "v", "A_b.c-9", "a" * 63], ["-v", "v ", "a" * 64, "v/w"]),
        (rules.QUEUE_NAME, ["q", "team-a.gpu", "q" * 63], ["Q", "q_1", "q" * 64, "q."]),
        (
            rules.TOPOLOGY_LEVEL,
            ["kubernetes.io/hostname", "cloud.google.com/gce-topology-block", "rack", "a" * 63],
            ["", "a/b/c", "example.com/", "/rack", "a" * 64, "t.example/" + "a" * 54],
        ),
        (
            rules.IMAGE,
            [
                "busybox", "library/busybox:1.36", "localhost:5000/a/b", "my.registry/a/b:tag",
                "registry:5000/a", "a__b/c-d---e.f:Latest_1", "[::1]:5000/a",
                "a@sha256:" + "a" * 64, "Example.com/a",
            ],
            [
                "", "Busybox", "Example/a", "a:b:c", "a@sha256:abc", " a", "a ", "a:", "-a",
                "a___b", "a/", "a:" + "t" * 129,
            ],
        ),
        (rules.CPU_QUANTITY, ["1", "0.5", "250m"], ["", "1 core", "-1", "1.5m", "1e3"]),
        (rules.MEMORY_QUANTITY, ["1", "512Mi", "1.5G"], ["1GB", "1 Gi", "-1Mi", "Mi"]),
    ],
)  # fmt: skip
def test_a_format_accepts_and_refuses_what_kubernetes_does(
    fmt: rules.Format, good: list[str], bad: list[str]
) -> None:
    assert [s for s in good if not fmt.valid(s)] == []
    assert [s for s in bad if fmt.valid(s)] == []


def _crd_text() -> str:
    return "".join(crd.manifests().values())


def test_every_model_rule_and_the_grid_rule_are_in_the_generated_crds() -> None:
    models = [m for m in vars(api).values() if isinstance(m, type) and issubclass(m, api.ApiModel)]
    checks = [r for m in models for r in m.rules] + [RUNNABLE_GRID]
    assert len(checks) >= 9
    text = "".join(crd.manifests().values()).replace("\n", " ")
    rendered = [r["rule"] for obj in crd.manifests_objects() for r in _rules(obj)]
    assert [r.check.cel for r in checks if r.check.cel not in rendered] == []
    assert "keys must be a Kubernetes label key" in text  # a map's key format, as CEL over keys


def _rules(node: Any) -> list[dict[str, str]]:
    found: list[dict[str, str]] = []
    if isinstance(node, dict):
        found += node.get("x-kubernetes-validations", [])
        for value in node.values():
            found += _rules(value)
    elif isinstance(node, list):
        for value in node:
            found += _rules(value)
    return found


def test_the_crd_generator_refuses_a_spec_field_without_an_upper_bound() -> None:
    class Loose(api.SpecModel):
        name: str = Field(default="x", description="Unbounded.")

    class Bounded(api.SpecModel):
        count: int = Field(default=1, ge=0, description="Unbounded above.")

    for model, field in ((Loose, ".name"), (Bounded, ".count")):
        with pytest.raises(crd.UnboundedFieldError, match=rf"spec field \{field} "):
            crd.model_schema(model, defaults=True, bounded=True)
    crd.model_schema(Loose, defaults=False, bounded=False)  # a status may be open


def problems_of(tmp_path: Path, text: str) -> list[str]:
    file = tmp_path / "x.yaml"
    file.write_text("apiVersion: scalelab.dev/v1alpha1\nkind: ScaleExperiment\n" + text)
    try:
        load_experiment(file)
    except InvalidExperimentError as error:
        return [p.render("x.yaml") for p in error.problems]
    return []


def test_yaml_reads_as_kubectl_reads_it(tmp_path: Path) -> None:
    ok = (
        "metadata: {name: a}\nspec:\n  training: {learningRate: 1e-3, maxEpochs: 4.0, shuffle: yes}"
    )
    assert problems_of(tmp_path, ok) == []  # go-yaml: 1e-3 is a number; 4.0 reaches JSON as 4
    assert problems_of(tmp_path, "metadata: {name: a}\nspec: {workload: {datasetSize: null}}") == []
    # A repeated key: kubectl sends the last value; so does the CLI, with a warning.
    file = tmp_path / "r.yaml"
    file.write_text("kind: ScaleExperiment\nmetadata: {name: a}\nmetadata: {name: b}\n")
    warnings: list[Problem] = []
    assert load_experiment(file, warnings).metadata.name == "b"
    [warning] = warnings
    assert (warning.path, warning.message[:26]) == (
        "line 3, column 1",
        "key 'metadata' is repeated",
    )
    (date,) = problems_of(tmp_path, "metadata: {name: a}\nspec: {workload: {seed: 2026-12-03}}")
    assert date.endswith("spec.workload.seed: must be an integer, got '2026-12-03'")


def test_booleans_strings_and_fractions_are_not_integers(tmp_path: Path) -> None:
    found = problems_of(
        tmp_path,
        "metadata: {name: a}\nspec:\n  workload: {datasetSize: true, seed: '3'}\n"
        "  sweep: {repeats: 1.5}\n  training: {learningRate: .nan}\n",
    )
    assert found == [
        "x.yaml: spec.workload.datasetSize: must be an integer, got true",
        "x.yaml: spec.workload.seed: must be an integer, got '3'",
        "x.yaml: spec.sweep.repeats: must be an integer, got 1.5",
        "x.yaml: spec.training.learningRate: must be a finite number, got nan",
    ]


def test_a_grid_over_the_cap_says_how_many_trials_and_how_to_split(tmp_path: Path) -> None:
    (message,) = problems_of(
        tmp_path,
        "metadata: {name: a}\nspec:\n  workload: {datasetSize: 1000}\n"
        f"  sweep: {{batchSizes: {list(range(1, 65))}, repeats: 20}}\n",
    )
    assert message.startswith(f"x.yaml: spec.sweep: must have at most {api.MAX_TRIALS} trials")
    assert "split the sweep into several ScaleExperiments" in message
    assert message.endswith("got 1280")


def test_a_spec_model_subclass_is_what_other_models_build_on() -> None:
    assert issubclass(api.Workload, api.SpecModel)
    assert not issubclass(api.ScaleExperimentStatus, api.SpecModel)  # a NaN loss is a result
    assert isinstance(api.Sweep.rules[0], rules.Rule)
    assert issubclass(api.SpecModel, BaseModel)


def test_a_topology_without_a_queue_name_is_refused_with_what_to_set(tmp_path: Path) -> None:
    topology = "topology: {mode: Required, level: topology.example.com/rack}"
    (message,) = problems_of(
        tmp_path, f"metadata: {{name: a}}\nspec:\n  execution: {{{topology}}}\n"
    )
    assert message.startswith("x.yaml: spec.execution.topology: topology is carried out by Kueue")
    assert "set queueName, or remove topology" in message
    queued = f"metadata: {{name: a}}\nspec:\n  execution: {{queueName: team, {topology}}}\n"
    assert problems_of(tmp_path, queued) == []
