"""spec.sweep: the grid of batch sizes × process counts × learning rates × repeats, and the
adaptive strategy.

`learningRates` is optional: absent, every trial trains at training.learningRate and the grid is
batchSizes × gpus × repeats, with names and rows as before the axis existed; set, it is the list
of base rates (at training.referenceBatchSize, each scaled by training.lrScaling as
training.learningRate is) and each is a grid point of its own (planner.py, names.py).
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from scalelab.api.base import MAX_TRIALS, PositiveInt, SpecModel
from scalelab.api.enums import BatchScope, SweepStrategy
from scalelab.rules import Rule, at, has, if_, unique

#: Most base learning rates one sweep tries (a learning-rate search is a handful of rates, each a
#: multiple of the trials of every batch size and GPU count).
MAX_LEARNING_RATES = 16
#: A base learning rate of the axis, bounded as training.learningRate is.
LearningRate = Annotated[float, Field(gt=0, le=1e6)]
#: Rates of the grid: the axis's length, else one (training.learningRate).
_RATES = if_(has("learningRates"), at("learningRates").size(), 1)
_TRIALS = at("batchSizes").size() * at("gpus").size() * _RATES * at("repeats")


class AdaptiveSweep(SpecModel):
    """strategy adaptive: a pilot trial measures B_simple, then only batch sizes near it run."""

    width: float = Field(
        default=4.0,
        ge=1,
        le=1000,
        description="Candidate batch sizes within this factor of the predicted critical batch "
        "size (either side, widened by the prediction's ±2 standard errors) run; the rest are "
        "Skipped with the reason. Unit: ratio. Default: 4.",
    )
    min_points: int = Field(
        default=3,
        ge=2,
        le=64,
        description="At least this many batch sizes run (the nearest to the prediction in log "
        "B), so a fit is possible. Unit: batch sizes. Default: 3.",
    )


class Sweep(SpecModel):
    """The grid: every batch size × every process count × every learning rate × repeats."""

    rules = (
        Rule(unique("batchSizes"), "must not repeat values", "batchSizes", got=at("batchSizes")),
        Rule(unique("gpus"), "must not repeat values", "gpus", got=at("gpus")),
        Rule(
            ~has("learningRates") | unique("learningRates"),
            "must not repeat values",
            "learningRates",
            got=at("learningRates"),
        ),
        Rule(
            _TRIALS <= MAX_TRIALS,
            f"must have at most {MAX_TRIALS} trials (batchSizes × gpus × learningRates × "
            "repeats, learningRates counting 1 when unset; each is a ScaleTrial, an MPIJob and a "
            "results row in etcd): split the sweep into several ScaleExperiments, e.g. a few "
            "batch sizes or learning rates each",
            got=_TRIALS,
        ),
    )

    batch_sizes: list[PositiveInt] = Field(
        default=[100],
        min_length=1,
        max_length=64,
        description="Batch sizes to sweep, per optimizer step (see batchScope). Unit: examples. "
        "Default: [100].",
    )
    gpus: list[PositiveInt] = Field(
        default=[1],
        min_length=1,
        max_length=64,
        description="Horovod process counts to sweep (one GPU each when "
        "resources.gpusPerProcess=1). Unit: processes. Default: [1].",
    )
    learning_rates: list[LearningRate] | None = Field(
        default=None,
        min_length=1,
        max_length=MAX_LEARNING_RATES,
        description="Base learning rates to sweep, each at training.referenceBatchSize and "
        "scaled by training.lrScaling as training.learningRate is (which they replace); every "
        "rate is a grid point of its own, named -lr<rate> (0.1 → lr0p1, 3e-05 → lr3em05), and "
        "results, recommendation and plots are per (batch, GPUs, learning rate). Unit: per "
        "step. Default: null (one rate, training.learningRate; trials named as without the "
        f"axis). At most {MAX_LEARNING_RATES} rates, each above 0 and at most 10^6.",
    )
    repeats: int = Field(
        default=1,
        ge=1,
        le=100,
        description="Seeds per grid point (repeat r uses workload.seed + r). Unit: runs. "
        f"Default: 1. batchSizes × gpus × learningRates × repeats is at most {MAX_TRIALS} "
        "trials.",
    )
    strategy: SweepStrategy = Field(
        default=SweepStrategy.GRID,
        description="grid: every batch size runs; adaptive: a pilot at the middle batch size "
        "(fewest GPUs, first learning rate, repeat 0) measures B_simple, then only batch sizes "
        "near the predicted B_crit run, smallest first, and a batch above one that Diverged "
        "under linear lr scaling (at the same or a smaller base learning rate) is not started "
        "(see adaptive). batchSizes are the candidates. Default: grid.",
    )
    adaptive: AdaptiveSweep = Field(
        default_factory=AdaptiveSweep,
        description="Settings of strategy adaptive. Default: width 4, minPoints 3.",
    )
    batch_scope: BatchScope = Field(
        default=BatchScope.GLOBAL,
        description="global: batchSizes are global batches split over the processes; "
        "perProcess: batchSizes are per-process batches and the global batch is b·N. "
        "Default: global.",
    )
