"""The recommendation in words: the reason sentence and what its noise allowance rests on.

Called by aggregate.recommend. On CPU trials (resources.gpusPerProcess 0) a configuration runs on
processes, not GPUs, and costs process-seconds: `Context.cpu` picks the words.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from scalelab.choice import Answer
from scalelab.timing import TIME, Draws, Modelled


@dataclass(frozen=True)
class Context:
    """What the sentence needs besides the answer."""

    configurations: int
    max_gpus: int
    has_target: bool
    tolerance: float
    cpu: bool
    draws: Draws
    basis: str = ""  # "repeats", "epochs" (one repeat, per-epoch step times) or "" (neither)

    @property
    def devices(self) -> str:
        return "process(es)" if self.cpu else "GPU(s)"

    @property
    def cost(self) -> str:
        return "process-s" if self.cpu else "GPU-s"


def text(c: Modelled, ctx: Context) -> str:
    """ "batch 256 on 2 GPU(s)", with the learning rate where the sweep has the axis."""
    rate = f" at learning rate {c.learning_rate:g}" if c.learning_rate is not None else ""
    return f"batch {c.batch_size} on {c.gpus} {ctx.devices}{rate}"


def figures(c: Modelled, ctx: Context) -> str:
    """ "3.1 s modelled = 1.2e+03 steps × 0.0026 s; measured 3.4 s; 3.1 GPU-s" (the time alone
    where no step count or step time was measured)."""
    if c.source == TIME or c.steps is None or c.step_time is None:
        return f"{c.seconds:.3g} s, {c.gpu_seconds:.3g} {ctx.cost}"
    fitted = " fitted" if c.source == "fit" else ""
    measured = f"; measured {c.measured:.3g} s" if c.measured is not None else ""
    return (
        f"{c.seconds:.3g} s modelled = {c.steps:.3g}{fitted} steps × {c.step_time:.3g} s"
        f"{measured}; {c.gpu_seconds:.3g} {ctx.cost}"
    )


def reason(main: Answer, cheapest: Modelled | None, resolved: float | None, ctx: Context) -> str:
    """The recommendation as a sentence: the answer, how it was chosen, the cheapest, how sure."""
    chosen, best = main.chosen, main.best
    if chosen is None or best is None:
        return (
            f"no configuration meets the objective ({main.goal}) among {ctx.configurations} "
            f"within maxGPUs={ctx.max_gpus}; see fastest and cheapest"
        )
    goal = "the target loss" if ctx.has_target else "convergence (within 1% of the best final loss)"
    scaled = (
        f" (scaled to {resolved:g} at this batch)"
        if chosen.learning_rate is not None
        and resolved is not None
        and not math.isclose(resolved, chosen.learning_rate, rel_tol=1e-9)
        else ""
    )
    out = (
        f"{text(chosen, ctx)}{scaled} reaches {goal} {main.goal} ({figures(chosen, ctx)}) among "
        f"{ctx.configurations} configuration(s) within maxGPUs={ctx.max_gpus}"
    )
    if len(main.members) > 1:
        lead = "the best" if chosen is best else f"the best, {text(best, ctx)}"
        out += (
            f"; {len(main.members)} configuration(s) are within the noise of {lead}: of those "
            "it has the fewest processes and, among them, the best estimate"
        )
    if cheapest is not None and cheapest is not chosen:
        out += (
            f"; {text(cheapest, ctx)} is cheapest "
            f"({cheapest.gpu_seconds:.3g} {ctx.cost}, {cheapest.seconds:.3g} s)"
        )
    if main.confidence is None:
        return out + "; one run per configuration, so no confidence figure (repeats ≥ 2 give one)"
    over = "repeats" if ctx.basis == "repeats" else "each trial's per-epoch step times"
    return out + (
        f"; in {main.confidence:.0%} of {ctx.draws.resamples} bootstrap resamples over {over} "
        f"it is within {ctx.tolerance:.0%} of the best"
    )


def noise_text(ctx: Context, main: Answer) -> str:
    """What the indistinguishable set and the intervals rest on."""
    if main.confidence is None:
        return (
            f"one run per configuration: no run-to-run variation is measured, so configurations "
            f"are indistinguishable only within the {ctx.tolerance:.0%} tolerance (repeats ≥ 2 "
            "add a bootstrap)"
        )
    if ctx.basis == "epochs":
        return (
            f"one run per configuration: a bootstrap ({ctx.draws.resamples} resamples) over each "
            "trial's per-epoch step times, which sees the load changing within a run but not "
            f"between runs, plus the {ctx.tolerance:.0%} tolerance (repeats ≥ 2 add that)"
        )
    return (
        f"bootstrap over repeats ({ctx.draws.resamples} resamples of each batch's "
        "steps-to-target and each configuration's trials, and within each trial of its "
        f"per-epoch step times where kept), plus the {ctx.tolerance:.0%} tolerance"
    )
