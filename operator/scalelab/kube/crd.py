"""CustomResourceDefinitions of ScaleExperiment and ScaleTrial, generated from the pydantic models.

The models in scalelab.api are the one source of truth: this module turns their JSON Schema into
structural OpenAPI v3 (refs inlined, `nullable` instead of `anyOf [.., null]`, closed enums,
descriptions and defaults kept), adds the CEL rules for what the models check across fields, the
spec-edit policy, printer columns and the status subresource. `scalelab crds` writes
manifests/crds/*.yaml (`--check` reports drift); a unit test fails when the committed files drift
from the models.

Spec-edit policy: a ScaleExperiment's spec is immutable after creation except
`spec.execution.maxConcurrentTrials` (throttle or widen a running sweep); a changed grid is a new
experiment. ScaleTrials are written by the operator only and their spec is immutable.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel

from scalelab.api import (
    EXPERIMENT_KIND,
    FREE_FORM_VALUES,
    GROUP,
    TRIAL_KIND,
    VERSION,
    ScaleExperimentSpec,
    ScaleExperimentStatus,
    ScaleTrialSpec,
    ScaleTrialStatus,
)
from scalelab.kube.mpijob import LABEL_EXPERIMENT
from scalelab.kube.resources import EXPERIMENTS, TRIALS
from scalelab.planner import RUNNABLE_GRID
from scalelab.rules import DNS_LABEL

Schema = dict[str, Any]

CATEGORY = "scalelab"

#: JSON-Schema keywords that carry over unchanged into a Kubernetes structural schema.
_KEPT = (
    "description", "type", "enum", "minimum", "maximum", "minLength", "maxLength",
    "minItems", "maxItems", "pattern", "maxProperties", "x-kubernetes-validations",
)  # fmt: skip


class UnboundedFieldError(ValueError):
    """A spec field without the upper bound the CRD needs (see `_require_bound`)."""


def _require_bound(out: Schema, where: str) -> None:
    """A spec's every integer, string, list and map states its upper bound in the model (`le`,
    `max_length`, or a `Format`): the CRD needs one (CEL cost, int64) and the CLI must refuse
    exactly what the API server refuses, so the generator refuses to invent one."""
    key = {"integer": "maximum", "string": "maxLength", "array": "maxItems"}.get(
        out.get("type", "")
    )
    if out.get("type") == "object" and "additionalProperties" in out:
        key = "maxProperties"
    if key and key not in out and "enum" not in out:
        raise UnboundedFieldError(
            f"spec field {where or '<root>'} ({out['type']}) has no {key}: give it one in "
            "scalelab.api (Field(le=...) / Field(max_length=...) or a scalelab.rules.Format)"
        )


def _key_rules(names: Schema) -> list[Schema]:
    """A map's key format (JSON Schema propertyNames, which Kubernetes lacks) as CEL over keys."""
    rules = []
    limit = names.get("maxLength")
    for rule in names.get("x-kubernetes-validations", []):
        check = re.sub(r"\bself\b", "k", rule["rule"])
        if limit is not None:
            check = f"size(k) <= {limit} && {check}"
        rules.append({"rule": f"self.all(k, {check})", "message": "keys " + rule["message"]})
    return rules


def _resolve(schema: Schema, defs: Schema) -> Schema:
    """Inline a `$ref`, keeping use-site keywords (description, default) over the definition's."""
    if "$ref" not in schema:
        return schema
    target = defs[schema["$ref"].rsplit("/", 1)[-1]]
    return {**target, **{k: v for k, v in schema.items() if k != "$ref"}}


def structural(
    schema: Schema, defs: Schema, *, defaults: bool, bounded: bool, where: str = ""
) -> Schema:
    """One pydantic JSON Schema node → a Kubernetes structural schema node. `bounded` (a spec):
    every field must state its upper bound (CEL cost estimation charges an unbounded string or
    list as if it filled a whole request; a status carries no CEL and needs none)."""
    schema = _resolve(schema, defs)
    if schema.get(FREE_FORM_VALUES):
        return _free_form_values(schema, defaults=defaults)
    nullable = False
    if "anyOf" in schema:
        options = [o for o in schema["anyOf"] if o.get("type") != "null"]
        nullable = len(options) < len(schema["anyOf"])
        if len(options) != 1:
            raise ValueError(f"not expressible as a structural schema: {schema}")
        outer = {k: v for k, v in schema.items() if k != "anyOf"}
        schema = {**_resolve(options[0], defs), **outer}
    out: Schema = {k: schema[k] for k in _KEPT if k in schema}
    if "exclusiveMinimum" in schema:
        out["minimum"], out["exclusiveMinimum"] = schema["exclusiveMinimum"], True
    if "exclusiveMaximum" in schema:
        out["maximum"], out["exclusiveMaximum"] = schema["exclusiveMaximum"], True
    if "enum" in schema:
        out["type"] = "string"
    if nullable:
        out["nullable"] = True
    kind = out.get("type")
    if kind is None and "properties" in schema:
        kind = out["type"] = "object"
    if kind == "object" and "properties" in schema:
        out["properties"] = {
            name: structural(sub, defs, defaults=defaults, bounded=bounded, where=f"{where}.{name}")
            for name, sub in schema["properties"].items()
        }
        if schema.get("required"):
            out["required"] = list(schema["required"])
    elif kind == "object" and isinstance(schema.get("additionalProperties"), dict):
        out["additionalProperties"] = structural(
            schema["additionalProperties"], defs, defaults=defaults, bounded=bounded,
            where=f"{where}{{}}",
        )  # fmt: skip
        if "propertyNames" in schema:
            keys = _key_rules(_resolve(schema["propertyNames"], defs))
            out["x-kubernetes-validations"] = keys + out.get("x-kubernetes-validations", [])
    elif kind == "array":
        out["items"] = structural(
            schema["items"], defs, defaults=defaults, bounded=bounded, where=f"{where}[]"
        )
    if "x-kubernetes-validations" in out:
        out["x-kubernetes-validations"] = [
            {k: r[k] for k in ("rule", "message", "fieldPath") if k in r}
            for r in out["x-kubernetes-validations"]
        ]
    if bounded:
        _require_bound(out, where)
    if defaults and schema.get("default") is not None:
        out["default"] = schema["default"]
    return _order(out)


def _free_form_values(schema: Schema, *, defaults: bool) -> Schema:
    """A map whose values Kubernetes keeps as written (`workload.parameters`): a structural
    schema has no "scalar or list of scalars", and CEL sees nothing of preserve-unknown-fields
    data (not even the keys), so only its size is bounded here; its names and value types are
    checked by the models, and the operator refuses the experiment on its conditions."""
    out: Schema = {
        "description": schema["description"],
        "type": "object",
        "maxProperties": schema["maxProperties"],  # a spec states its own bound
        "additionalProperties": {"x-kubernetes-preserve-unknown-fields": True},
    }
    if defaults and schema.get("default") is not None:
        out["default"] = schema["default"]
    return _order(out)


def _fill_container_defaults(node: Schema) -> None:
    """Optional nested objects default to their children's defaults (lists to []), so a missing
    section is filled in by the API server; the value is spelt out in full because the API server
    validates a default against the CEL rules as written, without defaulting inside it."""
    if isinstance(node.get("items"), dict):
        _fill_container_defaults(node["items"])
    required = set(node.get("required", ()))
    for name, sub in node.get("properties", {}).items():
        _fill_container_defaults(sub)
        if name in required or "default" in sub or sub.get("nullable"):
            continue
        if sub.get("type") == "object" and "properties" in sub:
            sub["default"] = {
                k: v["default"] for k, v in sub["properties"].items() if "default" in v
            }
        elif sub.get("type") in ("object", "array"):
            sub["default"] = {} if sub["type"] == "object" else []
        if "default" in sub:
            sub.update(_order(sub))


_ORDER = (
    "description", "type", "nullable", "enum", "default", "minimum", "exclusiveMinimum",
    "maximum", "exclusiveMaximum", "minLength", "maxLength", "pattern", "minItems", "maxItems",
    "maxProperties", "required", "properties", "additionalProperties", "items",
)  # fmt: skip


def _order(node: Schema) -> Schema:
    return {k: node[k] for k in _ORDER if k in node} | {
        k: v for k, v in node.items() if k not in _ORDER
    }


def model_schema(model: type[BaseModel], *, defaults: bool, bounded: bool) -> Schema:
    """The structural schema of one pydantic model (camelCase wire names)."""
    raw = model.model_json_schema(by_alias=True, mode="validation")
    out = structural(raw, raw.get("$defs", {}), defaults=defaults, bounded=bounded)
    if defaults:
        _fill_container_defaults(out)
    return out


def _at(schema: Schema, *path: str) -> Schema:
    node = schema
    for name in path:
        node = node["properties"][name]
    return node


def _rule(node: Schema, rule: str, message: str, **extra: str) -> None:
    node.setdefault("x-kubernetes-validations", []).append(
        {"rule": rule, "message": message, **extra}
    )


IMMUTABLE_MESSAGE = (
    "immutable once the experiment exists (only spec.execution.maxConcurrentTrials may change); "
    "create a new ScaleExperiment to sweep something else"
)


def experiment_spec_schema() -> Schema:
    """spec of ScaleExperiment: the model's schema plus CEL rules and the edit policy."""
    spec = model_schema(ScaleExperimentSpec, defaults=True, bounded=True)
    spec.setdefault("x-kubernetes-validations", []).append(RUNNABLE_GRID.openapi())
    for field in ("workload", "sweep", "training", "measurement", "resources"):
        _rule(_at(spec, field), "self == oldSelf", f"spec.{field} is {IMMUTABLE_MESSAGE}")
    execution = _at(spec, "execution")
    frozen = [f for f in execution["properties"] if f != "maxConcurrentTrials"]
    _rule(
        execution,
        " && ".join(
            f"(has(self.{f}) == has(oldSelf.{f})) && (!has(self.{f}) || self.{f} == oldSelf.{f})"
            for f in frozen
        ),
        f"spec.execution fields other than maxConcurrentTrials are {IMMUTABLE_MESSAGE}",
    )
    return spec


def trial_spec_schema() -> Schema:
    """spec of ScaleTrial: written by the operator once, never edited."""
    spec = model_schema(ScaleTrialSpec, defaults=True, bounded=True)
    _rule(spec, "self == oldSelf", "ScaleTrial spec is immutable (the operator writes it once)")
    return spec


def status_schema(model: type[BaseModel]) -> Schema:
    """A status: the model's schema, unknown fields kept (kopf writes its own), no defaults but
    the phase's: the API server fills `status: {phase: Pending}` into every object it returns
    until the operator writes one, so `kubectl get` shows a phase from the moment one exists."""
    status = model_schema(model, defaults=False, bounded=False)
    status["x-kubernetes-preserve-unknown-fields"] = True
    status["default"] = {}
    status["properties"]["phase"]["default"] = model.model_fields["phase"].default.value
    status["properties"]["phase"] = _order(status["properties"]["phase"])
    return status


def _root(
    spec: Schema, status: Schema, rules: list[dict[str, str]], *, spec_required: bool
) -> Schema:
    if not spec_required:
        spec["default"] = {k: v["default"] for k, v in spec["properties"].items() if "default" in v}
    root: Schema = {
        "type": "object",
        **({"required": ["spec"]} if spec_required else {}),
        "properties": {
            "apiVersion": {"type": "string"},
            "kind": {"type": "string"},
            "metadata": {"type": "object"},
            "spec": spec,
            "status": status,
        },
    }
    if rules:
        root["x-kubernetes-validations"] = rules
    return root


_NAME_RULE = {
    "rule": f"self.metadata.name.size() <= {DNS_LABEL.max_length} && "
    + DNS_LABEL.cel("self.metadata.name"),
    "message": f"metadata.name must be {DNS_LABEL.message}: it becomes the "
    f"{LABEL_EXPERIMENT} label of every trial and MPIJob",
}


def _column(name: str, kind: str, path: str, description: str, priority: int = 0) -> Schema:
    column: Schema = {"name": name, "type": kind, "jsonPath": path, "description": description}
    if priority:
        column["priority"] = priority
    return column


EXPERIMENT_COLUMNS = [
    _column("Phase", "string", ".status.phase", "Pending, Running, Succeeded or Failed"),
    _column("Trials", "integer", ".status.trials.total", "planned trials"),
    _column("Succeeded", "integer", ".status.trials.succeeded", "finished trials"),
    _column("Running", "integer", ".status.trials.running", "running trials"),
    _column("Failed", "integer", ".status.trials.failed", "failed trials"),
    _column("GPUs", "integer", ".status.gpus.running", "GPUs of running trials"),
    _column("GPU-s", "number", ".status.gpuSeconds", "GPU-seconds used so far", priority=1),
    _column("Best-Batch", "integer", ".status.recommendation.batchSize", "recommended batch"),
    _column("Best-GPUs", "integer", ".status.recommendation.gpus", "recommended GPU count"),
    _column("Best", "string", ".status.recommendation.trial", "recommended trial", priority=1),
    _column("Age", "date", ".metadata.creationTimestamp", "age"),
]

TRIAL_COLUMNS = [
    _column("Phase", "string", ".status.phase", "Pending, Running, Succeeded, Diverged, ..."),
    _column("Batch", "integer", ".spec.batchSize", "global batch per step"),
    _column("GPUs", "integer", ".spec.gpus", "Horovod processes"),
    _column("Epoch", "integer", ".status.progress.epoch", "epochs finished"),
    _column("Loss", "number", ".status.progress.loss", "full-dataset loss, last report"),
    _column("Final-Loss", "number", ".status.result.finalLoss", "full-dataset loss at the end"),
    _column("Samples/s", "number", ".status.result.samplesPerSecond", "steady-state throughput"),
    _column("Seconds", "number", ".status.result.seconds", "training time"),
    _column("Repeat", "integer", ".spec.repeat", "repeat index", priority=1),
    _column(
        "To-Target-s",
        "number",
        ".status.result.timeToTargetSeconds",
        "time to the target loss",
        priority=1,
    ),
    _column(
        "Queue-s",
        "number",
        ".status.queueSeconds",
        "time waiting for quota: MPIJob created to admitted",
        priority=1,
    ),
    _column("Experiment", "string", ".spec.experiment", "owning experiment", priority=1),
    _column("Reason", "string", ".status.reason", "why it is in this phase", priority=1),
    _column("Age", "date", ".metadata.creationTimestamp", "age"),
]


def _crd(
    kind: str, plural: str, short: str, *, schema: Schema, columns: list[Schema], doc: str
) -> Schema:
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": f"{plural}.{GROUP}",
            "labels": {
                "app.kubernetes.io/name": "scalelab",
                "app.kubernetes.io/part-of": "scalelab",
            },
        },
        "spec": {
            "group": GROUP,
            "names": {
                "kind": kind,
                "listKind": f"{kind}List",
                "plural": plural,
                "singular": kind.lower(),
                "shortNames": [short],
                "categories": [CATEGORY],
            },
            "scope": "Namespaced",
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "schema": {"openAPIV3Schema": {"description": doc, **schema}},
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": columns,
                }
            ],
        },
    }


def experiment_crd() -> Schema:
    """The ScaleExperiment CRD."""
    schema = _root(
        experiment_spec_schema(),
        status_schema(ScaleExperimentStatus),
        [dict(_NAME_RULE)],
        spec_required=False,
    )
    return _crd(
        EXPERIMENT_KIND,
        EXPERIMENTS,
        "sx",
        schema=schema,
        columns=EXPERIMENT_COLUMNS,
        doc="A scaling sweep of a Horovod training job: every batch size × GPU count runs as a "
        "ScaleTrial (one MPIJob); the status carries the counts, the recommendation and the top "
        f"rows of the results table (every row: kubectl get {TRIALS} -l "
        f"{LABEL_EXPERIMENT}=NAME).",
    )


def trial_crd() -> Schema:
    """The ScaleTrial CRD."""
    schema = _root(trial_spec_schema(), status_schema(ScaleTrialStatus), [], spec_required=True)
    return _crd(
        TRIAL_KIND,
        TRIALS,
        "st",
        schema=schema,
        columns=TRIAL_COLUMNS,
        doc="One grid point of a ScaleExperiment, run as one Kubeflow MPIJob; rank 0 of the "
        "trainer patches its status.progress and status.result.",
    )


HEADER = (
    "# Generated by `scalelab crds` from the pydantic models in operator/scalelab/api/.\n"
    "# Do not edit: change the models (or operator/scalelab/kube/crd.py) and regenerate.\n"
)


def render(crd: Schema) -> str:
    """One CRD as a YAML document with the generated-file header."""
    return HEADER + yaml.safe_dump(
        copy.deepcopy(crd), sort_keys=False, width=100, allow_unicode=True
    )


def manifests_objects() -> list[Schema]:
    """Every generated CRD as an object, in file order."""
    return [experiment_crd(), trial_crd()]


def manifests() -> dict[str, str]:
    """File name → YAML text of every generated CRD."""
    return {
        f"{GROUP}_{obj['spec']['names']['plural']}.yaml": render(obj) for obj in manifests_objects()
    }


def write(out: Path) -> list[Path]:
    """Write every CRD into `out`; returns the paths written."""
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, text in manifests().items():
        path = out / name
        path.write_text(text, encoding="utf-8")
        paths.append(path)
    return paths


def drift(out: Path) -> list[str]:
    """Names of the files in `out` that differ from what the models generate."""
    return [
        name
        for name, text in manifests().items()
        if not (out / name).exists() or (out / name).read_text(encoding="utf-8") != text
    ]
