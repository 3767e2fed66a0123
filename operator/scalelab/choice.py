"""Which configuration to recommend under an objective, and which ones the data cannot tell apart.

Given the modelled configurations (timing.py) and spec.objective:

- the metric: modelled time for goal fastest, modelled GPU-seconds for goal cheapest; an
  efficiency floor or a GPU-seconds budget (goal fastest) first removes the configurations that
  miss it;
- the best: the smallest metric (point estimates);
- indistinguishable: every configuration whose metric is within `tolerance` of the best's, or,
  where repeats give a bootstrap (timing.Draws), in whose resamples the ratio metric/best's
  metric falls to 1 + tolerance or below in at least 5% (a one-sided test at 5%: the data cannot
  say it is slower);
- the answer: among the indistinguishable set, the fewest processes (the cheaper of two
  configurations equally fast), and of those the smallest metric, the best point estimate (then
  the smallest batch, then the smallest learning rate, for exact ties). Not the smallest batch:
  the set's smallest batch is the member at its edge, whose membership rests on the bootstrap's
  5% tail and so on the load of the run (bench/recommendation_stability.py), while the best
  point estimate held from run to run;
- confidence: the share of resamples in which the answer is within tolerance of that resample's
  best (None without repeats).

Pure; called by aggregate.recommend.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from scalelab.api import Goal, Objective
from scalelab.timing import Draws, Modelled

#: The one-sided tail: a configuration is indistinguishable when at least this share of
#: resamples puts it within tolerance of the best.
TAIL = 0.05


@dataclass(frozen=True)
class Answer:
    """The answer to one objective: the chosen configuration and the set it was chosen from."""

    goal: str
    chosen: Modelled | None
    best: Modelled | None
    members: tuple[Modelled, ...]  # indistinguishable from the best, best first
    confidence: float | None
    candidates: int  # configurations that met the objective's constraints


def metric(goal: Goal) -> Callable[[Modelled], float]:
    """The quantity the goal minimises."""
    return (lambda c: c.gpu_seconds) if goal is Goal.CHEAPEST else (lambda c: c.seconds)


def tie_key(c: Modelled) -> tuple[int, int, float]:
    """Exact ties: fewest processes, then the smallest batch, then the smallest rate."""
    return (c.gpus, c.batch_size, c.learning_rate or 0.0)


def pick_key(value: Callable[[Modelled], float]) -> Callable[[Modelled], tuple[object, ...]]:
    """The answer among the indistinguishable set: fewest processes, then the smallest metric
    (`value`), then `tie_key`."""
    return lambda c: (c.gpus, value(c), *tie_key(c))


def goal_text(objective: Objective) -> str:
    """The objective in words: "fastest", "cheapest", "fastest with efficiency ≥ 0.7"."""
    parts = [objective.goal.value]
    if objective.min_efficiency is not None:
        parts.append(f"efficiency ≥ {objective.min_efficiency:g}")
    if objective.max_gpu_seconds is not None:
        parts.append(f"GPU-seconds ≤ {objective.max_gpu_seconds:g}")
    return parts[0] + (" with " + " and ".join(parts[1:]) if len(parts) > 1 else "")


def eligible(configs: Sequence[Modelled], objective: Objective) -> list[Modelled]:
    """The configurations that meet the objective's floor and budget."""
    floor, budget = objective.min_efficiency, objective.max_gpu_seconds
    return [
        c
        for c in configs
        if (floor is None or (c.efficiency is not None and c.efficiency >= floor - 1e-12))
        and (budget is None or c.gpu_seconds <= budget)
    ]


def answer(
    configs: Sequence[Modelled], objective: Objective, draws: Draws, *, constrained: bool = True
) -> Answer:
    """The objective's answer over `configs` (its floor and budget applied when `constrained`)."""
    pool = eligible(configs, objective) if constrained else list(configs)
    text = goal_text(objective) if constrained else objective.goal.value
    if not pool:
        return Answer(text, None, None, (), None, 0)
    value, weight = metric(objective.goal), _weight(objective.goal)
    best = min(pool, key=lambda c: (value(c), tie_key(c)))
    limit = 1 + objective.tolerance
    best_high = draws.bounds(best)[1] * weight(best)
    # Only a configuration whose fastest draw can come within tolerance of best's slowest can be
    # a member or a resample's best: the rest are never drawn (1,000-point sweeps stay cheap).
    rivals = [c for c in pool if c is best or draws.bounds(c)[0] * weight(c) <= limit * best_high]
    repeated = draws.varies(rivals)
    members = [
        c
        for c in rivals
        if _indistinguishable(c, best, (value, weight), limit, draws, repeated=repeated)
    ]
    members.sort(key=lambda c: (value(c), tie_key(c)))
    chosen = min(members, key=pick_key(value))
    confidence = _confidence(chosen, rivals, weight, limit, draws) if repeated else None
    return Answer(text, chosen, best, tuple(members), confidence, len(pool))


def _weight(goal: Goal) -> Callable[[Modelled], float]:
    """The factor from a modelled time to the goal's metric: processes for cheapest, else 1."""
    return (lambda c: float(c.gpus)) if goal is Goal.CHEAPEST else (lambda c: 1.0)


def _indistinguishable(
    c: Modelled,
    best: Modelled,
    measure: tuple[Callable[[Modelled], float], Callable[[Modelled], float]],
    limit: float,
    draws: Draws,
    *,
    repeated: bool,
) -> bool:
    """Within tolerance of the best, or so in at least 5% of the paired resamples."""
    value, weight = measure
    if c is best or value(c) <= limit * value(best):
        return True
    if not repeated:
        return False
    scale = weight(c) / weight(best)
    pairs = zip(draws.seconds(c), draws.seconds(best), strict=True)
    within = sum(a * scale <= limit * b for a, b in pairs)
    return within > 0 and within >= TAIL * draws.resamples


def _confidence(
    chosen: Modelled,
    rivals: Sequence[Modelled],
    weight: Callable[[Modelled], float],
    limit: float,
    draws: Draws,
) -> float:
    """Share of resamples in which `chosen` is within tolerance of the resample's best."""
    series = [[t * weight(c) for t in draws.seconds(c)] for c in rivals]
    own = [t * weight(chosen) for t in draws.seconds(chosen)]
    hits: int = sum(
        mine <= limit * min(column)
        for mine, column in zip(own, zip(*series, strict=True), strict=True)
    )
    return hits / draws.resamples
