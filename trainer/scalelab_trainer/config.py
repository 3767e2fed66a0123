"""The one trial configuration: every default with a comment, filled from the command line.

`TrialConfig` is what `python -m scalelab_trainer` runs and what every `start` and `result` event
carries back (`as_dict`). The flag names are the trial contract (docs/trial-contract.md) that the
control plane's planner renders, so renaming one breaks the planner.
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

SCHEMA = "scalelab.trainer/v1"

MODELS = ("linear", "mlp", "cnn")
DATASETS = ("lab1-line", "regression", "digits", "synthetic-images")
OPTIMIZERS = ("sgd", "momentum", "adam", "lars", "lamb")
LR_SCALINGS = ("none", "linear", "sqrt")
STOPPING_LOSSES = ("full", "update")
CNN_ARCHS = ("resnet-small", "resnet50")


@dataclass(frozen=True)
class TrialConfig:
    """One trial: model, data, global batch, learning-rate rule, stopping rule, identity."""

    # --- identity (metric labels, status target) ---
    experiment: str = "local"  # ScaleExperiment name
    trial: str = "trial"  # ScaleTrial name
    namespace: str | None = None  # namespace of the ScaleTrial (status patches need it)
    report_status: bool = False  # rank 0 merge-patches ScaleTrial.status through the API
    repeat: int = 0  # repeat index; the seed offset is the caller's business
    # --- workload ---
    model: str = "linear"  # linear | mlp | cnn
    dataset: str = "lab1-line"  # lab1-line | regression | digits | synthetic-images
    dataset_size: int = 100  # examples (lab1-line: the lab's n = 100)
    seed: int = 0  # data + init seed; lab1-line: the lab's np.random.seed(S)
    data_w: float = 10.0  # lab1-line generator slope w_gen (lab: 10)
    data_b: float = 2.0  # lab1-line generator intercept b_gen (lab: 2)
    data_noise: float = 1.0  # lab1-line std of the noise added to x; regression: std of y noise
    features: int = 100  # regression: dimension d
    image_size: int = 32  # synthetic-images: height = width, 3 channels
    num_classes: int = 10  # synthetic-images: classes
    hidden_units: int = 128  # mlp: units per hidden layer
    hidden_layers: int = 2  # mlp: hidden layers
    cnn_arch: str = "resnet-small"  # cnn: resnet-small (3 residual stages) | resnet50 (Keras)
    test_fraction: float = 0.2  # digits: held-out share for test accuracy
    # --- optimisation ---
    batch_size: int = 100  # GLOBAL batch per optimizer step; each of N processes takes B/N
    optimizer: str = "sgd"  # sgd | momentum | adam | lars | lamb
    learning_rate: float = 0.001  # base rate η, tuned at reference_batch_size (lab: 0.001)
    reference_batch_size: int = 100  # B0, the batch η was tuned at
    lr_scaling: str = "none"  # none: η; linear: η·B/B0 (Goyal 2017); sqrt: η·√(B/B0) (Hoffer 2017)
    warmup_epochs: float = 0.0  # gradual linear warmup from η to the scaled rate (Goyal 2017)
    momentum: float = 0.9  # momentum, lars: heavy-ball coefficient; adam, lamb: β1
    beta2: float = 0.999  # adam, lamb: second-moment decay
    epsilon: float = 1e-6  # adam, lamb: denominator guard (LAMB paper: 1e-6)
    weight_decay: float = 0.0  # lars, lamb: decoupled weight decay λ inside the trust ratio
    trust_coefficient: float = 0.001  # lars: η_LARS in the local-lr formula (You et al. 2017)
    # --- stopping ---
    max_epochs: int = 1000  # epoch cap (lab: 1000)
    relative_tolerance: float = 0.001  # stop when |L_i-L_{i-1}|/L_{i-1} < T (lab: 1e-3); 0 = off
    stopping_loss: str = "full"  # which L the rule reads: full-dataset at epoch end | update mean
    target_loss: float | None = None  # steps-/epochs-/seconds-to-target on the full-dataset loss
    divergence_factor: float = 1e4  # diverged when a loss exceeds this × the initial loss
    shuffle: bool = False  # reshuffle every epoch, same permutation on every rank (lab: off)
    # --- measurement ---
    gradient_noise_scale: bool = True  # two-batch B_simple estimate (McCandlish 2018, App. A)
    steps_per_call: int = 0  # steps run inside one tf.function call; 0 = auto (see train.py)
    throughput_skip_steps: int = 10  # steady state: steps excluded from throughput (Horovod: 10)
    intra_op_threads: int = 0  # TensorFlow intra-op threads per process; 0 = TF's default
    metrics_port: int = 0  # each rank serves /metrics on port + local rank; 0 = off
    progress_interval_seconds: float = 2.0  # rate limit of ScaleTrial status patches
    export_data: str | None = None  # write the exact dataset used (.npz)
    loss_surface_points: int = 0  # linear 1-D: loss on a K×K (w, b) grid in the result; 0 = off
    record_update_losses: bool = False  # every update's loss in result curves (lab's plot)

    def as_dict(self) -> dict[str, Any]:
        """Every field, camelCase, as written into events and results."""
        return {_camel(f.name): getattr(self, f.name) for f in dataclasses.fields(self)}


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(p.capitalize() for p in rest)


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


_CHOICES: dict[str, tuple[str, ...]] = {
    "model": MODELS,
    "dataset": DATASETS,
    "optimizer": OPTIMIZERS,
    "lr_scaling": LR_SCALINGS,
    "stopping_loss": STOPPING_LOSSES,
    "cnn_arch": CNN_ARCHS,
}

_HELP: dict[str, str] = {
    "experiment": "experiment name (metric label, status target)",
    "trial": "trial name (metric label, ScaleTrial name in a cluster)",
    "namespace": "namespace of the ScaleTrial; with --report-status enables status patches",
    "report_status": "rank 0 merge-patches ScaleTrial.status (in-cluster config or KUBECONFIG)",
    "repeat": "repeat index (metric label)",
    "dataset_size": "examples (lab1-line: the lab's n)",
    "seed": "data and initialisation seed (lab1-line: equals the lab's np.random.seed(S))",
    "data_w": "lab1-line generator slope w_gen",
    "data_b": "lab1-line generator intercept b_gen",
    "data_noise": "lab1-line: std of the noise added to x; regression: std of the noise on y",
    "features": "regression: dimension d",
    "batch_size": "GLOBAL batch per optimizer step; each of N processes takes B/N of it",
    "learning_rate": "base rate, tuned at --reference-batch-size",
    "reference_batch_size": "batch the base rate was tuned at",
    "lr_scaling": "rate at B: none η, linear η·B/B0, sqrt η·√(B/B0)",
    "warmup_epochs": "gradual linear warmup from η to the scaled rate (Goyal et al. 2017)",
    "relative_tolerance": "stop when |L_i-L_{i-1}|/L_{i-1} < T (i >= 1); 0 = off",
    "stopping_loss": "loss the relative rule reads: full (dataset loss at epoch end) or update "
    "(mean of the epoch's per-update losses, the lab's rule)",
    "target_loss": "steps-/epochs-/seconds-to-target on the full-dataset loss",
    "divergence_factor": "a loss above this times the initial loss ends the trial as Diverged",
    "shuffle": "reshuffle each epoch (same permutation on every rank)",
    "gradient_noise_scale": "estimate B_simple with the two-batch estimator",
    "steps_per_call": "optimizer steps per tf.function call; 0 = auto (linear: a whole epoch)",
    "throughput_skip_steps": "first steps excluded from throughput (steady state)",
    "metrics_port": "each rank serves /metrics on P + local rank; 0 = off",
    "progress_interval_seconds": "rate limit of status patches",
    "export_data": "write the exact dataset used (.npz)",
    "loss_surface_points": "linear 1-D: K×K loss surface over (w, b) in the result; 0 = off",
    "record_update_losses": "every update's loss (before the update) in curves.updateLosses",
}


def build_parser() -> argparse.ArgumentParser:
    """The trial command line: one flag per `TrialConfig` field, defaults from the dataclass."""
    p = argparse.ArgumentParser(
        prog="python -m scalelab_trainer",
        description="Run one scalelab trial (or several, --trial-list) under Horovod.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    for f in dataclasses.fields(TrialConfig):
        flag, default = _flag(f.name), f.default
        help_ = _HELP.get(f.name, f.name.replace("_", " "))
        if f.type == "bool":
            p.add_argument(
                flag,
                dest=f.name,
                action=argparse.BooleanOptionalAction,
                default=default,
                help=help_,
            )
            continue
        kind: type[Any] = {"int": int, "float": float, "float | None": float}.get(str(f.type), str)
        p.add_argument(
            flag, dest=f.name, type=kind, default=default, choices=_CHOICES.get(f.name), help=help_
        )
    p.add_argument(
        "--trial-list",
        dest="trial_list",
        default=None,
        help="JSON array of argv lists: several trials in one process",
    )
    return p


def parse_config(argv: Sequence[str]) -> TrialConfig:
    """Parse one trial's flags (no --trial-list) and validate them."""
    ns = build_parser().parse_args(list(argv))
    if ns.trial_list is not None:
        raise ValueError("--trial-list cannot be nested inside a trial list")
    values = {f.name: getattr(ns, f.name) for f in dataclasses.fields(TrialConfig)}
    return validate(TrialConfig(**values))


def validate(cfg: TrialConfig) -> TrialConfig:
    """Refuse configurations that cannot run, with a message a person can act on."""
    pairs = {
        "linear": ("lab1-line", "regression"),
        "mlp": ("digits", "regression"),
        "cnn": ("synthetic-images",),
    }
    if cfg.dataset not in pairs[cfg.model]:
        raise ValueError(
            f"model {cfg.model} needs dataset in {pairs[cfg.model]}, not {cfg.dataset}"
        )
    for name in ("dataset_size", "batch_size", "reference_batch_size", "max_epochs"):
        if getattr(cfg, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 1")
    if cfg.learning_rate <= 0:
        raise ValueError("--learning-rate must be > 0")
    if cfg.warmup_epochs < 0 or cfg.relative_tolerance < 0:
        raise ValueError("--warmup-epochs and --relative-tolerance must be >= 0")
    return cfg
