"""The trainer's stopping rules on plain numbers: order, reasons, and the edges of each rule."""

from __future__ import annotations

import math

import pytest

from scalelab_trainer.config import TrialConfig
from scalelab_trainer.stopping import EpochEnd, Stop, decide, divergence_limit, rule_loss

pytestmark = pytest.mark.unit

CFG = TrialConfig(max_epochs=10, relative_tolerance=1e-3)


def end(**kw: object) -> EpochEnd:
    values: dict[str, object] = {
        "epoch": 1,
        "loss": 5.0,
        "update_loss": 6.0,
        "previous": None,
        "initial_loss": 10.0,
    }
    values.update(kw)
    return EpochEnd(**values)  # type: ignore[arg-type]


def test_a_trial_goes_on_while_no_rule_applies() -> None:
    assert decide(CFG, end()) is None
    assert decide(CFG, end(epoch=2, previous=6.0)) is None


def test_a_non_finite_or_too_large_loss_diverges_before_every_other_rule() -> None:
    for loss in (math.nan, math.inf, 10.0 * 1e4 * 1.01):
        stop = decide(CFG, end(loss=loss, interrupted=True, epoch=10))
        assert stop is not None, loss
        assert stop.phase == "Diverged", loss
    stop = decide(CFG, end(step_diverged=True))
    assert stop == Stop("Diverged", "loss 5 is not finite or above 10000× the initial loss 10")
    assert divergence_limit(CFG, 0.0) == pytest.approx(1e4 * 1e-12)


def test_sigterm_fails_the_trial_unless_it_diverged() -> None:
    assert decide(CFG, end(interrupted=True, epoch=10)) == Stop("Failed", "interrupted by SIGTERM")


def test_the_target_loss_stops_at_or_below_it_and_beats_the_relative_rule() -> None:
    cfg = TrialConfig(target_loss=5.0, relative_tolerance=0.5)
    stop = decide(cfg, end(previous=5.0))
    assert stop == Stop("Succeeded", "reached target loss 5", target_reached=True)
    assert decide(cfg, end(loss=5.01, epoch=2, previous=100.0)) is None


def test_the_relative_rule_reads_the_chosen_loss_and_needs_a_previous_nonzero_value() -> None:
    full = decide(CFG, end(loss=5.0, previous=5.004))
    assert full is not None
    assert full.reason == "converged: relative change of the full loss 0.000799 < 0.001"
    update = TrialConfig(stopping_loss="update", relative_tolerance=1e-3)
    assert decide(update, end(loss=5.0, previous=5.004)) is None  # update loss 6.0 moved a lot
    assert decide(update, end(update_loss=5.0, previous=5.004)) is not None
    assert decide(CFG, end(previous=0.0)) is None
    assert decide(CFG, end(previous=None)) is None
    assert decide(TrialConfig(relative_tolerance=0), end(previous=5.0)) is None
    assert rule_loss(update, 1.0, 2.0) == 2.0
    assert rule_loss(CFG, 1.0, 2.0) == 1.0


def test_the_epoch_cap_is_the_last_rule() -> None:
    assert decide(CFG, end(epoch=10)) == Stop("Succeeded", "reached max epochs 10")
    assert decide(CFG, end(epoch=9)) is None
    converged = decide(CFG, end(epoch=10, previous=5.0))
    assert converged is not None
    assert converged.reason.startswith("converged")
