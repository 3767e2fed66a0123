"""The trainer's stopping rules, as one pure function of what an epoch end knows.

Applied at every epoch end, in this order: divergence, SIGTERM, the target loss, the lab's
relative-change rule, the epoch cap. train.py calls `decide` once per epoch; no TensorFlow
here, so every rule is unit tested on plain numbers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from scalelab_trainer.config import TrialConfig


@dataclass(frozen=True)
class EpochEnd:
    """What the rules read at the end of one epoch."""

    epoch: int  # epochs finished, from 1
    loss: float  # full-dataset loss now
    update_loss: float  # mean of the epoch's per-update losses
    previous: float | None  # the rule's loss at the previous epoch end (None: none yet)
    initial_loss: float  # full-dataset loss before the first step
    step_diverged: bool = False  # the step loop stopped on a non-finite or too-large loss
    interrupted: bool = False  # SIGTERM, agreed by every rank


@dataclass(frozen=True)
class Stop:
    """Why the trial ends: its phase (Succeeded, Diverged or Failed) and a reason to show."""

    phase: str
    reason: str
    target_reached: bool = False


def divergence_limit(cfg: TrialConfig, initial_loss: float) -> float:
    """A loss above this ends the trial as Diverged."""
    return cfg.divergence_factor * max(initial_loss, 1e-12)


def rule_loss(cfg: TrialConfig, loss: float, update_loss: float) -> float:
    """The loss the relative-change rule reads (--stopping-loss full | update)."""
    return loss if cfg.stopping_loss == "full" else update_loss


def decide(cfg: TrialConfig, end: EpochEnd) -> Stop | None:
    """Whether the trial stops at this epoch end, and why; None to train another epoch."""
    loss = end.loss
    limit = divergence_limit(cfg, end.initial_loss)
    if end.step_diverged or not math.isfinite(loss) or loss > limit:
        return Stop(
            "Diverged",
            f"loss {loss:.4g} is not finite or above {cfg.divergence_factor:g}× the initial "
            f"loss {end.initial_loss:.4g}",
        )
    if end.interrupted:
        return Stop("Failed", "interrupted by SIGTERM")
    if cfg.target_loss is not None and loss <= cfg.target_loss:
        return Stop("Succeeded", f"reached target loss {cfg.target_loss:g}", target_reached=True)
    current = rule_loss(cfg, loss, end.update_loss)
    if cfg.relative_tolerance > 0 and end.previous is not None and end.previous != 0:
        change = abs(current - end.previous) / abs(end.previous)
        if change < cfg.relative_tolerance:
            return Stop(
                "Succeeded",
                f"converged: relative change of the {cfg.stopping_loss} loss {change:.3g} < "
                f"{cfg.relative_tolerance:g}",
            )
    if end.epoch >= cfg.max_epochs:
        return Stop("Succeeded", f"reached max epochs {cfg.max_epochs}")
    return None
