"""`scalelab run` end to end with the real trainer (TensorFlow + Horovod over Gloo on the CPU).

Every test drives the `scalelab` command as a user would and reads what it leaves in --out:
results.json, results.csv, report.html (opened in headless Chromium), and the trainer processes
it must not leave behind.
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.harness.ports import free_ports, listenable

pytestmark = pytest.mark.horovod

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]


def scalelab(
    *args: str, env: dict[str, str] | None = None, **kw: Any
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "scalelab", *args],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        env=env,
        **kw,
    )


def results(out: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((out / "results.json").read_text())
    return data


def by_name(out: Path) -> dict[str, dict[str, Any]]:
    return {t["name"]: t for t in results(out)["trials"]}


def write_experiment(path: Path, name: str, **spec: Any) -> Path:
    doc = {"apiVersion": "scalelab.dev/v1alpha1", "kind": "ScaleExperiment",
           "metadata": {"name": name}, "spec": spec}  # fmt: skip
    path.write_text(yaml.safe_dump(doc))
    return path


def images_loaded_in_chromium(report: Path) -> tuple[int, int]:
    """(images, images with naturalWidth > 0) after Chromium loaded a copy of the report."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    assert chromium, "chromium is required (apt-get install -y chromium)"
    probe = report.with_name("report-probe.html")
    script = (
        "<script>window.addEventListener('load', () => { const all = [...document.images];"
        " document.body.setAttribute('data-images', all.length + ':' +"
        " all.filter(i => i.complete && i.naturalWidth > 0).length); });</script>"
    )
    probe.write_text(report.read_text().replace("</body>", script + "</body>"))
    with tempfile.TemporaryDirectory() as profile:
        dom = subprocess.run(
            [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--virtual-time-budget=10000",
             "--dump-dom", probe.as_uri()],
            capture_output=True, text=True, timeout=120, check=False,
        ).stdout  # fmt: skip
    probe.unlink()
    marker = dom.split('data-images="', 1)[1].split('"', 1)[0]
    total, loaded = marker.split(":")
    return int(total), int(loaded)


@pytest.fixture(scope="module")
def lab1(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[Path, subprocess.CompletedProcess[str], float]:
    out = tmp_path_factory.mktemp("lab1") / "out"
    began = time.monotonic()
    done = scalelab("run", str(EXAMPLES / "lab1-gd-vs-sgd.yaml"), "--out", str(out))
    return out, done, time.monotonic() - began


def test_the_lab1_example_runs_both_trials_in_one_trainer_process(
    lab1: tuple[Path, subprocess.CompletedProcess[str], float],
) -> None:
    out, done, _ = lab1
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    assert f"report: {out / 'report.html'}" in done.stdout
    data = results(out)
    assert data["schemaVersion"] == "scalelab.results/v1"
    assert data["experiment"] == "lab1-gd-vs-sgd"
    assert data["spec"]["sweep"]["batchSizes"] == [100, 1]
    assert [g["trials"] for g in data["groups"]] == [2]  # one launch paid start-up for both
    assert data["groups"][0]["startupSeconds"] > 0


def test_lab1_results_carry_params_optimum_curves_and_the_slow_mode_warning(
    lab1: tuple[Path, subprocess.CompletedProcess[str], float],
) -> None:
    out, _, _ = lab1
    trials = by_name(out)
    gd, sgd = trials["lab1-gd-vs-sgd-b100-g1"], trials["lab1-gd-vs-sgd-b1-g1"]
    for trial in (gd, sgd):
        assert trial["phase"] == "Succeeded"
        assert trial["reason"].startswith("converged")
        assert set(trial["params"]) >= {"w", "b"}
        assert set(trial["optimum"]) >= {"w", "b", "loss"}
        assert len(trial["curves"]["epochLoss"]) == trial["epochs"]
        assert len(trial["curves"]["params"]) == trial["epochs"]
        assert trial["finalLoss"] == pytest.approx(trial["curves"]["epochLoss"][-1])
        assert trial["samplesPerSecond"] > 0
        assert trial["scalingEfficiency"] == pytest.approx(1.0)
        assert trial["scalingEfficiencyKind"] == "strong"
        assert trial["dataFile"] == f"data/{trial['name']}.npz"
        # No queue here: admitted as created (the trainer's start event), waited 0 s.
        assert trial["queueSeconds"] == 0.0
        times = trial["times"]
        assert times["created"] == times["admitted"] == times["running"] <= times["finished"]
    assert gd["steps"] == gd["epochs"]  # batch 100 of 100 examples: one step per epoch
    assert sgd["steps"] == 100 * sgd["epochs"]
    for trial in (gd, sgd):  # measurement.recordUpdateLosses: every update, from the real start
        assert trial["initialParams"] == {"w": 0.0, "b": 0.0}
        assert len(trial["curves"]["updateLosses"]) == trial["steps"]
        assert len(trial["curves"]["updateParams"]) == trial["steps"]
        last = trial["curves"]["params"][-1]
        assert trial["curves"]["updateParams"][-1] == [last["w"], last["b"]]
    assert gd["finalLoss"] < 1.05 * gd["optimum"]["loss"]
    assert any("slow mode" in w for w in gd["warnings"])
    csv = (out / "results.csv").read_text().splitlines()
    assert csv[0].startswith("name,batchSize,gpus,repeat,seed,learningRate,phase,reason,")
    assert [line.split(",")[0] for line in csv[1:]] == [gd["name"], sgd["name"]]


def test_the_lab1_report_is_self_contained_and_every_image_loads_in_chromium(
    lab1: tuple[Path, subprocess.CompletedProcess[str], float],
) -> None:
    out, _, _ = lab1
    report = out / "report.html"
    page = report.read_text()
    assert 'src="http' not in page
    assert "src='http" not in page
    for figure in ("lab-gd-loss-vs-epoch", "lab-sgd-loss-vs-update", "lab-trajectory-3d",
                   "loss-per-batch", "throughput-efficiency"):  # fmt: skip
        assert f'id="{figure}"' in page
        assert (out / "plots" / f"{figure}.png").read_bytes().startswith(b"\x89PNG")
    assert "Recommendation:" in page
    assert "stopping rule blind to slow mode" in page
    total, loaded = images_loaded_in_chromium(report)
    assert total == page.count("data:image/png;base64,") >= 6
    assert loaded == total


def test_scalelab_report_re_renders_from_results_json(
    lab1: tuple[Path, subprocess.CompletedProcess[str], float],
) -> None:
    out, _, _ = lab1
    (out / "report.html").unlink()
    shutil.rmtree(out / "plots")
    done = scalelab("report", str(out))
    assert done.returncode == 0, done.stderr
    assert (out / "report.html").stat().st_size > 10_000
    assert (out / "plots" / "lab-trajectory-3d.png").exists()


def test_rerunning_with_the_same_out_skips_finished_trials(
    lab1: tuple[Path, subprocess.CompletedProcess[str], float],
) -> None:
    out, _, _ = lab1
    before = by_name(out)
    groups = len(results(out)["groups"])
    done = scalelab("run", str(EXAMPLES / "lab1-gd-vs-sgd.yaml"), "--out", str(out), "--no-report")
    assert done.returncode == 0, done.stderr
    assert "resuming" in done.stdout
    assert "2 finished trial(s) kept" in done.stdout
    after = by_name(out)
    assert {n: t["finishedAt"] for n, t in after.items()} == {
        n: t["finishedAt"] for n, t in before.items()
    }
    assert len(results(out)["groups"]) == groups  # no trainer was launched


def test_the_horovod_example_splits_each_global_batch_over_two_processes(tmp_path: Path) -> None:
    out = tmp_path / "out"
    done = scalelab("run", str(EXAMPLES / "lab2-horovod.yaml"), "--out", str(out))
    assert done.returncode == 0, done.stderr
    trials = by_name(out)
    assert {t["phase"] for t in trials.values()} == {"Succeeded"}
    for batch in (32, 128):
        one, two = trials[f"lab2-horovod-b{batch}-g1"], trials[f"lab2-horovod-b{batch}-g2"]
        # N workers × B/N examples == 1 worker × B examples: the same optimisation.
        assert two["finalLoss"] == pytest.approx(one["finalLoss"], rel=1e-5)
        assert two["scalingEfficiency"] == pytest.approx(
            two["samplesPerSecond"] / (2 * one["samplesPerSecond"])
        )
    assert sorted(g["processes"] for g in results(out)["groups"]) == [1, 2]


def test_the_batch_size_example_shows_constant_steps_and_growing_epochs_to_target(
    tmp_path: Path,
) -> None:
    out = tmp_path / "out"
    done = scalelab("run", str(EXAMPLES / "lab1-batch-size.yaml"), "--out", str(out))
    assert done.returncode == 0, done.stderr
    reached = {t["batchSize"]: t for t in results(out)["trials"] if t["stepsToTarget"]}
    assert len(reached) >= 5
    steps = [reached[b]["stepsToTarget"] for b in sorted(reached)]
    assert max(steps) <= 1.25 * min(steps)
    epochs = [reached[b]["epochsToTarget"] for b in sorted(reached)]
    assert epochs == sorted(epochs)
    assert epochs[-1] >= 10 * epochs[0]
    assert 'id="steps-to-target"' in (out / "report.html").read_text()


def test_a_trainer_that_cannot_start_fails_every_trial_with_the_reason(tmp_path: Path) -> None:
    file = write_experiment(tmp_path / "x.yaml", "no-trainer",
                           sweep={"batchSizes": [100, 50]}, training={"maxEpochs": 2})  # fmt: skip
    python = shutil.which("python3", path="/usr/bin:/bin")
    assert python is not None
    assert Path(python).resolve() != Path(sys.executable).resolve()
    env = dict(os.environ, SCALELAB_TRAINER_PYTHON=python)
    done = scalelab("run", str(file), "--out", str(tmp_path / "out"), env=env)
    assert done.returncode == 1
    assert "Traceback" not in done.stdout + done.stderr
    for trial in by_name(tmp_path / "out").values():
        assert trial["phase"] == "Failed"
        assert "before starting" in trial["reason"]
        assert "No module named scalelab_trainer" in trial["reason"]


def test_a_diverging_learning_rate_gives_diverged_trials_and_the_sweep_goes_on(
    tmp_path: Path,
) -> None:
    file = write_experiment(tmp_path / "x.yaml", "diverge", sweep={"batchSizes": [100, 50]},
                            training={"learningRate": 0.05, "maxEpochs": 300})  # fmt: skip
    done = scalelab("run", str(file), "--out", str(tmp_path / "out"), "--no-report")
    assert done.returncode == 0, done.stderr
    phases = [t["phase"] for t in results(tmp_path / "out")["trials"]]
    assert phases == ["Diverged", "Diverged"]


def _ctrl_c_reaches_it() -> None:
    """Start a child as a shell starts a foreground job: SIGINT at its default action.

    A job started with `&` by a shell without job control (a CI script, `bash -c '... &'`)
    inherits SIGINT ignored, and Python keeps an ignored SIGINT ignored; without this, the
    Ctrl-C tests hang exactly when the suite itself runs in the background.
    """
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _kill_if_running(run: subprocess.Popen[str], out: Path) -> None:
    """After a failed assertion: no `scalelab run` or trainer of this test outlives it."""
    if run.poll() is None:
        run.kill()
        run.wait(timeout=30)
    for pid in _trainers_of(out):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _trainers_of(path: Path) -> list[int]:
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if str(path).encode() in cmdline.read_bytes():
                found.append(int(cmdline.parent.name))
        except OSError:
            continue
    return found


def test_ctrl_c_keeps_finished_trials_and_a_rerun_resumes_under_a_deadline(
    tmp_path: Path,
) -> None:
    out = tmp_path / "out"
    spec: dict[str, Any] = {
        # Batch 2 reaches the target in ~60 steps; batch 1 never does (SGD noise floor ~7% above
        # L*), so it runs until stopped.
        "sweep": {"batchSizes": [2, 1]},
        "training": {"maxEpochs": 100000, "convergence": {"relativeTolerance": 0},
                     "targetLoss": 104.2},
        "execution": {"activeDeadlineSeconds": 3600},
    }  # fmt: skip
    file = write_experiment(tmp_path / "x.yaml", "interrupt", **spec)
    run = subprocess.Popen(
        [sys.executable, "-m", "scalelab", "run", str(file), "--out", str(out)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        preexec_fn=_ctrl_c_reaches_it,  # noqa: PLW1509 (sets one signal disposition only)
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            time.sleep(0.5)
            if (out / "results.json").exists() and by_name(out)["interrupt-b2-g1"][
                "phase"
            ] != "Pending":
                break
        time.sleep(2)  # batch 1 is running now
        run.send_signal(signal.SIGINT)
        _, stderr = run.communicate(timeout=120)
    finally:
        _kill_if_running(run, out)
    assert run.returncode == 130, stderr
    assert "interrupted; 1 finished trial(s) kept" in stderr
    assert "Traceback" not in stderr
    trials = by_name(out)
    assert trials["interrupt-b2-g1"]["phase"] == "Succeeded"
    assert trials["interrupt-b1-g1"]["phase"] == "Pending"
    assert _trainers_of(out) == []  # no trainer outlived Ctrl-C

    finished_at = trials["interrupt-b2-g1"]["finishedAt"]
    # Not a trainer flag: finished trials stay valid. Long enough for a first epoch under load.
    spec["execution"]["activeDeadlineSeconds"] = 10
    write_experiment(file, "interrupt", **spec)
    done = scalelab("run", str(file), "--out", str(out), "--no-report")
    assert done.returncode == 1, done.stderr
    assert "1 finished trial(s) kept" in done.stdout
    trials = by_name(out)
    assert trials["interrupt-b2-g1"]["finishedAt"] == finished_at
    assert trials["interrupt-b1-g1"]["phase"] == "Failed"
    assert trials["interrupt-b1-g1"]["reason"] == "exceeded execution.activeDeadlineSeconds=10"
    assert trials["interrupt-b1-g1"]["epochs"] > 0  # the progress it made is kept
    assert _trainers_of(out) == []

    # A full disk (here: a file-size limit) stops the run with a message; nothing is lost.
    saved = (out / "results.json").read_bytes()

    def limit_file_size() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (1000, 1000))

    full = subprocess.run(
        [sys.executable, "-m", "scalelab", "run", str(file), "--out", str(out), "--retry-failed"],
        capture_output=True, text=True, timeout=120, preexec_fn=limit_file_size, check=False,
    )  # fmt: skip
    assert full.returncode == 1
    assert f"cannot write results to {out}: file size limit exceeded" in full.stderr
    assert "Traceback" not in full.stderr
    assert (out / "results.json").read_bytes() == saved
    assert [p.name for p in out.iterdir() if p.name.endswith(".tmp")] == []


def test_sigkill_mid_run_loses_no_finished_trial_and_the_rerun_redoes_none(tmp_path: Path) -> None:
    """`kill -9` of `scalelab run` (the OOM killer, a lost terminal): results.json is whole at
    every moment, the trainer it orphaned goes away, and the same command finishes the sweep
    without running a finished trial again."""
    out = tmp_path / "out"
    spec: dict[str, Any] = {
        "sweep": {"batchSizes": [2, 1]},  # as above: batch 2 finishes, batch 1 runs until stopped
        "training": {"maxEpochs": 100000, "convergence": {"relativeTolerance": 0},
                     "targetLoss": 104.2},
        "execution": {"activeDeadlineSeconds": 3600},
    }  # fmt: skip
    file = write_experiment(tmp_path / "x.yaml", "killed", **spec)
    run = subprocess.Popen(
        [sys.executable, "-m", "scalelab", "run", str(file), "--out", str(out), "--no-report"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    reads, deadline = 0, time.monotonic() + 300
    while time.monotonic() < deadline:
        if (out / "results.json").exists():
            reads += 1  # parses at every moment: written atomically
            if by_name(out)["killed-b2-g1"]["phase"] != "Pending":
                break
        time.sleep(0.05)
    time.sleep(2)  # batch 1 is running now
    run.kill()
    run.wait(timeout=30)
    trials = by_name(out)
    assert reads > 10
    assert trials["killed-b2-g1"]["phase"] == "Succeeded"
    assert trials["killed-b1-g1"]["finishedAt"] is None
    finished_at = trials["killed-b2-g1"]["finishedAt"]
    # The orphaned trainer stops at its next write to the dead pipe.
    wait_for_gone = time.monotonic() + 60
    while _trainers_of(out) and time.monotonic() < wait_for_gone:
        time.sleep(0.5)
    assert _trainers_of(out) == []

    spec["execution"]["activeDeadlineSeconds"] = 3  # not a trainer flag: finished trials stay valid
    write_experiment(file, "killed", **spec)
    done = scalelab("run", str(file), "--out", str(out), "--no-report")
    assert "1 finished trial(s) kept" in done.stdout, done.stdout + done.stderr
    trials = by_name(out)
    assert trials["killed-b2-g1"]["finishedAt"] == finished_at  # not run again
    assert trials["killed-b1-g1"]["phase"] == "Failed"
    assert trials["killed-b1-g1"]["reason"] == "exceeded execution.activeDeadlineSeconds=3"
    assert [p.name for p in out.iterdir() if p.name.endswith(".tmp")] == []


def test_on_a_terminal_progress_is_a_live_table_with_epoch_loss_and_samples_per_second(
    tmp_path: Path,
) -> None:
    import pty

    file = write_experiment(tmp_path / "x.yaml", "tty", sweep={"batchSizes": [100, 50]},
                            training={"maxEpochs": 5})  # fmt: skip
    main, secondary = pty.openpty()
    run = subprocess.Popen(
        [sys.executable, "-m", "scalelab", "run", str(file), "--out", str(tmp_path / "out"),
         "--no-report"],
        stdout=secondary, stderr=secondary, stdin=subprocess.DEVNULL,
        env=dict(os.environ, COLUMNS="160", TERM="xterm"),
    )  # fmt: skip
    os.close(secondary)
    screen = b""
    while True:
        try:
            chunk = os.read(main, 65536)
        except OSError:  # the terminal closed: the run is over
            break
        if not chunk:
            break
        screen += chunk
    assert run.wait(timeout=300) == 0
    os.close(main)
    text = screen.decode(errors="replace")
    assert "\x1b[" in text  # drawn with terminal control sequences, not plain lines
    for column in ("trial", "epoch", "loss", "samples/s"):
        assert column in text
    assert "tty-b50-g1" in text
    assert "Succeeded" in text
    assert "5/5" in text


def test_the_large_batch_example_scales_perfectly_until_linear_scaling_diverges(
    tmp_path: Path,
) -> None:
    out = tmp_path / "out"
    done = scalelab("run", str(EXAMPLES / "lab3-large-batch.yaml"), "--out", str(out))
    assert done.returncode == 0, done.stderr
    trials = {t["batchSize"]: t for t in results(out)["trials"]}
    reached = [b for b in sorted(trials) if trials[b]["epochsToTarget"]]
    assert reached == [8, 32, 128, 512]
    epochs = [trials[b]["epochsToTarget"] for b in reached]
    assert max(epochs) <= 1.25 * min(epochs)  # linear scaling rule: epochs constant
    steps = [trials[b]["stepsToTarget"] for b in reached]
    assert steps[0] / steps[-1] == pytest.approx(512 / 8, rel=0.25)  # steps ∝ 1/B
    assert trials[2048]["phase"] == "Diverged"  # η = 1.02 is past the curvature limit
    assert trials[2048]["learningRate"] == pytest.approx(1.024)
    assert all(trials[b]["gradientNoiseScale"] for b in (8, 32))
    assert all(trials[b]["gradientNoiseScaleStderr"] for b in (8, 32))
    # Every batch that reached the target scaled perfectly: no extrapolated B_crit.
    critical = results(out)["criticalBatch"]
    assert critical["beyondRange"]
    assert critical["fitted"] is None
    assert critical["summary"].startswith("B_crit is beyond the largest batch measured (512)")


def test_an_adaptive_sweep_runs_the_pilot_first_and_skips_what_it_rules_out(
    tmp_path: Path,
) -> None:
    out = tmp_path / "out"
    done = scalelab("run", str(EXAMPLES / "lab3-adaptive.yaml"), "--out", str(out))
    assert done.returncode == 0, done.stderr
    assert "pilot lab3-adaptive-b128-g1 measures B_simple first" in done.stdout
    trials = {t["batchSize"]: t for t in results(out)["trials"]}
    ran = sorted((t["finishedAt"], b) for b, t in trials.items() if t["phase"] != "Skipped")
    assert ran[0][1] == 128  # the pilot (middle batch) first
    # B_simple at the target is a few thousand here (± as much: one epoch of batch 128 is 64
    # steps), so 8 lies below the prediction / 10 / width 4.
    assert trials[8]["pruned"]
    assert trials[8]["reason"].startswith("adaptive: batch 8 is outside ")
    assert trials[8]["finishedAt"] is None
    # Which later trials a finished configuration beats on time and GPU-seconds depends on this
    # machine's speed; each stopped one names a faster configuration, and the sweep goes on.
    for b, t in trials.items():
        assert t["phase"] in {"Succeeded", "Diverged", "Pruned", "Skipped"}, (b, t["reason"])
        if t["phase"] == "Pruned":
            assert t["pruned"]
            assert t["reason"].startswith("adaptive: stopped after ")
            assert "reached the target in" in t["reason"]
            assert t["gpuSeconds"] > 0  # what it spent counts
        if t["phase"] == "Skipped" and b > 2048:
            assert t["reason"].startswith("adaptive: not started: batch 2048 (lab3-adaptive")
    succeeded = [t for t in trials.values() if t["phase"] == "Succeeded"]
    fastest = min(succeeded, key=lambda t: t["timeToTargetSeconds"])
    assert results(out)["recommendation"]["batchSize"] == fastest["batchSize"]  # 512 unloaded
    assert results(out)["criticalBatch"]["predicted"] > 128


def _samples_total(port: int, trial: str, rank: int) -> float | None:
    """scalelab_trainer_samples_total of (trial, rank) scraped from port; None if unreachable."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            text = response.read().decode()
    except OSError:
        return None
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if (
                sample.name == "scalelab_trainer_samples_total"
                and sample.labels.get("trial") == trial
                and sample.labels.get("rank") == str(rank)
            ):
                return float(sample.value)
    return None


def test_metrics_port_makes_every_rank_of_a_running_trial_serve_metrics_over_http(
    tmp_path: Path,
) -> None:
    port = free_ports(2)
    out = tmp_path / "out"
    # A 2-process trial that runs until stopped (no tolerance, no target).
    file = write_experiment(tmp_path / "x.yaml", "scrape", sweep={"batchSizes": [2], "gpus": [2]},
                            training={"maxEpochs": 100000,
                                      "convergence": {"relativeTolerance": 0}})  # fmt: skip
    log = tmp_path / "stdout.txt"
    with open(log, "w") as stdout:
        run = subprocess.Popen(
            [sys.executable, "-m", "scalelab", "run", str(file), "--out", str(out),
             "--metrics-port", str(port), "--no-report"],
            stdout=stdout, stderr=subprocess.PIPE, text=True,
            preexec_fn=_ctrl_c_reaches_it,  # noqa: PLW1509 (sets one signal disposition only)
        )  # fmt: skip
    try:
        trial = "scrape-b2-g2"
        first: dict[int, float] = {}
        deadline = time.monotonic() + 300
        while len(first) < 2 and time.monotonic() < deadline and run.poll() is None:
            time.sleep(0.5)
            for rank in (0, 1):
                value = _samples_total(port + rank, trial, rank)
                if value:
                    first.setdefault(rank, value)
        assert sorted(first) == [0, 1], f"ranks answering on {port}, {port + 1}: {first}"
        time.sleep(2)
        later = _samples_total(port, trial, 0)
        assert later is not None
        assert later > first[0]  # scraped while the trial runs
    finally:
        run.send_signal(signal.SIGINT)
        try:
            _, stderr = run.communicate(timeout=120)
        finally:
            _kill_if_running(run, out)
    assert run.returncode == 130, stderr
    printed = log.read_text()
    addresses = f"http://localhost:{port}/metrics, http://localhost:{port + 1}/metrics"
    assert "metrics: each rank serves /metrics" in printed, printed
    assert addresses in printed, printed
    # The trainer got the port through the planner's flags, like the MPIJob launcher does.
    (trial_list,) = (out / ".work").glob("*.json")
    (argv,) = json.loads(trial_list.read_text())
    assert argv[argv.index("--metrics-port") + 1] == str(port)
    assert _trainers_of(out) == []
    assert listenable(port)  # the servers went with the trainers
    assert listenable(port + 1)
    # The port is not part of a trial's identity: the record's command has no metrics port.
    (record,) = results(out)["trials"]
    assert "--metrics-port" not in record["argv"]


def test_a_busy_or_invalid_metrics_port_stops_scalelab_run_before_any_trainer_starts(
    tmp_path: Path,
) -> None:
    file = write_experiment(tmp_path / "x.yaml", "busy", sweep={"batchSizes": [2], "gpus": [1, 2]})
    first = free_ports(2)  # (any port below a taken one may be in use by someone else)
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("", first + 1))
        taken.listen()
        port = first + 1
        # Rank 1 of the 2-process trial would listen on port + 1; rank 0 of either on port.
        done = scalelab("run", str(file), "--out", str(tmp_path / "out"),
                        "--metrics-port", str(first))  # fmt: skip
    assert done.returncode == 1
    assert f"port(s) {port} in use or out of range" in done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "out" / "logs").exists()  # no trainer was launched
    usage = scalelab("run", str(file), "--metrics-port", "70000")
    assert usage.returncode == 2
    assert "70000 is not a port number" in usage.stderr


def test_a_user_workload_package_runs_through_scalelab_run_like_a_built_in_one(
    tmp_path: Path,
) -> None:
    """examples/custom-spirals.yaml with the example package on the trainer's path; without it,
    every trial fails with the reason, not a traceback."""
    example = EXAMPLES / "custom-spirals.yaml"
    env = dict(os.environ, PYTHONPATH=str(EXAMPLES / "spirals-plugin" / "src"))
    out = tmp_path / "out"
    done = scalelab("run", str(example), "--out", str(out), env=env)
    assert done.returncode == 0, done.stderr
    trials = by_name(out)
    assert len(trials) == 6
    assert {t["phase"] for t in trials.values()} == {"Succeeded"}
    for batch in (32, 128, 512):
        one, two = trials[f"custom-spirals-b{batch}-g1"], trials[f"custom-spirals-b{batch}-g2"]
        # The same examples per global batch on 1 and 2 processes: the same training.
        assert two["finalLoss"] == pytest.approx(one["finalLoss"], rel=1e-4)
        assert one["finalLoss"] < one["initialLoss"]
        assert two["scalingEfficiency"] is not None
    small = trials["custom-spirals-b32-g1"]
    assert small["finalLoss"] < 0.5 * small["initialLoss"]  # it learns the spirals
    assert small["curves"]["testAccuracy"][-1] > 0.8
    assert small["gradientNoiseScale"] is not None
    report = (out / "report.html").read_text()
    assert "custom-spirals" in report
    assert images_loaded_in_chromium(out / "report.html")[1] >= 3

    doc = yaml.safe_load(example.read_text())
    doc["spec"]["sweep"] = {"batchSizes": [128], "gpus": [1]}
    missing = write_experiment(tmp_path / "missing.yaml", "no-package", **doc["spec"])
    done = scalelab("run", str(missing), "--out", str(tmp_path / "missing"))
    assert done.returncode == 1
    assert "Traceback" not in done.stdout + done.stderr
    (trial,) = by_name(tmp_path / "missing").values()
    assert trial["phase"] == "Failed"
    assert "PluginError: entry point spirals:workload: cannot import 'spirals'" in trial["reason"]
