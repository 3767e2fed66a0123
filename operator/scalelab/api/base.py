"""What every API model shares: the group and kinds, the global bounds, and the two base models.

`ApiModel` (camelCase on the wire, unknown fields refused, cross-field `rules` carried into the
JSON Schema as CEL) and `SpecModel` (what a person writes: finite numbers, bounded sizes, null =
unset). Every other module of scalelab.api builds on these.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, GetJsonSchemaHandler, model_validator
from pydantic.alias_generators import to_camel
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import core_schema

from scalelab.rules import Rule

GROUP = "scalelab.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
EXPERIMENT_KIND = "ScaleExperiment"
TRIAL_KIND = "ScaleTrial"

#: Trials one experiment may plan (batchSizes × gpus × repeats). Every trial is a ScaleTrial and
#: an MPIJob in etcd (the status keeps only the top rows: kube/compact.py); the operator's passes
#: and API writes grow with it (bench/operator_1000_points.py measures this cap). A larger sweep
#: is several experiments (docs/design-changes.md).
MAX_TRIALS = 1000

#: Largest integer any spec field takes: CEL computes in int64 (b·g must not overflow) and JSON
#: numbers beyond int64 are not integers to the API server.
MAX_INT = 2**31 - 1


class ApiModel(BaseModel):
    """Base of every API model: camelCase on the wire, unknown fields are errors.

    `rules` are the model's cross-field checks (scalelab.rules.Rule): validation.py evaluates
    them in Python and the JSON Schema carries them as CEL for the CRD.
    """

    model_config = ConfigDict(
        extra="forbid",
        alias_generator=to_camel,
        populate_by_name=True,
        use_enum_values=False,
        validate_default=True,
    )

    rules: ClassVar[tuple[Rule, ...]] = ()

    @classmethod
    def __get_pydantic_json_schema__(
        cls, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        out = handler(schema)
        if cls.rules:
            target = handler.resolve_ref_schema(out)
            target["x-kubernetes-validations"] = [r.openapi() for r in cls.rules]
        return out


class SpecModel(ApiModel):
    """Base of what a person writes (spec and metadata): numbers are finite, and integers are
    integers (validation.parse_experiment validates strictly: no booleans, no strings). Every
    integer, string, list and map has an upper bound (kube/crd.py refuses to generate a CRD
    otherwise), so the CLI refuses exactly what the API server refuses."""

    model_config = ConfigDict(allow_inf_nan=False)

    @model_validator(mode="before")
    @classmethod
    def _null_is_absent(cls, data: Any) -> Any:
        """A null where the field cannot be null means "not set", as the API server prunes it
        before defaulting (a nullable field keeps its null)."""
        if not isinstance(data, Mapping):
            return data
        pruned = {
            f.alias or n
            for n, f in cls.model_fields.items()
            if not f.is_required() and type(None) not in getattr(f.annotation, "__args__", ())
        }
        return {k: v for k, v in data.items() if v is not None or k not in pruned}


PositiveInt = Annotated[int, Field(gt=0, le=MAX_INT)]
