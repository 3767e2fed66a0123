"""The trial command line keeps the contract: flags, one process for a trial list, failures as
results, SIGTERM as a partial result with exit code 143."""

from __future__ import annotations

import dataclasses
import json
import signal
import subprocess
import time
from pathlib import Path

import pytest

from scalelab_trainer.__main__ import needs_teardown
from scalelab_trainer.config import TrialConfig, build_parser, parse_config
from tests.harness.horovod import quiet_env
from tests.trainer.trainer_run import MODULE, parse_events, run_trainer

pytestmark = pytest.mark.horovod

CONTRACT = Path(__file__).parents[2] / "docs" / "trial-contract.md"


def test_every_config_field_is_a_documented_flag_in_the_contract() -> None:
    help_text = build_parser().format_help()
    contract = CONTRACT.read_text()
    for name in TrialConfig.__dataclass_fields__:
        flag = "--" + name.replace("_", "-")
        assert flag in help_text
        assert f"`{flag}" in contract, f"{flag} missing from docs/trial-contract.md"


def test_defaults_are_the_labs_values() -> None:
    cfg = parse_config([])
    assert (cfg.dataset_size, cfg.data_w, cfg.data_b, cfg.data_noise) == (100, 10, 2, 1)
    assert (cfg.learning_rate, cfg.relative_tolerance, cfg.max_epochs) == (0.001, 0.001, 1000)
    assert (cfg.batch_size, cfg.shuffle, cfg.model, cfg.dataset) == (
        100,
        False,
        "linear",
        "lab1-line",
    )


def test_trial_list_runs_each_trial_in_one_process_and_invalid_ones_fail_as_results(
    tmp_path: Path,
) -> None:
    trials = [
        ["--trial", "a", "--max-epochs", "2"],
        ["--trial", "bad", "--model", "cnn", "--dataset", "lab1-line"],
        ["--trial", "c", "--max-epochs", "3", "--batch-size", "50"],
    ]
    path = tmp_path / "trials.json"
    path.write_text(json.dumps(trials))
    run = run_trainer(["--trial-list", str(path)])
    assert run.code == 1  # one trial failed
    results = {e["trial"]: e for e in run.of("result")}
    assert results["a"]["phase"] == "Succeeded"
    assert results["a"]["epochs"] == 2
    assert results["c"]["phase"] == "Succeeded"
    assert results["c"]["steps"] == 6
    assert results["bad"]["phase"] == "Failed"
    assert "needs dataset" in results["bad"]["reason"]
    assert run.of("error", "bad")[0]["type"] == "ValueError"
    assert {e["schema"] for e in run.events} == {"scalelab.trainer/v1"}
    assert [e["trial"] for e in run.of("start")] == ["a", "c"]
    assert results["c"]["config"]["batchSize"] == 50


def test_sigterm_during_training_writes_a_partial_result_and_exits_143() -> None:
    argv = [
        *MODULE,
        "--trial",
        "long",
        "--batch-size",
        "1",
        "--relative-tolerance",
        "0",
        "--max-epochs",
        "100000",
    ]
    proc = subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=quiet_env()
    )
    assert proc.stdout is not None
    lines = []
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        lines.append(line)
        if '"event":"epoch"' in line and '"epoch":3,' in line:
            break
    proc.send_signal(signal.SIGTERM)
    rest, _ = proc.communicate(timeout=60)
    assert proc.returncode == 143
    result = parse_events("".join(lines) + rest)[-1]
    assert result["event"] == "result"
    assert result["interrupted"] is True
    assert result["phase"] == "Failed"
    assert "SIGTERM" in result["reason"]
    assert 3 <= result["epochs"] < 100000
    assert len(result["curves"]["epochLoss"]) == result["epochs"]


def test_status_reporting_to_an_unreachable_cluster_never_stops_training(tmp_path: Path) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "current-context": "c",
                "clusters": [{"name": "k", "cluster": {"server": "https://127.0.0.1:9"}}],
                "contexts": [{"name": "c", "context": {"cluster": "k", "user": "u"}}],
                "users": [{"name": "u", "user": {"token": "t"}}],
            }
        )
    )
    r = subprocess.run(
        [
            *MODULE,
            "--trial",
            "st",
            "--namespace",
            "ns",
            "--report-status",
            "--max-epochs",
            "3",
            "--progress-interval-seconds",
            "0",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env=quiet_env({"KUBECONFIG": str(kubeconfig)}),
    )
    assert r.returncode == 0
    assert parse_events(r.stdout)[-1]["phase"] == "Succeeded"
    assert r.stderr.count("status patch failed") == 4  # 3 progress patches + the result


def test_the_same_command_line_runs_under_mpirun_as_under_horovodrun() -> None:
    args = ["--trial", "mpi", "--batch-size", "10", "--max-epochs", "2"]
    # No core binding and no busy polling: on a shared 2-core machine either costs ~4x.
    mpirun = ["mpirun", "--allow-run-as-root", "-np", "2", "--bind-to", "none", "--mca",
              "mpi_yield_when_idle", "1", "-x", "TF_CPP_MIN_LOG_LEVEL"]  # fmt: skip
    r = subprocess.run(
        [*mpirun, *MODULE, *args],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
        env=quiet_env(),
    )
    assert r.returncode == 0, r.stderr[-3000:]
    under_mpi = parse_events(r.stdout)[-1]
    alone = run_trainer(args).result
    assert under_mpi["processes"] == 2
    assert alone["processes"] == 1
    assert under_mpi["params"]["w"] == pytest.approx(alone["params"]["w"], rel=1e-6)
    assert under_mpi["params"]["b"] == pytest.approx(alone["params"]["b"], rel=1e-6)


def test_a_process_alone_ends_without_teardown_and_loses_no_line(tmp_path: Path) -> None:
    # stdout a regular file: block-buffered, so a line not flushed before os._exit would be lost.
    out = tmp_path / "events.jsonl"
    trials = [["--trial", "a", "--max-epochs", "2"], ["--trial", "b", "--max-epochs", "3"]]
    (tmp_path / "trials.json").write_text(json.dumps(trials))
    with out.open("w") as f:
        code = subprocess.run(
            [*MODULE, "--trial-list", str(tmp_path / "trials.json")],
            stdout=f,
            stderr=subprocess.DEVNULL,
            timeout=120,
            check=False,
            env=quiet_env(),
        ).returncode
    events = parse_events(out.read_text())
    assert code == 0
    assert [e["trial"] for e in events if e["event"] == "result"] == ["a", "b"]
    assert [e["epoch"] for e in events if e["event"] == "epoch" and e["trial"] == "b"] == [1, 2, 3]


@pytest.mark.parametrize(
    ("models", "size", "serving", "needed"),
    [
        (["linear", "mlp"], 1, False, False),
        (["linear"], 2, False, True),  # Horovod's own shutdown at exit
        (["linear"], 1, True, True),  # the last scrape of a finished trial
        (["linear", "custom"], 1, False, True),  # a team's plugin may rely on atexit
    ],
)
def test_only_a_process_alone_with_our_models_skips_the_teardown(
    models: list[str], size: int, serving: bool, needed: bool
) -> None:
    configs: list[TrialConfig | Exception] = [
        dataclasses.replace(parse_config([]), model=m) for m in models
    ]
    configs.append(ValueError("an invalid trial fails as a result either way"))
    assert needs_teardown(configs, size, serving_metrics=serving) is needed
