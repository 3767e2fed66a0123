"""A cluster experiment's results file: the same `results.json` a local run writes, from the API.

`scalelab report --experiment NAME` reads the ScaleExperiment, its ScaleTrials and the ConfigMaps
their trainers stored (trainer/scalelab_trainer/store_results.py: the trial's event lines,
gzip-compressed, and lab1-line's dataset) and folds them exactly as `scalelab run` folds the
trainer's stdout: `record_from_events` over the planner's records, then `aggregate_results`. The
ScaleTrial's status decides the phase and reason (the operator's verdict: an MPIJob that failed
after the result, a deadline); timings come from the trainer, `wallSeconds` from the trial's
start and completion times, `times`, `queueSeconds` (its wait for quota) and `deviceSeconds`
(what all its runs used) from its status.
Trials not finished yet stay Running or Pending and are named in the file's warnings. `fetch`
makes the API calls; `assemble` is pure.

A finished experiment's file is dated when it finished (its Complete condition turned True), not
when it was read, so every read of it, and the copy the operator archives (kube/archive.py), is
the same file; an unfinished one is dated now.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import gzip
import json
import time
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from lightkube import ApiError
from pydantic import ValidationError

from scalelab.api import (
    FINISHED_TRIAL_PHASES,
    GROUP,
    VERSION,
    ConditionType,
    ExperimentPhase,
    TrialPhase,
)
from scalelab.kube import rest
from scalelab.kube.mpijob import LABEL_EXPERIMENT, LABEL_TRIAL
from scalelab.kube.observed import InvalidSpecError, parse
from scalelab.kube.resources import EXPERIMENTS, TRIALS
from scalelab.planner import PlannedTrial, exports_data, plan, trainer_command, trainer_flags
from scalelab.results.model import (
    RecordTimes,
    ResultsFile,
    TrialRecord,
    aggregate_results,
    data_file,
    new_results,
    planned_record,
    record_from_events,
)

#: The trainer's ConfigMap layout (trainer/scalelab_trainer/store_results.py, the trial contract).
EVENTS_KEY, DATA_KEY = "events.jsonl.gz", "data.npz"
LABEL_COMPONENT, COMPONENT = "app.kubernetes.io/component", "trial-results"
NOT_FOUND = 404


class ClusterReadError(Exception):
    """The experiment cannot be read from the cluster (no config, not found, forbidden, down);
    `status` is the API server's HTTP status when it answered."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class ExperimentNotFoundError(ClusterReadError):
    """The API server answered that the experiment does not exist (deleted, or a wrong name)."""


@dataclass
class Snapshot:
    """What the API holds for one experiment: its body, its trials', its stored results."""

    namespace: str
    experiment: dict[str, Any]
    trials: list[dict[str, Any]] = field(default_factory=list)
    configmaps: list[dict[str, Any]] = field(default_factory=list)
    server: str = ""


@dataclass
class ClusterResults:
    """The results file, the files beside it (data/<trial>.npz) and the unfinished trials."""

    results: ResultsFile
    files: dict[str, bytes]
    running: list[str]
    pending: list[str]


def connect() -> tuple[rest.Api, str]:
    """(client, namespace of the current context) from the kubeconfig kubectl would use
    (KUBECONFIG, else ~/.kube/config), or the in-cluster service account."""
    try:
        config = rest.kubeconfig()
        return rest.Api(config), str(config.context.namespace or "default")
    except (rest.ConfigError, OSError, ValueError, KeyError):
        pass  # none, or one that cannot be read (as kubectl would refuse it)
    try:
        return rest.Api(rest.in_cluster()), "default"
    except (rest.ConfigError, OSError, KeyError) as error:
        raise ClusterReadError(
            f"no Kubernetes configuration: set KUBECONFIG (or ~/.kube/config) as for kubectl "
            f"({error})"
        ) from None


def _slim_trial(trial: Mapping[str, Any]) -> dict[str, Any]:
    """What `assemble` reads of a ScaleTrial: its name and status."""
    return {"metadata": {"name": (trial.get("metadata") or {}).get("name")},
            "status": trial.get("status") or {}}  # fmt: skip


def _slim_configmap(configmap: Mapping[str, Any]) -> dict[str, Any]:
    """What `assemble` reads of a results ConfigMap: its labels and binary data."""
    return {"metadata": {"labels": (configmap.get("metadata") or {}).get("labels") or {}},
            "binaryData": configmap.get("binaryData") or {}}  # fmt: skip


def fetch(api: rest.Api, namespace: str, name: str) -> Snapshot:
    """The experiment, its ScaleTrials and its results ConfigMaps, listed a page at a time and
    kept only in what `assemble` reads (the operator archives 1,000-trial experiments: whole
    bodies, their managed fields included, were most of its memory at that moment)."""
    where = f"scaleexperiment {namespace}/{name}"
    try:
        body = api.get(rest.path(GROUP, VERSION, EXPERIMENTS, namespace, name))
        selector = f"{LABEL_EXPERIMENT}={name}"
        trials_at = rest.path(GROUP, VERSION, TRIALS, namespace)
        maps_at = rest.path("", "v1", "configmaps", namespace)
        mine = {"labelSelector": selector}
        stored = {"labelSelector": f"{selector},{LABEL_COMPONENT}={COMPONENT}"}
        trials = [_slim_trial(t) for page in api.pages(trials_at, mine) for t in page]
        maps = [_slim_configmap(m) for page in api.pages(maps_at, stored) for m in page]
    except ApiError as error:
        status = rest.code(error)
        if status == NOT_FOUND:
            raise ExperimentNotFoundError(
                f"{where} not found (kubectl get sx -n {namespace} lists the experiments there)",
                NOT_FOUND,
            ) from None
        raise ClusterReadError(
            f"cannot read {where}: {status} {rest.reason(error)}", status
        ) from None
    except rest.TRANSPORT_ERRORS as error:
        raise ClusterReadError(f"cannot reach the API server for {where}: {error}") from None
    return Snapshot(namespace, body, trials, maps, api.host)


def _rfc3339(value: Any) -> float | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.strptime(value, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).timestamp()
    except ValueError:
        return None


def finished_at(experiment: Mapping[str, Any]) -> float | None:
    """When a finished experiment finished: its Complete condition's last transition to True
    (None while it runs, or when the condition carries no time)."""
    status = experiment.get("status") or {}
    if status.get("phase") not in (ExperimentPhase.SUCCEEDED, ExperimentPhase.FAILED):
        return None
    for condition in status.get("conditions") or []:
        if condition.get("type") == ConditionType.COMPLETE and condition.get("status") == "True":
            return _rfc3339(condition.get("lastTransitionTime"))
    return None


def decode_events(configmap: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The event lines a trainer stored (empty when the ConfigMap is not readable)."""
    raw = (configmap.get("binaryData") or {}).get(EVENTS_KEY)
    if not isinstance(raw, str):
        return []
    try:
        text = gzip.decompress(base64.b64decode(raw)).decode()
    except (binascii.Error, OSError, EOFError, zlib.error, UnicodeDecodeError):
        return []
    events = []
    for line in text.splitlines():
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if isinstance(event, dict):
            events.append(event)
    return events


def _newest(configmaps: Sequence[Mapping[str, Any]]) -> dict[str, Mapping[str, Any]]:
    """Per trial, the stored results of its last launcher attempt (the newest result event)."""
    best: dict[str, tuple[float, Mapping[str, Any]]] = {}
    for m in configmaps:
        trial = ((m.get("metadata") or {}).get("labels") or {}).get(LABEL_TRIAL)
        events = decode_events(m)
        result = next((e for e in events if e.get("event") == "result"), None)
        stamp = result.get("time") if result else None
        when = float(stamp) if isinstance(stamp, int | float) else 0.0
        if isinstance(trial, str) and (trial not in best or when >= best[trial][0]):
            best[trial] = (when, m)
    return {trial: m for trial, (_, m) in best.items()}


def _queue(status: Mapping[str, Any]) -> dict[str, Any]:
    """A trial's times, queue wait and every run's device-seconds as its status has them
    (nothing it does not have)."""
    out: dict[str, Any] = {}
    times = status.get("times")
    if isinstance(times, Mapping):
        with contextlib.suppress(ValidationError):  # not the operator's: left out
            out["times"] = RecordTimes.model_validate(times)
    for key, name in (("queueSeconds", "queue_seconds"), ("deviceSeconds", "device_seconds")):
        value = status.get(key)
        if isinstance(value, int | float) and not isinstance(value, bool):
            out[name] = float(value)
    return out


def _record(
    planned: PlannedTrial, trial: Mapping[str, Any] | None, stored: Mapping[str, Any] | None
) -> tuple[TrialRecord, bytes | None]:
    """One trial's record (and its dataset) from its ScaleTrial and its stored events."""
    record = planned_record(planned, trainer_command(trainer_flags(planned.spec, planned.name)))
    status = (trial or {}).get("status") or {}
    try:
        phase = TrialPhase(status.get("phase") or TrialPhase.PENDING.value)
    except ValueError:
        phase = TrialPhase.PENDING
    if planned.skipped or phase not in FINISHED_TRIAL_PHASES:
        update: dict[str, Any] = {} if planned.skipped else {"phase": phase, **_queue(status)}
        if not planned.skipped and status.get("reason"):
            update["reason"] = status["reason"]
        return record.model_copy(update=update), None
    events = decode_events(stored) if stored is not None else []
    start = next((e for e in events if e.get("event") == "start"), None)
    epochs = [e for e in events if e.get("event") == "epoch"]
    result = next((e for e in events if e.get("event") == "result"), status.get("result"))
    record = record_from_events(record, start, epochs, result)
    began, ended = _rfc3339(status.get("startTime")), _rfc3339(status.get("completionTime"))
    update = {
        "phase": phase,
        "reason": status.get("reason") or "",
        # As scalelab run marks them: Skipped by the adaptive sweep (not the planner), or Pruned.
        "pruned": phase in (TrialPhase.SKIPPED, TrialPhase.PRUNED),
        **_queue(status),
    }
    if began is not None and ended is not None:
        update["wall_seconds"] = ended - began
    if record.finished_at is None:
        update["finished_at"] = ended
    data = base64.b64decode((stored or {}).get("binaryData", {}).get(DATA_KEY) or "")
    if data and exports_data(planned.spec):
        update["data_file"] = data_file(planned.name)
    return record.model_copy(update=update), data or None


def assemble(snapshot: Snapshot, now: float | None = None) -> ClusterResults:
    """The results file of the experiment in `snapshot`, as `scalelab run` would have written it,
    dated `now`, else when the experiment finished, else the current time."""
    try:
        experiment = parse(snapshot.experiment)
    except InvalidSpecError as error:
        raise ClusterReadError(f"the experiment's spec is not valid: {error}") from None
    trials = {(t.get("metadata") or {}).get("name"): t for t in snapshot.trials}
    stored = _newest(snapshot.configmaps)
    records, files = [], {}
    for planned in plan(experiment):
        record, data = _record(planned, trials.get(planned.name), stored.get(planned.name))
        records.append(record)
        if data is not None and record.data_file:
            files[record.data_file] = data
    host = {"cluster": snapshot.server, "namespace": snapshot.namespace}
    results = new_results(experiment, records, host)
    running = [r.name for r in records if r.phase is TrialPhase.RUNNING]
    pending = [r.name for r in records if r.phase is TrialPhase.PENDING]
    if running or pending:
        results.warnings.append(
            f"the experiment was still running when this was written: {len(running)} trial(s) "
            f"running, {len(pending)} pending; rerun `scalelab report --experiment "
            f"{experiment.metadata.name}` for the rest"
        )
    aggregate_results(results, experiment)
    if now is None:
        now = finished_at(snapshot.experiment) or time.time()
    results.updated_at = now
    return ClusterResults(results, files, running, pending)
