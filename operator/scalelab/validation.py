"""Loading and validating ScaleExperiment files, with one message per problem a person can act on.

`scalelab validate`, `scalelab plan` and `scalelab run` load files through `load_experiment`;
the operator reuses `problems_from_error` and `semantic_problems` to turn a bad spec into a
condition message. A problem reads `spec.sweep.batchSizes[1]: must be a positive integer, got -4`.
Never raises for bad input: every failure is a `Problem`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from scalelab.api import MODEL_DATASETS, Model, ScaleExperiment
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
        number = "integer" if isinstance(error.get("input"), int) else "number"
        return f"must be a positive {number}, got {got}"
    if kind in ("greater_than", "greater_than_equal", "less_than", "less_than_equal"):
        op = {"greater_than": ">", "greater_than_equal": "≥", "less_than": "<"}.get(kind, "≤")
        bound = next(iter(ctx.values()))
        return f"must be {op} {bound}, got {got}"
    if kind in ("int_type", "int_parsing", "int_from_float"):
        return f"must be an integer, got {got}"
    if kind in ("float_type", "float_parsing"):
        return f"must be a number, got {got}"
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


def problems_from_error(
    error: ValidationError, root: type[BaseModel] = ScaleExperiment
) -> list[Problem]:
    """One Problem per pydantic error, with the camelCase field path and an actionable message."""
    return [Problem(_path(e["loc"]), _message(e, root)) for e in error.errors()]


def _duplicates(values: Sequence[int]) -> list[int]:
    return sorted({v for v in values if values.count(v) > 1})


def semantic_problems(experiment: ScaleExperiment) -> list[Problem]:
    """Cross-field rules the schema cannot state per field (the operator reports these too)."""
    spec = experiment.spec
    problems: list[Problem] = []
    for field, values in (("batchSizes", spec.sweep.batch_sizes), ("gpus", spec.sweep.gpus)):
        dups = _duplicates(values)
        if dups:
            problems.append(
                Problem(f"spec.sweep.{field}", f"must not repeat values, repeated: {dups}")
            )
    allowed = MODEL_DATASETS[spec.workload.model]
    if spec.workload.dataset not in allowed:
        problems.append(
            Problem(
                "spec.workload.dataset",
                f"model {spec.workload.model.value} trains on "
                f"{', '.join(d.value for d in allowed)}, got {spec.workload.dataset.value!r}",
            )
        )
    workload = spec.workload
    if (workload.model is Model.CUSTOM) != (workload.entry_point is not None):
        problems.append(
            Problem(
                "spec.workload.entryPoint",
                "required with model custom (package.module:function) and allowed only there",
            )
        )
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
        experiment = ScaleExperiment.model_validate(data)
    except ValidationError as error:
        raise InvalidExperimentError("", problems_from_error(error)) from None
    problems = semantic_problems(experiment)
    if problems:
        raise InvalidExperimentError("", problems)
    return experiment


def load_experiment(file: str | Path) -> ScaleExperiment:
    """Read and validate one YAML file; raises InvalidExperimentError with file-level messages."""
    name = str(file)
    try:
        text = Path(file).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise InvalidExperimentError(name, [Problem("", f"cannot read: {error}")]) from None
    try:
        documents = list(yaml.safe_load_all(text))
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        what = getattr(error, "problem", None) or str(error)
        raise InvalidExperimentError(name, [Problem(where, f"invalid YAML: {what}")]) from None
    documents = [d for d in documents if d is not None] or [None]
    if len(documents) > 1:
        raise InvalidExperimentError(
            name, [Problem("", f"expected one YAML document, got {len(documents)}")]
        )
    try:
        return parse_experiment(documents[0])
    except InvalidExperimentError as error:
        raise InvalidExperimentError(name, error.problems) from None
