"""spec.workload: what is trained and on which data, including a user workload's parameters."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import AfterValidator, Field
from pydantic_core import PydanticCustomError

from scalelab.api.base import MAX_INT, SpecModel
from scalelab.api.enums import CnnArch, Dataset, Model
from scalelab.rules import Format, Rule, at, has

#: Which datasets each model trains on (the trainer refuses other pairs).
MODEL_DATASETS: dict[Model, tuple[Dataset, ...]] = {
    Model.LINEAR: (Dataset.LAB1_LINE, Dataset.REGRESSION),
    Model.MLP: (Dataset.DIGITS, Dataset.REGRESSION),
    Model.CNN: (Dataset.SYNTHETIC_IMAGES,),
    Model.CUSTOM: (Dataset.CUSTOM,),
}

#: The training examples of a built-in dataset without workload.datasetSize (lab1-line: the lab's
#: n = 100). A custom workload without it trains on every example it provides.
DEFAULT_DATASET_SIZE = 100

#: A Python entry point `package.module:function` (the user workload plugin).
ENTRY_POINT_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*:[A-Za-z_][A-Za-z0-9_]*$"
#: A workload parameter's name: a Python identifier (the plugin reads ctx.parameters[name]).
PARAMETER_NAME = Format(
    "parameter name",
    (r"[A-Za-z_][A-Za-z0-9_]*",),
    63,
    "an identifier: letters, digits and '_', not starting with a digit, at most 63 characters",
)
MAX_PARAMETERS = 64
#: A parameter's value: a string of at most this many characters, a number, a boolean, or a list
#: of at most MAX_PARAMETER_LIST of them.
MAX_PARAMETER_STRING, MAX_PARAMETER_LIST = 1024, 256
PARAMETER_VALUE_MESSAGE = (
    f"must be a string (at most {MAX_PARAMETER_STRING} characters), a number, true/false or a "
    f"list of at most {MAX_PARAMETER_LIST} of them"
)
#: The CRD marks a field whose values Kubernetes keeps as they are (`workload.parameters`). No CRD
#: rule can check them: Kubernetes' CEL has no type for data kept by
#: x-kubernetes-preserve-unknown-fields ("failed to convert to declType"), so neither the names
#: nor the values are visible to a rule. The models check both; the operator refuses an
#: experiment they refuse with Ready=False InvalidSpec naming the field (docs/design-changes.md).
FREE_FORM_VALUES = "x-scalelab-free-form-values"


def _parameter_value(value: Any) -> Any:
    """A workload parameter: a string, number or boolean, or a list of them (one error, not one
    per member of a union)."""

    def scalar(v: Any) -> bool:
        return isinstance(v, bool | int | float) or (
            isinstance(v, str) and len(v) <= MAX_PARAMETER_STRING
        )

    if scalar(value) or (
        isinstance(value, list)
        and len(value) <= MAX_PARAMETER_LIST
        and all(scalar(v) for v in value)
    ):
        return value
    raise PydanticCustomError("parameter_value", PARAMETER_VALUE_MESSAGE)


ParameterValue = Annotated[Any, AfterValidator(_parameter_value)]
ParameterName = Annotated[str, PARAMETER_NAME]


class Workload(SpecModel):
    """What is trained and on which data."""

    rules = (
        *(
            Rule(
                at("model").ne(model.value) | at("dataset").is_in([d.value for d in datasets]),
                f"model {model.value} trains on {', '.join(d.value for d in datasets)}",
                field="dataset",
                got=at("dataset"),
            )
            for model, datasets in MODEL_DATASETS.items()
        ),
        Rule(
            at("model").eq(Model.CUSTOM.value).eq(has("entryPoint")),
            "required with model custom (package.module:function) and allowed only there",
            field="entryPoint",
        ),
    )

    model: Model = Field(
        default=Model.LINEAR,
        description="Model to train: linear (datasets lab1-line, regression), mlp (digits, "
        "regression), cnn (synthetic-images) or custom (dataset custom: a user workload, see "
        "entryPoint). Default: linear.",
    )
    dataset: Dataset = Field(
        default=Dataset.LAB1_LINE,
        description="Dataset the trainer generates; custom: the user workload's own. "
        "Default: lab1-line.",
    )
    entry_point: str | None = Field(
        default=None,
        max_length=256,
        pattern=ENTRY_POINT_PATTERN,
        description="model custom only, and required there: the user workload plugin, "
        "package.module:function returning a scalelab_trainer.plugin.Workload (plugin API "
        "version 1 or 2, docs/plugins.md); its package must be installed in the trainer "
        "image (locally: in the trainer's Python). Default: null.",
    )
    parameters: dict[ParameterName, ParameterValue] = Field(
        default_factory=dict,
        max_length=MAX_PARAMETERS,
        json_schema_extra={FREE_FORM_VALUES: True},
        description="model custom: free-form parameters handed to the entry point as "
        "ctx.parameters; names are identifiers, values strings, numbers, booleans or lists of "
        "them (at most 64). The plugin checks their meaning; a value it refuses fails the "
        "trial with its message. Default: {}.",
    )
    dataset_size: int | None = Field(
        default=None,
        gt=0,
        le=MAX_INT,
        description="Number of training examples (lab1-line: the lab's n). Unit: examples. "
        f"Default: null: {DEFAULT_DATASET_SIZE} for the built-in datasets, and for custom every "
        "example the workload provides.",
    )
    seed: int = Field(
        default=0,
        ge=0,
        le=2**30,
        description="Data and initialisation seed of repeat 0; repeat r uses seed + r. "
        "Default: 0, at most 2^30.",
    )
    line_slope: float = Field(
        default=10.0,
        description="lab1-line: slope w_gen of y = w_gen·(x + noise) + b_gen. Default: 10.",
    )
    line_intercept: float = Field(
        default=2.0, description="lab1-line: intercept b_gen. Default: 2."
    )
    noise: float = Field(
        default=1.0,
        ge=0,
        description="lab1-line: standard deviation of the noise added to x; regression: of the "
        "noise on y. Unit: data units. Default: 1.",
    )
    features: int = Field(
        default=100,
        ge=1,
        le=100_000,
        description="regression: dimension d of x. Unit: features. Default: 100.",
    )
    image_size: int = Field(
        default=32,
        ge=32,
        le=512,
        description="synthetic-images: height = width of the 3-channel images (224 for the "
        "usual ResNet-50 benchmark). Unit: pixels. Default: 32.",
    )
    num_classes: int = Field(
        default=10, ge=2, le=10_000, description="synthetic-images: classes. Default: 10."
    )
    test_fraction: float = Field(
        default=0.2,
        gt=0,
        lt=1,
        description="digits: share of the 1797 images held out for test accuracy. Unit: ratio. "
        "Default: 0.2.",
    )
    hidden_units: int = Field(
        default=128, ge=1, le=65_536, description="mlp: units per hidden layer. Default: 128."
    )
    hidden_layers: int = Field(
        default=2, ge=0, le=64, description="mlp: hidden layers. Unit: layers. Default: 2."
    )
    cnn_arch: CnnArch = Field(
        default=CnnArch.RESNET_SMALL,
        description="cnn: resnet-small (3 residual stages of 16/32/64 filters) or resnet50 "
        "(Keras' ResNet-50, random weights). Default: resnet-small.",
    )

    def examples(self) -> int | None:
        """The training examples a trial uses: datasetSize when set, else DEFAULT_DATASET_SIZE
        for a built-in dataset; None for a custom workload without it (every example the
        workload provides, known only when it runs)."""
        if self.dataset_size is not None:
            return self.dataset_size
        return None if self.dataset is Dataset.CUSTOM else DEFAULT_DATASET_SIZE
