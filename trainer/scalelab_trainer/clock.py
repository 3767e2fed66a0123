"""Step-call timings of a trial: steady-state throughput and the step-time distribution.

The epoch loop (epochs.py) adds every call of the step loop; train.py reads the result's
`samplesPerSecond` and `stepTimeSeconds` from it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class Clock:
    """Step-call timings of a trial, for steady-state throughput and the step-time distribution."""

    skip_steps: int
    durations: list[float] = field(default_factory=list)  # seconds per step, one per call
    steps: list[int] = field(default_factory=list)
    samples: list[int] = field(default_factory=list)

    def add(self, seconds: float, steps: int, samples: int) -> None:
        if steps:
            self.durations.append(seconds / steps)
            self.steps.append(steps)
            self.samples.append(samples)

    def steady(self) -> slice:
        """Calls after the first `skip_steps` steps (all but the first call if that is nothing)."""
        seen, i = 0, 0
        while i < len(self.steps) and seen < self.skip_steps:
            seen += self.steps[i]
            i += 1
        if i >= len(self.steps):
            i = min(1, len(self.steps) - 1) if len(self.steps) > 1 else 0
        return slice(i, None)

    def throughput(self) -> float | None:
        """Global samples per second over steady-state calls."""
        s = self.steady()
        secs = sum(d * k for d, k in zip(self.durations[s], self.steps[s], strict=True))
        return sum(self.samples[s]) / secs if secs > 0 else None

    def p50(self) -> float | None:
        """The median steady-state step time so far (the result's stepTimeSeconds.p50)."""
        s = self.steady()
        per = np.repeat(self.durations[s], self.steps[s])
        return float(np.percentile(per, 50)) if per.size else None

    def step_time(self) -> dict[str, float] | None:
        s = self.steady()
        per = np.repeat(self.durations[s], self.steps[s])
        if per.size == 0:
            return None
        return {
            "mean": float(per.mean()),
            "p50": float(np.percentile(per, 50)),
            "p90": float(np.percentile(per, 90)),
            "max": float(per.max()),
            "count": int(per.size),
        }
