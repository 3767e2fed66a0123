"""spec.objective: which configuration the recommendation names (fastest, cheapest, or fastest
under an efficiency floor or a GPU-seconds budget) and the tolerance below which two modelled
times count as the same. Read by aggregate.py and choice.py; docs/recommendation.md explains the
choice."""

from __future__ import annotations

from enum import StrEnum

from pydantic import Field

from scalelab.api.base import SpecModel
from scalelab.rules import Rule, at, has


class Goal(StrEnum):
    """What the recommendation minimises."""

    FASTEST = "fastest"
    CHEAPEST = "cheapest"


class Objective(SpecModel):
    """What the recommendation optimises; both the fastest and the cheapest answer are reported
    whatever the goal."""

    rules = (
        Rule(
            at("goal").eq(Goal.FASTEST.value) | (~has("minEfficiency") & ~has("maxGpuSeconds")),
            "minEfficiency and maxGpuSeconds constrain goal fastest only (the cheapest "
            "configuration already has the fewest GPU-seconds and, in practice, the highest "
            "efficiency)",
            "goal",
            got=at("goal"),
        ),
    )

    goal: Goal = Field(
        default=Goal.FASTEST,
        description="fastest: the smallest modelled time-to-target (steps-to-target × median "
        "step time); cheapest: the fewest modelled GPU-seconds (processes × that time). Among "
        "configurations within `tolerance` (and the bootstrap's noise) of the best, the one with "
        "the fewest processes wins, and of those the best estimate (on exact ties the smallest "
        "batch, then learning rate). Default: fastest.",
    )
    min_efficiency: float | None = Field(
        default=None,
        gt=0,
        le=1,
        description="goal fastest: only configurations whose scaling efficiency (against the "
        "smallest process count measured at the same batch) is at least this compete. Unit: "
        "ratio. Default: null (no floor).",
    )
    max_gpu_seconds: float | None = Field(
        default=None,
        gt=0,
        le=1e12,
        description="goal fastest: only configurations whose modelled GPU-seconds are at most "
        "this compete. Unit: GPU-seconds (process-seconds on CPU). Default: null (no budget).",
    )
    tolerance: float = Field(
        default=0.05,
        ge=0,
        le=1,
        description="Configurations whose modelled time (goal cheapest: GPU-seconds) is within "
        "this fraction of the best are indistinguishable from it even where the repeats say "
        "otherwise; with one repeat it is the only noise allowance. Unit: ratio. Default: 0.05.",
    )
