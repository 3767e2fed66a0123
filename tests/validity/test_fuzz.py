"""Property: for any spec, the CLI's validation (`parse_experiment`, what `scalelab validate` runs
after reading YAML) and the API server with the generated CRDs give the same verdict, and the CLI
never raises anything but InvalidExperimentError. Hypothesis generates specs near the edges of
every rule: a valid spec from per-field strategies, then up to three fields replaced by values
that are wrong in a typical way (a boolean for an integer, a bound ± 1, a string Kubernetes would
refuse, ...). Cross-field rules (the grid, datasets, tolerations, the trial cap) come out of the
valid values' combinations. The API server judges each by a server-side dry run (milliseconds),
so a CI run judges 1,200 specs in well under a minute. The pods, labels and PriorityClass of
every accepted spec must pass the API server too (downstream.py).
"""

from __future__ import annotations

import json
import string
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from scalelab.validation import InvalidExperimentError, parse_experiment
from tests.harness.controlplane import ControlPlane
from tests.validity.conftest import custom_objects
from tests.validity.downstream import refusals

pytestmark = pytest.mark.cluster

EXAMPLES = 1200  # specs per run
#: A parameter's value or name, not the map itself (its type and size the CRD does check).
PARAMETER_PATH = ("spec.workload.parameters.", "spec.workload.parameters: key ")
MAX_INT = 2**31 - 1

Strategy = st.SearchStrategy[Any]


def ints(low: int, high: int, *edges: int) -> Strategy:
    return st.one_of(st.integers(low, min(high, low + 64)), st.sampled_from([low, high, *edges]))


def bad_ints(low: int, high: int) -> Strategy:
    """Integers just outside [low, high] and things that are not integers."""
    return st.one_of(
        st.sampled_from([low - 1, high + 1, -(2**31), 2**63, True, False, "1", 2.5, [1], None]),
        st.floats(allow_nan=True, allow_infinity=True).filter(lambda f: not f.is_integer()),
    )


def numbers(low: float, high: float) -> Strategy:
    return st.floats(low, high, allow_nan=False, allow_infinity=False)


def bad_numbers() -> Strategy:
    return st.sampled_from([0, -1, -1e-9, float("nan"), float("inf"), "0.1", True, [0.1]])


#: Characters that make Kubernetes strings interesting: valid ones, and a few that are not.
NAME_CHARS = string.ascii_lowercase[:4] + "AZ09-._/ !"


def k8s_strings(*edges: str) -> Strategy:
    """Names Kubernetes takes in some places and not in others, lengths at the limits."""
    return st.one_of(
        st.text("abc09-.", min_size=1, max_size=8),
        st.sampled_from(["a", "a" * 63, "a" * 64, "a" * 253, "a" * 254, "a" * 253 + "/b", *edges]),
    )


#: Strings Kubernetes takes nowhere a name goes (mostly).
BAD_STRINGS = st.text(NAME_CHARS, min_size=0, max_size=10)
LABEL_MAP = st.dictionaries(k8s_strings("example.com/k", "a/b/c"), k8s_strings(), max_size=2)
BAD_LABEL_MAP = st.dictionaries(BAD_STRINGS, BAD_STRINGS, min_size=1, max_size=2)
IMAGE = st.sampled_from([
    "busybox", "localhost:5000/a/b:1", "Ex/a", "a:b:c", "a@sha256:" + "a" * 64, "a@sha256:a",
    "ghcr.io/x/y:v1.0", "a__b", "a___b", "-a", "a-", "registry:5000/x", "",
])  # fmt: skip
BAD_IMAGE = st.one_of(st.text("abAB09-._/:@ ", max_size=12), st.just(5))

#: A custom workload's parameters (free-form values in the CRD, typed by its CEL rule).
PARAMETER_VALUE = st.one_of(
    st.text("ab0 ", max_size=4),
    st.sampled_from(["x" * 1024, -(2**53), 2**53, 0.5, -1e300, True, False]),
    st.integers(-1000, 1000),
    st.floats(allow_nan=False, allow_infinity=False),
)
PARAMETERS = st.dictionaries(
    st.sampled_from(["a", "_b", "c9", "Big_Name", "a" * 63]),
    st.one_of(PARAMETER_VALUE, st.lists(PARAMETER_VALUE, max_size=3)),
    max_size=3,
)
BAD_PARAMETERS = st.one_of(
    st.dictionaries(st.sampled_from(["1a", "a-b", "a" * 64, "", "a.b", "é"]), PARAMETER_VALUE,
                    min_size=1, max_size=2),
    st.dictionaries(st.just("k"), st.sampled_from(
        [{"a": 1}, [[1]], [None], "x" * 1025, [{}], ["x" * 1025], list(range(257))]),
        min_size=1, max_size=1),
    st.just("x"),
)  # fmt: skip

TOLERATION = st.fixed_dictionaries(
    {},
    optional={
        "key": st.one_of(k8s_strings("nvidia.com/gpu"), BAD_STRINGS, st.none()),
        "operator": st.sampled_from(["Exists", "Equal", "In"]),
        "value": st.one_of(k8s_strings(), BAD_STRINGS, st.none()),
        "effect": st.sampled_from(["NoSchedule", "PreferNoSchedule", "NoExecute", "Never"]),
        "tolerationSeconds": st.one_of(ints(0, MAX_INT), st.sampled_from([-1, None, "5"])),
    },
)

#: section → field → (valid values, values wrong in a typical way).
FIELDS: dict[str, dict[str, tuple[Strategy, Strategy]]] = {
    "workload": {
        "model": (st.sampled_from(["linear", "mlp", "cnn"]), st.sampled_from(["rnn", "", 1])),
        "dataset": (
            st.sampled_from(["lab1-line", "regression", "digits", "synthetic-images"]),
            st.sampled_from(["mnist", "Digits", None, 3]),
        ),
        "datasetSize": (ints(1, MAX_INT, 8, 100, 1000), bad_ints(1, MAX_INT)),
        "seed": (ints(0, 2**30), bad_ints(0, 2**30)),
        "parameters": (PARAMETERS, BAD_PARAMETERS),
    },
    "sweep": {
        "batchSizes": (
            st.lists(
                st.sampled_from([1, 2, 3, 4, 8, 16, 50, 100, 128, 1000]),
                min_size=1,
                max_size=6,
                unique=True,
            ),
            st.one_of(
                st.lists(bad_ints(1, MAX_INT), min_size=1, max_size=2), st.just([]), st.just(4)
            ),
        ),
        "gpus": (
            st.lists(st.sampled_from([1, 2, 3, 4, 8, 16, 32]), min_size=1, max_size=4, unique=True),
            st.one_of(st.lists(bad_ints(1, MAX_INT), min_size=1, max_size=2), st.just([])),
        ),
        "repeats": (ints(1, 100), bad_ints(1, 100)),
        "batchScope": (st.sampled_from(["global", "perProcess"]), st.sampled_from(["local", True])),
    },
    "training": {
        "optimizer": (st.sampled_from(["sgd", "adam", "lamb"]), st.sampled_from(["sdg", 0])),
        "learningRate": (numbers(1e-9, 1e6), bad_numbers()),
        "referenceBatchSize": (ints(1, MAX_INT), bad_ints(1, MAX_INT)),
        "warmupEpochs": (numbers(0, 1e3), st.sampled_from([-1, float("nan"), "1"])),
        "maxEpochs": (ints(1, 10**6), bad_ints(1, 10**6)),
        "targetLoss": (st.one_of(numbers(1e-9, 10), st.none()), bad_numbers()),
        "shuffle": (st.booleans(), st.sampled_from([0, "yes", None])),
    },
    "resources": {
        "image": (st.one_of(IMAGE, st.none()), BAD_IMAGE),
        "gpusPerProcess": (ints(0, 8), bad_ints(0, 8)),
        "processesPerWorker": (ints(1, 64), bad_ints(1, 64)),
        "cpu": (st.sampled_from(["1", "0.5", "250m"]), st.sampled_from(["1 core", "-1", 2, ""])),
        "memory": (st.sampled_from(["1Gi", "512Mi", "1.5G"]), st.sampled_from(["1GB", 4096])),
        "nodeSelector": (LABEL_MAP, st.one_of(BAD_LABEL_MAP, st.sampled_from([{"k": 1}, "x"]))),
        "tolerations": (st.lists(TOLERATION, max_size=2), st.sampled_from([{}, ["x"]])),
        "priorityClassName": (st.one_of(k8s_strings(), st.none()), BAD_STRINGS),
    },
    "execution": {
        "maxConcurrentTrials": (ints(1, 1000), bad_ints(1, 1000)),
        "maxGPUs": (ints(1, 2**20, 2, 4, 16), bad_ints(1, 2**20)),
        "backoffLimit": (ints(0, 100), bad_ints(0, 100)),
        "activeDeadlineSeconds": (ints(1, MAX_INT), bad_ints(1, MAX_INT)),
        "queueName": (st.one_of(k8s_strings("team-a.gpu"), st.none()), BAD_STRINGS),
    },
}
PLACES = [(section, name) for section, fields in FIELDS.items() for name in fields]


@st.composite
def experiments(draw: st.DrawFn, index: int = 0) -> dict[str, Any]:
    """A ScaleExperiment document: valid per field, then up to three fields made wrong; one in
    twenty is a custom workload with only its parameters wrong (the class the models refuse after
    apply). Mixed into the others that class came to 0-3 specs a run, as most documents have
    several problems: derandomize fixes the seed, but Hypothesis also draws on constants of the
    modules imported before the test, so the stream changes with the tests that ran first."""
    spec: dict[str, Any] = {}
    if draw(st.integers(0, 19)) == 0:
        spec["workload"] = {"model": "custom", "dataset": "custom",
                            "entryPoint": "team.models:workload",
                            "parameters": draw(BAD_PARAMETERS)}  # fmt: skip
    else:
        for section, fields in FIELDS.items():
            chosen = draw(st.sets(st.sampled_from(sorted(fields)), max_size=len(fields)))
            if chosen:
                spec[section] = {name: draw(fields[name][0]) for name in sorted(chosen)}
        for _ in range(draw(st.sampled_from([0, 0, 0, 1, 2, 3]))):
            section, name = draw(st.sampled_from(PLACES))
            spec.setdefault(section, {})[name] = draw(FIELDS[section][name][1])
    metadata: dict[str, Any] = {
        "name": draw(st.sampled_from(["fuzz", "f" * 63, "fuzz-1"] * 3 + ["Fuzz_1", "f" * 64]))
    }
    if draw(st.booleans()):
        metadata["labels"] = draw(st.one_of(LABEL_MAP, LABEL_MAP, BAD_LABEL_MAP))
    return {
        "apiVersion": "scalelab.dev/v1alpha1",
        "kind": "ScaleExperiment",
        "metadata": metadata,
        "spec": spec,
    }


def cli_problems(document: dict[str, Any]) -> list[str]:
    """What `scalelab validate` says is wrong with a document ([] when it accepts it)."""
    try:
        parse_experiment(json.loads(json.dumps(document)))
    except InvalidExperimentError as error:
        return [f"{p.path}: {p.message}" for p in error.problems]
    return []


def server_status(api: client.CustomObjectsApi, document: dict[str, Any]) -> int:
    """201 when the API server would create the object, else the refusal's HTTP status."""
    try:
        api.create_namespaced_custom_object(
            "scalelab.dev", "v1alpha1", "default", "scaleexperiments", document, dry_run="All"
        )
    except ApiException as error:
        return int(error.status)
    return 201


def test_the_cli_and_the_api_server_agree_on_generated_specs(crds_plane: ControlPlane) -> None:
    judge = custom_objects(crds_plane)
    tally = {"specs": 0, "accepted": 0, "no runnable grid point": 0, "after apply": 0}

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        derandomize=True,  # the same specs every run; a failure reproduces
        database=None,
        suppress_health_check=[HealthCheck.too_slow],
    )
    @given(document=experiments())
    def agree(document: dict[str, Any]) -> None:
        status = server_status(judge, document)
        # 422 Invalid (schema, CEL), 400 BadRequest (a body that is not JSON: NaN, Infinity).
        assert status in (201, 400, 422), status
        problems = cli_problems(document)
        # Custom-workload parameter names and values: no CRD rule can see them (test_parity.py),
        # the models refuse them after apply (the operator's condition).
        after_apply = bool(problems) and all(p.startswith(PARAMETER_PATH) for p in problems)
        assert (status == 201) == (not problems or after_apply), (status, problems)
        if not problems:
            refused = refusals(judge.api_client, [document])
            assert not refused, refused
        tally["specs"] += 1
        tally["accepted"] += not problems
        tally["after apply"] += after_apply
        tally["no runnable grid point"] += any(
            p.startswith("spec.sweep: no grid point can run") for p in problems
        )

    agree()
    # Shrinking replays examples, so the tally is at least the planned number of specs.
    assert tally["specs"] >= EXAMPLES >= 1000, tally
    assert 0.1 <= tally["accepted"] / tally["specs"] <= 0.9, tally
    assert tally["no runnable grid point"] >= 50, tally  # the planner's skip rules, as CEL
    assert tally["after apply"] >= 1, tally  # parameters the models refuse after apply
    print(f"fuzz: {tally}")
