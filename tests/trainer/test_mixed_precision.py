"""Mixed precision and XLA in real trainer processes on the CPU: the noise-scale estimate stays
the float32 one, trials on two Horovod processes complete with their precision recorded and the
emulation said, and a trial that asks for a GPU the machine lacks fails at start with the reason
(or takes the CPU-backed test GPUs that declare themselves, one per rank)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from scalelab_trainer import precision
from tests.trainer.trainer_run import Run, run_trainer

pytestmark = pytest.mark.horovod

#: A linear model in float32 (a Keras Dense layer, no hidden layer) at a fixed θ: a rate of
#: 1e-12 leaves the weights where they start while 2,000 batches of 10 are drawn.
LINEAR_FIXED_THETA = [
    "--model", "mlp", "--hidden-layers", "0", "--dataset", "regression", "--features", "10",
    "--dataset-size", "20000", "--batch-size", "10", "--learning-rate", "1e-12",
    "--max-epochs", "1", "--shuffle", "--relative-tolerance", "0", "--steps-per-call", "100",
    "--noise-window-epochs", "0",
]  # fmt: skip
#: float16 moves B_simple by about 0.2% here (its rounding, and the few steps whose scaled
#: gradient overflowed and were skipped), bfloat16 by less than 0.01%: 2% leaves room for a
#: different draw without letting a wrong estimator (a factor from the loss scale, a float16
#: square overflowing) through.
NOISE_TOLERANCE = 0.02


@pytest.fixture(scope="module")
def noise(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, object]]:
    trials = [["--trial", m, *LINEAR_FIXED_THETA, "--mixed-precision", m]
              for m in ("off", "float16", "bfloat16")]  # fmt: skip
    path = Path(tmp_path_factory.mktemp("precision")) / "trials.json"
    path.write_text(json.dumps(trials))
    run = run_trainer(["--trial-list", str(path)], timeout=600)
    assert run.code == 0, run.stderr[-3000:]
    return {r["trial"]: r for r in run.of("result")}


@pytest.mark.parametrize("mode", ["float16", "bfloat16"])
def test_noise_scale_under_mixed_precision_is_finite_and_the_float32_estimate(
    noise: dict[str, dict[str, object]], mode: str
) -> None:
    low, full = noise[mode], noise["off"]
    assert low["precision"] == {
        "mixedPrecision": mode,
        "compute": mode,
        "emulated": True,
        "lossScale": low["precision"]["lossScale"],  # type: ignore[index]
    }
    value, reference = low["gradientNoiseScale"], full["gradientNoiseScale"]
    assert isinstance(value, float)
    assert isinstance(reference, float)
    assert value == pytest.approx(reference, rel=NOISE_TOLERANCE)
    assert abs(value - reference) < full["gradientNoiseScaleStderr"]  # type: ignore[operator]


def test_float16_scales_its_loss_dynamically_and_bfloat16_needs_no_scale(
    noise: dict[str, dict[str, object]],
) -> None:
    scale = noise["float16"]["precision"]["lossScale"]  # type: ignore[index]
    # Squared errors of ~10 overflow float16 at 2^15: the scale came down, and stayed >= 1.
    assert 1.0 <= scale < precision.INITIAL_SCALE
    assert noise["bfloat16"]["precision"]["lossScale"] is None  # type: ignore[index]
    assert noise["off"]["precision"]["compute"] == "float32"  # type: ignore[index]


DIGITS = ["--model", "mlp", "--dataset", "digits", "--dataset-size", "256", "--batch-size", "32",
          "--learning-rate", "0.05", "--optimizer", "momentum", "--max-epochs", "3"]  # fmt: skip


def test_mixed_precision_and_xla_trials_complete_on_two_processes_with_emulation_said(
    tmp_path: Path,
) -> None:
    trials = {
        "f16-xla": ["--mixed-precision", "float16", "--jit-compile"],
        "bf16": ["--mixed-precision", "bfloat16"],
        "xla": ["--jit-compile"],
        "linear-f16": ["--model", "linear", "--dataset", "lab1-line", "--mixed-precision",
                       "float16", "--max-epochs", "5", "--learning-rate", "0.001"],
    }  # fmt: skip
    path = tmp_path / "trials.json"
    path.write_text(json.dumps([["--trial", k, *DIGITS, *v] for k, v in trials.items()]))
    run = run_trainer(["--trial-list", str(path)], np=2, timeout=600)
    assert run.code == 0, run.stderr[-3000:]
    results = {r["trial"]: r for r in run.of("result")}
    for name, r in results.items():
        assert r["phase"] == "Succeeded", (name, r["reason"])
        assert r["processes"] == 2
        assert r["steps"] > 0
        assert r["samplesPerSecond"] > 0
    assert results["f16-xla"]["config"]["jitCompile"] is True
    for name in ("f16-xla", "bf16"):
        assert results[name]["precision"]["emulated"] is True
        assert any("ran in emulation on the CPU" in w for w in results[name]["warnings"])
    assert results["xla"]["precision"]["compute"] == "float32"
    assert not results["xla"]["warnings"]
    linear = results["linear-f16"]
    assert linear["precision"]["compute"] == "float64"
    assert any("does not apply to the linear model" in w for w in linear["warnings"])


def _required(env: dict[str, str] | None) -> tuple[Run, float]:
    t0 = time.monotonic()
    run = run_trainer(["--gpus-per-process", "1", "--max-epochs", "2"], np=2, env=env)
    return run, time.monotonic() - t0


def test_a_trial_asking_for_gpus_where_tensorflow_sees_none_fails_at_start_with_the_reason() -> (
    None
):
    run, seconds = _required(None)
    assert run.code == 1
    result = run.result
    assert result["phase"] == "Failed"
    assert result["steps"] == 0
    assert "sees no GPU" in result["reason"]
    assert "rather than measuring the CPU" in result["reason"]
    assert not run.of("epoch")
    assert seconds < 60


def test_declared_cpu_backed_test_gpus_are_given_one_per_rank_and_named_in_the_result() -> None:
    run, _ = _required({"SCALELAB_FAKE_GPUS": "fake-gpu-0,fake-gpu-1"})
    assert run.code == 0, run.stderr[-3000:]
    device = run.result["device"]
    assert device["kind"] == "fake-gpu"
    given = [r["device"] for r in device["ranks"]]
    assert given == ["fake-gpu-0", "fake-gpu-1"]
    assert all(r["seen"] == given for r in device["ranks"])  # none allocated and left unused
    assert run.start["device"] == device
