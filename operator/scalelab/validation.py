"""Loading and validating ScaleExperiment files, with one message per problem a person can act on.

`scalelab validate`, `scalelab plan` and `scalelab run` load files through `load_experiment`;
the operator validates bodies with `parse_experiment`. A problem reads
`spec.sweep.batchSizes[1]: must be a positive integer, got -4`. Never raises for bad input:
every failure is a `Problem`.

What is valid is decided once, in scalelab.api (field constraints, `Format`s, model `rules`) and
the planner's grid rule; the generated CRD carries the same rules to the API server. This module
makes the Python side see what the API server sees: YAML is read as kubectl reads it (go-yaml:
`1e-3` is a number, dates stay strings, a repeated key's last value counts, with a warning),
turned into the JSON kubectl
sends (a float with an integral value is an integer), and validated strictly (a boolean or a
string is not an integer, numbers are finite).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from scalelab.api import ApiModel, ScaleExperiment
from scalelab.planner import plan


@dataclass(frozen=True)
class Problem:
    """One thing wrong with an experiment: where (a field path or a line) and what."""

    path: str
    message: str

    def render(self, file: str) -> str:
        """`file: path: message`, the form `scalelab validate` prints."""
        return f"{file}: {self.path}: {self.message}" if self.path else f"{file}: {self.message}"


class InvalidExperimentError(Exception):
    """A file that is not a valid ScaleExperiment; `problems` says why."""

    def __init__(self, file: str, problems: Sequence[Problem]) -> None:
        self.file = file
        self.problems = list(problems)
        super().__init__("\n".join(p.render(file) for p in self.problems))


def _path(loc: Sequence[int | str]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def _show(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return repr(value)
    if isinstance(value, dict | list):
        text = yaml.safe_dump(value, default_flow_style=True, width=10_000).strip()
        return text if len(text) <= 60 else text[:57] + "..."
    return str(value)


def _model_at(root: type[BaseModel], loc: Sequence[int | str]) -> type[BaseModel] | None:
    """The model class that holds the field at `loc` (by wire name), for listing allowed fields."""
    model: type[BaseModel] | None = root
    for part in loc:
        if model is None:
            return None
        if isinstance(part, int):
            continue
        field = next(
            (f for n, f in model.model_fields.items() if part in (f.alias or n, n)),
            None,
        )
        if field is None:
            return None
        model = _inner_model(field.annotation)
    return model


def _inner_model(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()):
        found = _inner_model(arg)
        if found is not None:
            return found
    return None


def _is_float(root: type[BaseModel], loc: Sequence[int | str]) -> bool:
    """Whether the field at `loc` holds a number rather than an integer."""
    names = [p for p in loc if isinstance(p, str)]
    model = _model_at(root, names[:-1]) if names else None
    field = next(
        (f for n, f in (model.model_fields.items() if model else ()) if names[-1] in (f.alias, n)),
        None,
    )
    return field is not None and "float" in str(field.annotation)


def _message(error: Any, root: type[BaseModel]) -> str:
    kind = error["type"]
    ctx = error.get("ctx", {})
    got = _show(error.get("input"))
    if kind == "extra_forbidden":
        parent = _model_at(root, error["loc"][:-1])
        allowed = ", ".join(f.alias or n for n, f in parent.model_fields.items()) if parent else "?"
        return f"unknown field (typo?); allowed here: {allowed}"
    if kind == "missing":
        return "required field is missing"
    if kind == "greater_than" and ctx.get("gt") == 0:
        number = "number" if _is_float(root, error["loc"]) else "integer"
        return f"must be a positive {number}, got {got}"
    if kind in ("greater_than", "greater_than_equal", "less_than", "less_than_equal"):
        op = {"greater_than": ">", "greater_than_equal": "≥", "less_than": "<"}.get(kind, "≤")
        bound = next(iter(ctx.values()))
        return f"must be {op} {bound}, got {got}"
    if kind in ("int_type", "int_parsing", "int_from_float"):
        return f"must be an integer, got {got}"
    if kind in ("float_type", "float_parsing"):
        return f"must be a number, got {got}"
    if kind == "finite_number":
        return f"must be a finite number, got {got}"
    if kind in ("bool_type", "bool_parsing"):
        return f"must be true or false, got {got}"
    if kind in ("string_type",):
        return f"must be a string, got {got}"
    if kind in ("list_type",):
        return f"must be a list, got {got}"
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        return f"must be a mapping, got {got}"
    if kind in ("enum", "literal_error"):
        return f"must be one of {ctx.get('expected', '?')}, got {got}"
    if kind == "too_short":
        return f"must have at least {ctx.get('min_length')} item(s), got {got}"
    if kind == "too_long":
        return f"must have at most {ctx.get('max_length')} item(s)"
    if kind == "string_too_long":
        return f"must be at most {ctx.get('max_length')} characters, got {got}"
    if kind == "string_too_short":
        return "must not be empty"
    if kind == "string_pattern_mismatch":
        return f"must match {ctx.get('pattern')}, got {got}"
    return f"{error['msg']}, got {got}"


def _problem(error: Any, root: type[BaseModel]) -> Problem:
    loc = error["loc"]
    if loc and loc[-1] == "[key]":  # a map's key: name the key, not a field called "[key]"
        return Problem(_path(loc[:-2]), f"key {_show(loc[-2])} {_message(error, root)}")
    return Problem(_path(loc), _message(error, root))


def problems_from_error(
    error: ValidationError, root: type[BaseModel] = ScaleExperiment
) -> list[Problem]:
    """One Problem per pydantic error, with the camelCase field path and an actionable message."""
    return [_problem(e, root) for e in error.errors()]


def rule_problems(model: BaseModel, path: str = "") -> list[Problem]:
    """The `rules` of `model` and of every model inside it that the object breaks."""
    problems: list[Problem] = []
    if isinstance(model, ApiModel) and model.rules:
        wire = model.model_dump(by_alias=True, mode="json", exclude_none=True)
        for rule in model.rules:
            if rule.broken(wire):
                where = ".".join(p for p in (path, rule.field) if p)
                got = "" if rule.got is None else f", got {_show(rule.got({'self': wire}))}"
                problems.append(Problem(where, rule.message + got))
    for name, info in type(model).model_fields.items():
        value = getattr(model, name)
        inner = f"{path}.{info.alias or name}" if path else info.alias or name
        if isinstance(value, BaseModel):
            problems += rule_problems(value, inner)
        elif isinstance(value, list):
            for i, item in enumerate(value):
                if isinstance(item, BaseModel):
                    problems += rule_problems(item, f"{inner}[{i}]")
    return problems


def semantic_problems(experiment: ScaleExperiment) -> list[Problem]:
    """The models' cross-field rules and the grid rule (the operator reports these too)."""
    problems = rule_problems(experiment)
    if problems:
        return problems
    # An impossible grid is an error, not a sweep of Skipped trials (a typo is the likely cause).
    trials = plan(experiment)
    if trials and all(t.skipped for t in trials):
        problems.append(
            Problem(
                "spec.sweep",
                "no grid point can run: " + "; ".join(sorted({t.reason for t in trials})),
            )
        )
    return problems


def parse_experiment(data: Any) -> ScaleExperiment:
    """Validate an already-loaded document; raises InvalidExperimentError listing every problem."""
    if not isinstance(data, dict):
        kind = "empty document" if data is None else type(data).__name__
        raise InvalidExperimentError(
            "", [Problem("", f"expected a ScaleExperiment mapping, got {kind}")]
        )
    try:
        experiment = ScaleExperiment.model_validate_json(as_sent(data), strict=True)
    except ValidationError as error:
        raise InvalidExperimentError("", problems_from_error(error)) from None
    problems = semantic_problems(experiment)
    if problems:
        raise InvalidExperimentError("", problems)
    return experiment


def _wire(value: Any) -> Any:
    """A loaded YAML value as kubectl sends it: a float with an integral value is an integer
    (Go prints float64(4) as `4`), keys are strings (YAML `true:` is "true")."""
    if isinstance(value, Mapping):
        return {_wire_key(k): _wire(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_wire(v) for v in value]
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e21:
        return int(value)
    return value


def _wire_key(key: Any) -> str:
    if isinstance(key, bool):
        return "true" if key else "false"
    return "null" if key is None else str(key)


def as_sent(data: Any) -> str:
    """The JSON text kubectl would send for a loaded document (non-finite numbers kept as
    NaN/Infinity so the model can name the field: kubectl itself refuses to send them)."""
    return json.dumps(_wire(data), default=str)


#: go-yaml's float syntax: an exponent needs no dot (PyYAML reads `1e-3` as a string).
_GO_FLOAT = re.compile(r"^[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?$")


class KubeYamlLoader(yaml.SafeLoader):
    """PyYAML reading YAML as kubectl does (go-yaml v2 through sigs.k8s.io/yaml): floats with an
    exponent and no dot are numbers, timestamps stay strings, and a repeated key's last value
    counts (kubectl sends that one and nothing tells the user: `repeated` lists them)."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self.repeated: list[Problem] = []

    yaml_implicit_resolvers = {  # noqa: RUF012 - PyYAML's class-level resolver table
        first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:timestamp"]
        for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
    }

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if isinstance(key, list | dict):
                raise yaml.constructor.ConstructorError(
                    None, None, "a mapping key must be a scalar", key_node.start_mark
                )
            if key in seen:
                mark = key_node.start_mark
                self.repeated.append(
                    Problem(
                        f"line {mark.line + 1}, column {mark.column + 1}",
                        f"key {key!r} is repeated: this later value replaces the earlier one "
                        "(as kubectl reads it); remove one",
                    )
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


KubeYamlLoader.add_implicit_resolver("tag:yaml.org,2002:float", _GO_FLOAT, list("-+0123456789."))


def load_experiment(file: str | Path, warnings: list[Problem] | None = None) -> ScaleExperiment:
    """Read and validate one YAML file; raises InvalidExperimentError with file-level messages.
    What is valid but likely a mistake (a repeated key) is added to `warnings`."""
    name = str(file)
    try:
        text = Path(file).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise InvalidExperimentError(name, [Problem("", f"cannot read: {error}")]) from None
    loader = KubeYamlLoader(text)
    try:
        documents = []
        while loader.check_data():  # type: ignore[no-untyped-call]
            documents.append(loader.get_data())
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        what = getattr(error, "problem", None) or str(error)
        raise InvalidExperimentError(name, [Problem(where, f"invalid YAML: {what}")]) from None
    finally:
        loader.dispose()
    if warnings is not None:
        warnings.extend(loader.repeated)
    documents = [d for d in documents if d is not None] or [None]
    if len(documents) > 1:
        raise InvalidExperimentError(
            name, [Problem("", f"expected one YAML document, got {len(documents)}")]
        )
    try:
        experiment = parse_experiment(documents[0])
    except InvalidExperimentError as error:
        raise InvalidExperimentError(name, error.problems) from None
    if warnings is not None:
        warnings.extend(advice(experiment))
    return experiment


def advice(experiment: ScaleExperiment) -> list[Problem]:
    """What is valid but changes what the results mean: a sweep without 1 process measures
    scaling efficiency against its smallest process count, not against one."""
    gpus = experiment.spec.sweep.gpus
    if 1 in gpus or len(gpus) < 2:
        return []
    smallest = min(gpus)
    return [
        Problem(
            "spec.sweep.gpus",
            f"no 1-process point: scaling efficiency will be relative to the fewest processes "
            f"measured at each batch ({smallest} here, N₀), E = thr(N)/((N/N₀)·thr(N₀)), and "
            f"says nothing about the loss from 1 to {smallest}; add 1 to gpus to measure it",
        )
    ]
