"""The generated CRDs: no drift from the models, structural, and the rules the models imply."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from scalelab.kube import crd

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]
CRDS = REPO / "manifests" / "crds"


def _walk(node: Any, path: str = "") -> list[tuple[str, dict[str, Any]]]:
    out: list[tuple[str, dict[str, Any]]] = []
    if isinstance(node, dict):
        out.append((path, node))
        for name, sub in node.get("properties", {}).items():
            out += _walk(sub, f"{path}.{name}")
        if isinstance(node.get("items"), dict):
            out += _walk(node["items"], f"{path}[]")
        if isinstance(node.get("additionalProperties"), dict):
            out += _walk(node["additionalProperties"], f"{path}{{}}")
    return out


def _schema(which: dict[str, Any]) -> dict[str, Any]:
    schema: dict[str, Any] = which["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return schema


def test_committed_crds_match_what_the_models_generate() -> None:
    stale = crd.drift(CRDS)
    assert not stale, f"{stale} drifted from scalelab.api: run `scalelab crds` and commit"


def test_committed_crds_are_the_only_files_in_the_crd_folder() -> None:
    assert sorted(p.name for p in CRDS.glob("*.yaml")) == sorted(crd.manifests())


@pytest.mark.parametrize("make", [crd.experiment_crd, crd.trial_crd])
def test_every_schema_node_is_structural_and_described(make: Any) -> None:
    schema = _schema(make())
    for path, node in _walk(schema):
        # (structural schemas allow no type where Kubernetes keeps the value as written)
        kept = node.get("x-kubernetes-preserve-unknown-fields") is True
        assert "type" in node or kept, f"{path} has no type"
        assert not {"anyOf", "oneOf", "allOf", "$ref"} & node.keys(), path
        if path.startswith((".spec.", ".status.")) and not path.endswith(("[]", "{}")):
            assert node.get("description"), f"{path} has no description"


def test_spec_defaults_equal_the_models_defaults() -> None:
    from scalelab.api import ScaleExperimentSpec

    spec = _schema(crd.experiment_crd())["properties"]["spec"]
    expected = ScaleExperimentSpec().model_dump(by_alias=True, mode="json", exclude_none=True)
    assert spec["default"] == expected


def test_status_keeps_unknown_fields_for_kopf() -> None:
    for make in (crd.experiment_crd, crd.trial_crd):
        status = _schema(make())["properties"]["status"]
        assert status["x-kubernetes-preserve-unknown-fields"] is True
        assert "status" in make()["spec"]["versions"][0]["subresources"]


def test_names_short_names_and_category() -> None:
    names = {c["spec"]["names"]["kind"]: c["spec"]["names"] for c in crd.manifests_objects()}
    assert names["ScaleExperiment"]["shortNames"] == ["sx"]
    assert names["ScaleTrial"]["shortNames"] == ["st"]
    assert all(n["categories"] == ["scalelab"] for n in names.values())


def test_sweep_and_workload_are_immutable_and_concurrency_is_not() -> None:
    spec = _schema(crd.experiment_crd())["properties"]["spec"]
    for field in ("workload", "sweep", "training", "resources"):
        rules = [r["rule"] for r in spec["properties"][field]["x-kubernetes-validations"]]
        assert "self == oldSelf" in rules
    execution = spec["properties"]["execution"]["x-kubernetes-validations"]
    [execution_rule] = [r["rule"] for r in execution if "immutable" in r["message"]]
    assert "maxGPUs" in execution_rule
    assert "self.topology == oldSelf.topology" in execution_rule
    assert "maxConcurrentTrials" not in execution_rule


def test_generated_yaml_parses_back_to_the_same_object() -> None:
    for obj, text in zip(crd.manifests_objects(), crd.manifests().values(), strict=True):
        assert yaml.safe_load(text) == obj
