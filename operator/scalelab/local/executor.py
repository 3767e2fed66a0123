"""`scalelab run`: every Pending trial of an experiment on this machine, results after each one.

Trials are grouped by process count and each group runs as ONE trainer invocation with
`--trial-list` (`horovodrun -np N --gloo -H localhost:N` for N > 1), so interpreter, TensorFlow
and Horovod start-up are paid once per group rather than once per trial. Decisions:

- Trials run one at a time: this machine's cores are the budget, so execution.maxConcurrentTrials
  applies on clusters only (maxGPUs still skips grid points, as everywhere).
- N larger than this machine's cores runs anyway (Gloo oversubscribes fine) and every such
  trial carries a warning that its throughput is not representative.
- A trial that fails, diverges or crashes does not stop the sweep: the trainer is relaunched
  with the trials it had not started.
- A trial running past execution.activeDeadlineSeconds (counted from its `start` event, so the
  shared start-up is not charged to the first trial) is killed and marked Failed; a trainer that
  does not start its next trial within the deadline plus STARTUP_GRACE_SECONDS is treated alike.
- Ctrl-C (or SIGTERM) stops the running trainer; finished trials are kept, the interrupted one
  stays Pending; the same command resumes. A trial is reused on resume when its name and
  trainer command are unchanged and it finished (Failed ones only without --retry-failed).
- results.json/results.csv are rewritten atomically after every trial; a full disk stops the run
  with a message and the last good files intact.
- `--metrics-port P` reaches every trial through `planner.trainer_flags` (the MPIJob launcher's
  path): each rank serves /metrics on P + local rank while its trainer runs. The port is not
  part of a trial's identity: a rerun with another port (or none) still reuses finished trials.
- spec.resources.env entries with a plain value are set in the trainer's environment (not part of
  a trial's identity either). Volumes, envFrom, valueFrom, imagePullSecrets and
  serviceAccountName need a cluster: the run goes on without them after one warning.
"""

from __future__ import annotations

import functools
import json
import os
import platform
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from types import FrameType
from typing import Any

from scalelab.adaptive import dominated, is_adaptive, pilot_trial, progress_of, verdicts
from scalelab.aggregate import MEASURED
from scalelab.api import FINISHED_TRIAL_PHASES, Resources, ScaleExperiment, TrialPhase
from scalelab.local.events import parse_event
from scalelab.local.processes import Supervisor
from scalelab.local.progress import Progress, Quiet
from scalelab.planner import (
    PlannedTrial,
    exports_data,
    local_command,
    plan,
    trainer_command,
    trainer_flags,
)
from scalelab.results import store
from scalelab.results.model import (
    GroupTiming,
    ResultsFile,
    TrialRecord,
    aggregate_results,
    data_file,
    new_results,
    planned_record,
    record_from_events,
    result_row,
    unqueued,
)

POLL_SECONDS = 0.2
LOG_TAIL_LINES = 5
#: A trainer that has not started its next trial this long after the previous one ended (or after
#: launch, which includes TensorFlow and Horovod start-up) on top of the deadline is hung.
STARTUP_GRACE_SECONDS = 300.0


class Outcome(StrEnum):
    """How a local run ended (the CLI turns it into an exit code)."""

    SUCCEEDED = "succeeded"  # every trial ran; none Failed
    FAILED = "failed"  # every trial ran; at least one Failed
    INTERRUPTED = "interrupted"  # Ctrl-C or SIGTERM; finished trials are kept


def _tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        text = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    useful = [line for line in text if line.strip()][-lines:]
    return " | ".join(line.strip()[:200] for line in useful)


def trainer_python() -> str:
    """The interpreter that runs the trainer: $SCALELAB_TRAINER_PYTHON, else this one."""
    return os.environ.get("SCALELAB_TRAINER_PYTHON", sys.executable)


@functools.cache
def has_horovod(python: str) -> bool:
    """Whether the trainer's interpreter can import Horovod (trials of N > 1 processes need it);
    asked once per interpreter."""
    probe = "import importlib.util, sys; sys.exit(importlib.util.find_spec('horovod') is None)"
    try:
        return subprocess.run([python, "-c", probe], check=False, timeout=60).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


@dataclass
class _TrialEvents:
    start: dict[str, Any] | None = None
    epochs: list[dict[str, Any]] = field(default_factory=list)
    result: dict[str, Any] | None = None
    error: dict[str, Any] | None = None


class _Launch:
    """What one trainer launch has seen so far: each trial's events, the trial it is on, and the
    clocks its deadlines are counted from."""

    def __init__(self, trials: list[PlannedTrial], deadline: float) -> None:
        self.deadline = deadline
        self.by_name = {t.name: t for t in trials}
        self.events = {t.name: _TrialEvents() for t in trials}
        self.remaining = list(trials)
        self.current: str | None = None  # the trial between its start and result events
        self.launched = self.clock = self.started = time.monotonic()
        self.startup: float | None = None  # launch → first start event
        self.timed_out: str | None = None
        self.restart = False  # the adaptive sweep skipped trials this launch would still run
        self.pruned: tuple[str, str] | None = None  # (trial, reason): stopped by the sweep

    def started_trial(self, name: str, event: dict[str, Any]) -> None:
        """A `start` event: the trial's deadline counts from now."""
        self.current, self.started = name, time.monotonic()
        self.events[name].start = event
        if self.startup is None:
            self.startup = self.started - self.launched

    def overdue(self, now: float) -> str | None:
        """The trial to fail now: the running one past its deadline, or, when the trainer has
        not started the next one within the deadline plus STARTUP_GRACE_SECONDS, that one."""
        if not self.remaining:
            return None
        if self.current is not None and now - self.started > self.deadline:
            return self.current
        if self.current is None and now - self.clock > self.deadline + STARTUP_GRACE_SECONDS:
            return self.remaining[0].name
        return None


def _within_epoch(events: _TrialEvents, progress: dict[str, Any]) -> dict[str, Any]:
    """What the display shows during a long epoch: the last finished epoch (its number and
    loss, as ScaleTrial.status.progress keeps them) with the progress event's speed and time."""
    last = events.epochs[-1] if events.epochs else {"epoch": 0, "loss": None}
    moving = ("steps", "samplesPerSecond", "trainingSeconds")
    return {**last, **{k: progress.get(k) for k in moving}}


def trainer_env(resources: Resources) -> dict[str, str]:
    """The trainer's environment: ours with spec.resources.env's plain values over it (as a pod
    gets them), TensorFlow's C++ logs quiet unless asked, and always unbuffered (the executor
    reads the trainer's events line by line as they come)."""
    env = {**os.environ, **resources.plain_env(), "PYTHONUNBUFFERED": "1"}
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    return env


def cluster_only_warning(resources: Resources) -> str | None:
    """The one warning of a local run whose spec sets what only a cluster can give the pods."""
    fields = resources.cluster_only()
    if not fields:
        return None
    return (
        f"warning: spec.resources {', '.join(fields)} apply on a cluster only: this run mounts "
        "no volume and reads no Secret or ConfigMap; of env, only entries with a plain value "
        "reach the trainer"
    )


@contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    def handler(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


class LocalRun:
    """One `scalelab run`: the plan, the results so far, and the trainer processes."""

    def __init__(
        self,
        experiment: ScaleExperiment,
        out: Path,
        *,
        retry_failed: bool = False,
        separate_processes: bool = False,
        metrics_port: int = 0,
        progress: Progress | None = None,
    ) -> None:
        self.experiment = experiment
        self.out = out
        self.retry_failed = retry_failed
        self.separate_processes = separate_processes
        self.metrics_port = metrics_port
        self.python = trainer_python()
        self.cores = os.cpu_count() or 1
        self.planned: dict[str, PlannedTrial] = {t.name: t for t in plan(experiment)}
        self.results = self._initial_results()
        self.progress: Progress = progress or Quiet()
        self.process: Supervisor | None = None

    # ------------------------------------------------------------------ results bookkeeping

    def _initial_results(self) -> ResultsFile:
        previous = store.load(self.out, experiment=self.experiment.metadata.name)
        kept = {t.name: t for t in previous.trials} if previous else {}
        records = []
        for trial in self.planned.values():
            argv = trainer_command(trainer_flags(trial.spec, trial.name))
            old = kept.get(trial.name)
            reusable = (
                old is not None
                and old.argv == argv
                and not trial.skipped
                and (old.done or (old.phase is TrialPhase.FAILED and not self.retry_failed))
            )
            records.append(old if reusable and old is not None else planned_record(trial, argv))
        return new_results(
            self.experiment,
            records,
            host={
                "cores": os.cpu_count(),
                "platform": platform.platform(),
                "python": platform.python_version(),
            },
            groups=previous.groups if previous else [],
        )

    def _record(self, name: str) -> TrialRecord:
        return next(t for t in self.results.trials if t.name == name)

    def _set(self, record: TrialRecord) -> None:
        self.results.trials = [record if t.name == record.name else t for t in self.results.trials]

    def aggregate(self) -> None:
        """Fill scaling efficiency, GPU-seconds and the recommendation from the records."""
        aggregate_results(self.results, self.experiment)

    def save(self) -> None:
        """Aggregate and write results.json and results.csv atomically."""
        self.aggregate()
        self.results.updated_at = time.time()
        store.save(self.out, self.results)

    # --------------------------------------------------------------------------- running

    def pending_groups(self) -> list[tuple[int, list[PlannedTrial]]]:
        """Trials still to run, grouped by process count (ascending)."""
        groups: dict[int, list[PlannedTrial]] = {}
        for record in self.results.trials:
            if record.phase is TrialPhase.PENDING:
                trial = self.planned[record.name]
                groups.setdefault(trial.gpus, []).append(trial)
        return sorted(groups.items())

    def _extra_flags(self, trial: PlannedTrial) -> list[str]:
        if exports_data(trial.spec):
            return ["--export-data", str((self.out / data_file(trial.name)).resolve())]
        return []

    def _command(self, processes: int, trial_list: Path) -> list[str]:
        program = trainer_command(["--trial-list", str(trial_list)], python=self.python)
        return local_command(processes, program, self.python)

    def _finish(
        self,
        trial: PlannedTrial,
        events: _TrialEvents,
        wall: float | None,
        phase: TrialPhase | None = None,
        reason: str = "",
    ) -> None:
        record = record_from_events(
            self._record(trial.name), events.start, events.epochs, events.result
        )
        update: dict[str, Any] = {"wall_seconds": wall, "pruned": phase is TrialPhase.PRUNED}
        if phase is TrialPhase.PRUNED and events.epochs:  # what it spent before it was stopped
            update["seconds"] = events.epochs[-1].get("trainingSeconds")
        if record.finished_at is None:
            update["finished_at"] = time.time()
        update |= unqueued(record.started_at, update.get("finished_at", record.finished_at))
        if phase is not None:
            update |= {"phase": phase, "reason": reason}
        elif events.result is None:
            update |= {"phase": TrialPhase.FAILED, "reason": reason or "no result from trainer"}
        if exports_data(trial.spec):
            data = self.out / data_file(trial.name)
            update["data_file"] = str(data.relative_to(self.out)) if data.exists() else None
        warnings = list(record.warnings)
        if trial.gpus > self.cores:
            warnings.append(
                f"oversubscribed: {trial.gpus} processes on {self.cores} cores; throughput "
                "and scaling efficiency are not representative"
            )
        update["warnings"] = warnings
        record = record.model_copy(update=update)
        self._set(record)
        self.progress.trial_finished(record)
        self.save()

    def run_group(self, processes: int, trials: list[PlannedTrial]) -> None:
        """Run `trials` (all with `processes` processes) in as few trainer launches as possible."""
        if processes > 1 and not has_horovod(self.python):
            for trial in trials:
                self._finish(
                    trial,
                    _TrialEvents(),
                    None,
                    TrialPhase.FAILED,
                    f"the trainer's Python ({self.python}) cannot import horovod: install horovod "
                    "with Gloo support there",
                )
            return
        if processes > self.cores:
            self.progress.note(
                f"warning: {processes} processes on {self.cores} cores: running anyway "
                "(oversubscribed); throughput of these trials is not representative"
            )
        batches = [[t] for t in trials] if self.separate_processes else [trials]
        for batch in batches:
            remaining = list(batch)
            attempt = 0
            while remaining:
                attempt += 1
                remaining = self._launch(processes, remaining, attempt)

    def _launch(
        self, processes: int, trials: list[PlannedTrial], attempt: int
    ) -> list[PlannedTrial]:
        """One trainer process over `trials`; returns the trials it did not get to."""
        command, log_path = self._prepare(processes, trials, attempt)
        launch = _Launch(trials, float(self.experiment.spec.execution.active_deadline_seconds))
        env = trainer_env(self.experiment.spec.resources)
        with Supervisor(command, log_path, env) as trainer:
            self.process = trainer
            for line in trainer.lines(POLL_SECONDS):
                if line is not None:
                    self._on_line(launch, trainer, line)
                if launch.restart or launch.pruned:
                    trainer.stop()
                    break
                launch.timed_out = launch.overdue(time.monotonic())
                if launch.timed_out is not None:
                    trainer.stop()
                    break
        self.process = None
        self.results.groups.append(
            GroupTiming(
                processes=processes,
                trials=len(trials) - len(launch.remaining),
                startup_seconds=launch.startup,
                wall_seconds=time.monotonic() - launch.launched,
            )
        )
        return self._settle(launch, trainer.returncode, log_path)

    def _prepare(
        self, processes: int, trials: list[PlannedTrial], attempt: int
    ) -> tuple[list[str], Path]:
        """Write the trial list of one launch; its command and its log file."""
        work, logs = self.out / ".work", self.out / "logs"
        work.mkdir(parents=True, exist_ok=True)
        logs.mkdir(parents=True, exist_ok=True)
        (self.out / "data").mkdir(exist_ok=True)
        stem = f"{trials[0].name}-n{len(trials)}-a{attempt}"
        trial_list = work / f"{stem}.json"
        flag_lists = [
            trainer_flags(t.spec, t.name, metrics_port=self.metrics_port) + self._extra_flags(t)
            for t in trials
        ]
        trial_list.write_text(json.dumps(flag_lists, indent=1))
        return self._command(processes, trial_list), logs / f"{stem}.log"

    def _on_line(self, launch: _Launch, trainer: Supervisor, line: str) -> None:
        """Fold one stdout line into the launch: progress on start, epoch and progress events
        (the last a long epoch's speed, kept out of the epochs), save on result."""
        event = parse_event(line)
        name = event.get("trial") if event else None
        if event is None or not isinstance(name, str) or name not in launch.events:
            trainer.log(line)
            return
        kind = event["event"]
        if kind == "start":
            launch.started_trial(name, event)
            self.progress.trial_started(self._record(name))
        elif kind == "epoch":
            launch.events[name].epochs.append(event)
            self.progress.epoch(self._record(name), event)
            reason = self._dominated(launch.by_name[name], launch.events[name].epochs)
            if reason is not None:
                launch.pruned = (name, reason)
        elif kind == "progress":
            self.progress.epoch(self._record(name), _within_epoch(launch.events[name], event))
        elif kind == "error":
            launch.events[name].error = event
        elif kind == "result" and launch.by_name[name] in launch.remaining:
            launch.events[name].result = event
            now = time.monotonic()
            self._finish(launch.by_name[name], launch.events[name], now - launch.clock)
            launch.remaining.remove(launch.by_name[name])
            launch.current, launch.clock = None, now
            pruned = self.prune()
            if any(t.name in pruned for t in launch.remaining):
                launch.remaining = [t for t in launch.remaining if t.name not in pruned]
                launch.restart = True

    def _settle(self, launch: _Launch, code: int | None, log_path: Path) -> list[PlannedTrial]:
        """After the trainer exited: fail the trial it was on (deadline or crash), or every
        trial when it never started one; return the trials to run in another launch."""
        remaining = launch.remaining
        if launch.pruned is not None:
            name, reason = launch.pruned
            trial = launch.by_name[name]
            self._finish(
                trial, launch.events[name], time.monotonic() - launch.clock,
                TrialPhase.PRUNED, reason,
            )  # fmt: skip
            remaining.remove(trial)
            skipped = self.prune()  # e.g. the other repeats of its configuration
            return [t for t in remaining if t.name not in skipped]
        if launch.restart:
            return remaining
        if launch.timed_out is not None:
            trial = launch.by_name[launch.timed_out]
            events = launch.events[launch.timed_out]
            self._finish(
                trial,
                _TrialEvents(events.start, events.epochs),
                time.monotonic() - launch.clock,
                TrialPhase.FAILED,
                f"exceeded execution.activeDeadlineSeconds={int(launch.deadline)}",
            )
            remaining.remove(trial)
            return remaining
        if launch.current is not None and launch.by_name[launch.current] in remaining:
            trial = launch.by_name[launch.current]
            error = launch.events[launch.current].error
            why = error.get("message") if error else _tail(log_path)
            self._finish(
                trial,
                launch.events[launch.current],
                time.monotonic() - launch.clock,
                TrialPhase.FAILED,
                f"trainer exited with code {code}: {why}",
            )
            remaining.remove(trial)
            return remaining
        if remaining and launch.startup is None:
            # The trainer died before starting any trial: the same would happen to every one.
            why = f"trainer exited with code {code} before starting: {_tail(log_path)}"
            for trial in remaining:
                self._finish(trial, _TrialEvents(), None, TrialPhase.FAILED, why)
            return []
        return remaining

    def _run_pilot(self) -> None:
        """strategy adaptive: the pilot trial alone first, then the sweep is pruned by it."""
        pilot = pilot_trial(list(self.planned.values()))
        if pilot is not None and self._record(pilot.name).phase is TrialPhase.PENDING:
            self.progress.note(f"adaptive sweep: pilot {pilot.name} measures B_simple first")
            self.run_group(pilot.gpus, [pilot])
        self.prune()

    def prune(self) -> set[str]:
        """strategy adaptive: mark the trials its verdicts skip (Skipped, pruned, with the
        reason) and save; return their names. Nothing for a grid sweep."""
        if not is_adaptive(self.experiment):
            return set()
        rows = {
            t.name: result_row(t) for t in self.results.trials if t.phase in FINISHED_TRIAL_PHASES
        }
        phases = {t.name: t.phase for t in self.results.trials}
        v = verdicts(self.experiment, list(self.planned.values()), rows, phases)
        for name, reason in v.skip.items():
            record = self._record(name).model_copy(
                update={"phase": TrialPhase.SKIPPED, "reason": reason, "pruned": True}
            )
            self._set(record)
            self.progress.trial_finished(record)
        if v.note and v.note not in self.results.warnings:
            self.results.warnings.append(v.note)
            self.progress.note(v.note)
        if v.skip or v.note:
            self.save()
        return set(v.skip)

    def _dominated(self, trial: PlannedTrial, epochs: list[dict[str, Any]]) -> str | None:
        """strategy adaptive: why a running trial should stop now, after these epoch events
        (see adaptive.dominated)."""
        if not is_adaptive(self.experiment):
            return None
        skip = self.experiment.spec.measurement.throughput_skip_steps
        progress = progress_of(trial.batch_size, epochs, skip)
        if progress is None:
            return None
        rows = {t.name: result_row(t) for t in self.results.trials if t.phase in MEASURED}
        return dominated(self.experiment, trial, progress, rows)

    def max_processes(self) -> int:
        """The most processes any pending trial runs with (0 when nothing is left to run)."""
        return max((processes for processes, _ in self.pending_groups()), default=0)

    def metrics_addresses(self) -> list[str]:
        """Where the ranks of the pending trials serve /metrics (rank r of a trial: port + r)."""
        if not self.metrics_port:
            return []
        ports = range(self.metrics_port, self.metrics_port + self.max_processes())
        return [f"http://localhost:{port}/metrics" for port in ports]

    def _stop_trainer(self) -> None:
        if self.process is not None:
            self.process.stop()
            self.process = None

    def finished(self) -> int:
        """How many trials have finished (kept from an earlier run or run now)."""
        return sum(t.finished_at is not None for t in self.results.trials)

    def run(self) -> Outcome:
        """Run every pending group and save after each trial."""
        self.save()
        try:
            with _sigterm_as_interrupt(), self.progress:
                addresses = self.metrics_addresses()
                if addresses:
                    self.progress.note(
                        "metrics: each rank serves /metrics while its trial runs (rank r on port "
                        f"{self.metrics_port} + r): {', '.join(addresses)}"
                    )
                warning = cluster_only_warning(self.experiment.spec.resources)
                if warning:
                    self.progress.note(warning)
                if is_adaptive(self.experiment):
                    self._run_pilot()
                for processes, trials in self.pending_groups():
                    self.run_group(processes, trials)
        except KeyboardInterrupt:
            self._stop_trainer()
            self.save()
            return Outcome.INTERRUPTED
        finally:
            # A write failure (full disk) or any other error must not orphan a running trainer.
            self._stop_trainer()
        self.save()
        failed = any(t.phase is TrialPhase.FAILED for t in self.results.trials)
        return Outcome.FAILED if failed else Outcome.SUCCEEDED


def busy_ports(first: int, count: int) -> list[int]:
    """The ports of first .. first + count - 1 that a trainer rank could not listen on now."""
    busy = []
    for port in range(first, first + count):
        if port > 65535:
            busy.append(port)
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            # As the trainer's HTTP server does, so a port in TIME_WAIT counts as free.
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind(("", port))
            except OSError:
                busy.append(port)
    return busy
