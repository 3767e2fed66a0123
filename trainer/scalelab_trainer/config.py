"""The one trial configuration: every default with its one description (its --help text), filled
from the command line.

`TrialConfig` is what `python -m scalelab_trainer` runs and what every `start` and `result` event
carries back (`as_dict`). The flag names are the trial contract (docs/trial-contract.md) that the
control plane's planner renders, so renaming one breaks the planner.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

SCHEMA = "scalelab.trainer/v1"

MODELS = ("linear", "mlp", "cnn", "custom")
DATASETS = ("lab1-line", "regression", "digits", "synthetic-images", "custom")
OPTIMIZERS = ("sgd", "momentum", "adam", "lars", "lamb")
LR_SCALINGS = ("none", "linear", "sqrt")
STOPPING_LOSSES = ("full", "update")
CNN_ARCHS = ("resnet-small", "resnet50")
PRECISIONS = ("off", "float16", "bfloat16")

#: The examples of a built-in dataset without --dataset-size (lab1-line: the lab's n = 100).
DEFAULT_DATASET_SIZE = 100


def _flag_field(default: Any, help_: str) -> Any:
    """A TrialConfig field: its default and the one text that documents it (its --help)."""
    return dataclasses.field(default=default, metadata={"help": help_})


@dataclass(frozen=True)
class TrialConfig:
    """One trial: model, data, global batch, learning-rate rule, stopping rule, identity."""

    # --- identity (metric labels, status target) ---
    experiment: str = _flag_field("local", "experiment name (metric label, status target)")
    trial: str = _flag_field("trial", "trial name (metric label, ScaleTrial name in a cluster)")
    namespace: str | None = _flag_field(
        None, "namespace of the ScaleTrial; with --report-status enables status patches"
    )
    report_status: bool = _flag_field(
        False, "rank 0 merge-patches ScaleTrial.status (in-cluster config or KUBECONFIG)"
    )
    store_results: bool = _flag_field(
        False,
        "rank 0 keeps the trial's events (and the --export-data file) in a ConfigMap owned by "
        "its ScaleTrial, compressed (with --report-status)",
    )
    repeat: int = _flag_field(0, "repeat index (metric label)")
    # --- workload ---
    model: str = _flag_field(
        "linear", "linear | mlp | cnn | custom (a user workload, --entry-point; plugin.py)"
    )
    dataset: str = _flag_field(
        "lab1-line", "lab1-line | regression | digits | synthetic-images | custom (the plugin's)"
    )
    entry_point: str | None = _flag_field(
        None, "custom: module:function returning a scalelab_trainer.plugin.Workload"
    )
    workload_parameters: str = _flag_field(
        "{}", "custom: JSON object handed to the entry point as ctx.parameters"
    )
    dataset_size: int | None = _flag_field(
        None,
        f"examples; absent: {DEFAULT_DATASET_SIZE} for a built-in dataset (lab1-line: the lab's "
        "n), every example a custom workload provides",
    )
    seed: int = _flag_field(
        0, "data and initialisation seed (lab1-line: equals the lab's np.random.seed(S))"
    )
    data_w: float = _flag_field(10.0, "lab1-line generator slope w_gen")
    data_b: float = _flag_field(2.0, "lab1-line generator intercept b_gen")
    data_noise: float = _flag_field(
        1.0, "lab1-line: std of the noise added to x; regression: std of the noise on y"
    )
    features: int = _flag_field(100, "regression: dimension d")
    image_size: int = _flag_field(32, "synthetic-images: height = width, 3 channels")
    num_classes: int = _flag_field(10, "synthetic-images: classes")
    hidden_units: int = _flag_field(128, "mlp: units per hidden layer")
    hidden_layers: int = _flag_field(2, "mlp: hidden layers")
    cnn_arch: str = _flag_field(
        "resnet-small", "cnn: resnet-small (3 residual stages) | resnet50 (Keras)"
    )
    test_fraction: float = _flag_field(0.2, "digits: held-out share for test accuracy")
    # --- optimisation ---
    batch_size: int = _flag_field(
        100, "GLOBAL batch per optimizer step; each of N processes takes B/N of it"
    )
    optimizer: str = _flag_field("sgd", "sgd | momentum | adam | lars | lamb")
    learning_rate: float = _flag_field(
        0.001, "base rate η, tuned at --reference-batch-size (lab: 0.001)"
    )
    reference_batch_size: int = _flag_field(100, "batch the base rate was tuned at")
    lr_scaling: str = _flag_field(
        "none", "rate at B: none η, linear η·B/B0 (Goyal 2017), sqrt η·√(B/B0) (Hoffer 2017)"
    )
    warmup_epochs: float = _flag_field(
        0.0, "gradual linear warmup from η to the scaled rate (Goyal et al. 2017)"
    )
    momentum: float = _flag_field(0.9, "momentum, lars: heavy-ball coefficient; adam, lamb: β1")
    beta2: float = _flag_field(0.999, "adam, lamb: second-moment decay")
    epsilon: float = _flag_field(1e-6, "adam, lamb: denominator guard (LAMB paper: 1e-6)")
    weight_decay: float = _flag_field(
        0.0, "lars, lamb: decoupled weight decay λ inside the trust ratio"
    )
    trust_coefficient: float = _flag_field(
        0.001, "lars: η_LARS in the local-lr formula (You et al. 2017)"
    )
    # --- compute: precision, compilation, devices ---
    mixed_precision: str = _flag_field(
        "off",
        "off | float16 | bfloat16: Keras models compute in it with float32 variables, float16 "
        "with dynamic loss scaling (precision.py); the float64 linear model is unaffected",
    )
    jit_compile: bool = _flag_field(
        False, "compile each step's forward and backward pass with XLA (the allreduce stays out)"
    )
    gpus_per_process: int = _flag_field(
        0,
        "GPUs this process was given, 0 or 1: with 1, a process whose TensorFlow sees no GPU "
        "for it fails at start instead of measuring the CPU (devices.py; CPU-backed test GPUs "
        "that declare themselves in SCALELAB_FAKE_GPUS are accepted)",
    )
    # --- stopping ---
    max_epochs: int = _flag_field(1000, "epoch cap (lab: 1000)")
    relative_tolerance: float = _flag_field(
        0.001, "stop when |L_i-L_{i-1}|/L_{i-1} < T (i >= 1; lab: 1e-3); 0 = off"
    )
    stopping_loss: str = _flag_field(
        "full",
        "loss the relative rule reads: full (dataset loss at epoch end) or update (mean of "
        "the epoch's per-update losses, the lab's rule)",
    )
    target_loss: float | None = _flag_field(
        None, "steps-/epochs-/seconds-to-target on the full-dataset loss"
    )
    divergence_factor: float = _flag_field(
        1e4, "a loss above this times the initial loss ends the trial as Diverged"
    )
    shuffle: bool = _flag_field(
        False, "reshuffle each epoch, same permutation on every rank (lab: off)"
    )
    # --- measurement ---
    gradient_noise_scale: bool = _flag_field(True, "estimate B_simple with the two-batch estimator")
    noise_window_epochs: float = _flag_field(
        1.0, "B_simple smoothing: time constant of the moving averages in epochs; 0 = all steps"
    )
    steps_per_call: int = _flag_field(
        0, "optimizer steps per tf.function call; 0 = auto (linear: a whole epoch)"
    )
    throughput_skip_steps: int = _flag_field(
        10, "first steps excluded from throughput (steady state)"
    )
    intra_op_threads: int = _flag_field(
        0, "TensorFlow intra-op threads per process; 0 = TF's default"
    )
    metrics_port: int = _flag_field(0, "each rank serves /metrics on P + local rank; 0 = off")
    progress_interval_seconds: float = _flag_field(2.0, "rate limit of status patches")
    progress_seconds: float = _flag_field(
        60.0,
        "a `progress` event (and its status patch) every S seconds inside a long epoch, so an "
        "epoch longer than the operator's stall threshold is not taken for a stall; 0 = off",
    )
    export_data: str | None = _flag_field(None, "write the exact dataset used (.npz)")
    loss_surface_points: int = _flag_field(
        0, "linear 1-D: K×K loss surface over (w, b) in the result; 0 = off"
    )
    record_update_losses: bool = _flag_field(
        False, "every update's loss (before the update) in curves.updateLosses"
    )

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
    "mixed_precision": PRECISIONS,
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
        help_ = f.metadata["help"]
        if f.type == "bool":
            p.add_argument(
                flag,
                dest=f.name,
                action=argparse.BooleanOptionalAction,
                default=default,
                help=help_,
            )
            continue
        kinds = {"int": int, "int | None": int, "float": float, "float | None": float}
        kind: type[Any] = kinds.get(str(f.type), str)
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
    """Refuse configurations that cannot run, with a message a person can act on; a built-in
    dataset without --dataset-size gets DEFAULT_DATASET_SIZE (a custom one keeps None: all)."""
    pairs = {
        "linear": ("lab1-line", "regression"),
        "mlp": ("digits", "regression"),
        "cnn": ("synthetic-images",),
        "custom": ("custom",),
    }
    if cfg.dataset not in pairs[cfg.model]:
        raise ValueError(
            f"model {cfg.model} needs dataset in {pairs[cfg.model]}, not {cfg.dataset}"
        )
    _validate_custom(cfg)
    for name in ("dataset_size", "batch_size", "reference_batch_size", "max_epochs"):
        value = getattr(cfg, name)
        if value is not None and value < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 1")
    if cfg.learning_rate <= 0:
        raise ValueError("--learning-rate must be > 0")
    if cfg.gpus_per_process not in (0, 1):
        raise ValueError(
            "--gpus-per-process must be 0 or 1: Horovod runs one process per GPU, so a trial of "
            "G GPUs runs G processes"
        )
    if cfg.warmup_epochs < 0 or cfg.relative_tolerance < 0:
        raise ValueError("--warmup-epochs and --relative-tolerance must be >= 0")
    if cfg.dataset_size is None and cfg.dataset != "custom":
        # Resolved here so that events and results name the size a built-in trial used.
        return dataclasses.replace(cfg, dataset_size=DEFAULT_DATASET_SIZE)
    return cfg


def _validate_custom(cfg: TrialConfig) -> None:
    if (cfg.model == "custom") != (cfg.entry_point is not None):
        raise ValueError("--entry-point module:function goes with --model custom, and only with it")
    try:
        params = json.loads(cfg.workload_parameters)
    except json.JSONDecodeError as e:
        raise ValueError(f"--workload-parameters is not JSON: {e}") from None
    if not isinstance(params, dict):
        raise ValueError("--workload-parameters must be a JSON object")
