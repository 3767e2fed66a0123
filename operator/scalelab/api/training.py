"""spec.training: the optimizer, learning-rate rule, epoch cap, stopping rule, compute precision
and compilation of every trial."""

from __future__ import annotations

from enum import StrEnum

from pydantic import Field

from scalelab.api.base import MAX_INT, SpecModel
from scalelab.api.enums import LrScaling, Optimizer, StoppingLoss


class MixedPrecision(StrEnum):
    """The low precision a trial's Keras model computes in, or off (float32)."""

    OFF = "off"
    FLOAT16 = "float16"
    BFLOAT16 = "bfloat16"


class Convergence(SpecModel):
    """The stopping rule on the full-dataset loss at epoch ends."""

    relative_tolerance: float = Field(
        default=0.001,
        ge=0,
        description="Stop when |L_i − L_{i−1}|/L_{i−1} < relativeTolerance between epochs; "
        "0 turns the rule off. Unit: dimensionless ratio. Default: 0.001.",
    )
    stopping_loss: StoppingLoss = Field(
        default=StoppingLoss.FULL,
        description="The L the rule reads: full (the full-dataset loss at each epoch end, L_0 "
        "the loss before training) or update (the mean of the epoch's per-update losses, the "
        "lab's exact rule). Default: full.",
    )


class Training(SpecModel):
    """How every trial trains."""

    optimizer: Optimizer = Field(default=Optimizer.SGD, description="Optimizer. Default: sgd.")
    learning_rate: float = Field(
        default=0.001,
        gt=0,
        le=1e6,
        description="Base learning rate, tuned at referenceBatchSize. Unit: per step. "
        "Default: 0.001, at most 10^6.",
    )
    reference_batch_size: int = Field(
        default=100,
        gt=0,
        le=MAX_INT,
        description="Global batch size the base learning rate was tuned at. Unit: examples. "
        "Default: 100.",
    )
    lr_scaling: LrScaling = Field(
        default=LrScaling.NONE,
        description="Learning-rate rule at global batch B: none η, linear η·B/B0, "
        "sqrt η·√(B/B0). Default: none.",
    )
    warmup_epochs: float = Field(
        default=0.0,
        ge=0,
        description="Gradual linear warmup from the base to the scaled rate (Goyal et al. "
        "2017). Unit: epochs. Default: 0 (no warmup).",
    )
    momentum: float = Field(
        default=0.9,
        ge=0,
        lt=1,
        description="momentum and lars: heavy-ball coefficient; adam and lamb: β1. Default: 0.9.",
    )
    beta2: float = Field(
        default=0.999,
        ge=0,
        lt=1,
        description="adam and lamb: second-moment decay β2. Default: 0.999.",
    )
    epsilon: float = Field(
        default=1e-6, gt=0, description="adam and lamb: denominator guard ε. Default: 1e-6."
    )
    weight_decay: float = Field(
        default=0.0,
        ge=0,
        description="lars and lamb: decoupled weight decay λ inside the trust ratio. Unit: per "
        "step, relative to the rate. Default: 0.",
    )
    trust_coefficient: float = Field(
        default=0.001,
        gt=0,
        description="lars: trust coefficient τ of the local rate τ·‖w‖/(‖g‖ + λ‖w‖) "
        "(You et al. 2017). Default: 0.001.",
    )
    max_epochs: int = Field(
        default=1000,
        gt=0,
        le=10**6,
        description="Epoch cap of every trial. Unit: epochs. Default: 1000, at most 10^6.",
    )
    divergence_factor: float = Field(
        default=1e4,
        gt=1,
        description="A trial is Diverged as soon as a loss is non-finite or above this times "
        "its initial loss. Unit: ratio. Default: 10000.",
    )
    convergence: Convergence = Field(
        default_factory=Convergence,
        description="Stopping rule. Default: relativeTolerance 0.001 (the lab's rule).",
    )
    target_loss: float | None = Field(
        default=None,
        gt=0,
        description="Optional full-dataset loss target for steps-, epochs- and "
        "time-to-target. Unit: loss. Default: null (no target).",
    )
    shuffle: bool = Field(
        default=False,
        description="Reshuffle the data every epoch (same permutation on every rank). "
        "Default: false (the lab does not shuffle).",
    )
    mixed_precision: MixedPrecision = Field(
        default=MixedPrecision.OFF,
        description="Compute precision of Keras models (mlp, cnn, custom): float16 or bfloat16 "
        "with float32 variables, float16 with dynamic loss scaling; the float64 linear model "
        "is unaffected (its result says so). On a CPU it runs in emulation and the result says "
        "so. The noise-scale statistics stay in float32. Default: off (float32).",
    )
    jit_compile: bool = Field(
        default=False,
        description="Compile each step's forward and backward pass with XLA (the allreduce "
        "stays outside). Default: false.",
    )
