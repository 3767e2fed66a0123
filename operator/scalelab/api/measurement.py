"""spec.measurement: what every trial measures and records beyond loss and throughput."""

from __future__ import annotations

from pydantic import Field

from scalelab.api.base import SpecModel


class Measurement(SpecModel):
    """What every trial measures and records beyond loss and throughput."""

    gradient_noise_scale: bool = Field(
        default=True,
        description="Estimate the gradient noise scale B_simple (two-batch estimator, "
        "McCandlish et al. 2018). Default: true.",
    )
    noise_window_epochs: float = Field(
        default=1.0,
        ge=0,
        le=1000,
        description="B_simple smoothing: |G|² and tr(Σ) are moving averages with this time "
        "constant, carried across epochs; 0 = every step of the trial weighs the same. Unit: "
        "epochs. Default: 1.",
    )
    record_update_losses: bool = Field(
        default=False,
        description="Record every update's loss (the lab's loss-vs-update plot). Default: false.",
    )
    loss_surface_points: int = Field(
        default=0,
        ge=0,
        le=400,
        description="linear model on lab1-line: the loss on a K×K (w, b) grid in the result; "
        "0 = off. Unit: points per axis. Default: 0.",
    )
    steps_per_call: int = Field(
        default=0,
        ge=0,
        le=100_000,
        description="Optimizer steps per compiled call; 0 = auto (a whole epoch for linear "
        "models, 1 otherwise, which times every step). Unit: steps. Default: 0.",
    )
    throughput_skip_steps: int = Field(
        default=10,
        ge=0,
        le=100_000,
        description="First steps left out of throughput (warm-up). Unit: steps. Default: 10.",
    )
    intra_op_threads: int = Field(
        default=0,
        ge=0,
        le=1024,
        description="TensorFlow intra-op threads per process; 0 = TensorFlow's default. Unit: "
        "threads. Default: 0.",
    )
