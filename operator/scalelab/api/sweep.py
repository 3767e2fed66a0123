"""spec.sweep: the grid of batch sizes × process counts × repeats, and the adaptive strategy."""

from __future__ import annotations

from pydantic import Field

from scalelab.api.base import MAX_TRIALS, PositiveInt, SpecModel
from scalelab.api.enums import BatchScope, SweepStrategy
from scalelab.rules import Rule, at, unique


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
    """The grid: every batch size × every process count × repeats."""

    rules = (
        Rule(unique("batchSizes"), "must not repeat values", "batchSizes", got=at("batchSizes")),
        Rule(unique("gpus"), "must not repeat values", "gpus", got=at("gpus")),
        Rule(
            at("batchSizes").size() * at("gpus").size() * at("repeats") <= MAX_TRIALS,
            f"must have at most {MAX_TRIALS} trials (batchSizes × gpus × repeats; each is a "
            "ScaleTrial, an MPIJob and a results row in etcd): split the sweep into several "
            "ScaleExperiments, e.g. a few batch sizes each",
            got=at("batchSizes").size() * at("gpus").size() * at("repeats"),
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
    repeats: int = Field(
        default=1,
        ge=1,
        le=100,
        description="Seeds per grid point (repeat r uses workload.seed + r). Unit: runs. "
        f"Default: 1. batchSizes × gpus × repeats is at most {MAX_TRIALS} trials.",
    )
    strategy: SweepStrategy = Field(
        default=SweepStrategy.GRID,
        description="grid: every batch size runs; adaptive: a pilot at the middle batch size "
        "(fewest GPUs, repeat 0) measures B_simple, then only batch sizes near the predicted "
        "B_crit run, smallest first, and a batch above one that Diverged under linear lr "
        "scaling is not started (see adaptive). batchSizes are the candidates. Default: grid.",
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
