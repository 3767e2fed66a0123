"""Out channel 4 of the trial contract: rank 0 keeps a finished trial's events in a ConfigMap.

A local run reads the trainer's event lines from stdout and folds them into its results file; in
a cluster nobody reads stdout, so `ResultsStore` keeps the same lines (`start`, every `epoch`,
`result`) and, at the `result`, creates one ConfigMap for them, owned by the ScaleTrial (the
garbage collector deletes it with the trial). `scalelab report --experiment` folds them exactly
as `scalelab run` does. Layout (docs/trial-contract.md, "Out 4"):

- `binaryData["events.jsonl.gz"]`: the event lines as written on stdout, gzip-compressed,
  without the result's `lossSurface` (the report draws the surface from the data);
- `binaryData["data.npz"]`: the `--export-data` file, when given and within the budget;
- labels `scalelab.dev/experiment`, `scalelab.dev/trial`; `generateName` `<trial>-results-`,
  so a retried launcher adds a ConfigMap instead of needing update rights (readers take the one
  whose result is newest).

Budget: BUDGET_BYTES for the compressed events and the data together (etcd keeps binaryData as
raw bytes; the API's 1 MiB ConfigMap limit is never approached). Beyond it, epochs are thinned
(`thin`): every k-th epoch and the last are kept, k = 2, 4, 8, ... until the events fit, the
result's curves alike, `curves.epoch` names the epochs kept and the result carries a warning
saying so; the data is left out (with a warning) when it does not fit beside the events.

The trainer may only `create configmaps` in its namespace (manifests/rbac/trainer-clusterrole.yaml):
the ScaleTrial's uid for the owner reference comes from the answer to its own status patch.
Failures are logged to stderr and never stop training. Attached by __main__.py.
"""

from __future__ import annotations

import base64
import gzip
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from scalelab_trainer.report_status import (
    GROUP,
    RESULT_RETRY_SECONDS,
    VERSION,
    load_client,
    retrying,
)

BUDGET_BYTES = 256 * 1024
EVENTS_KEY = "events.jsonl.gz"
DATA_KEY = "data.npz"
LABEL_EXPERIMENT = "scalelab.dev/experiment"
LABEL_TRIAL = "scalelab.dev/trial"
LABEL_COMPONENT = "app.kubernetes.io/component"
COMPONENT = "trial-results"
KEPT_EVENTS = ("start", "epoch", "result")
NOT_STORED = ("lossSurface",)

Create = Callable[[dict[str, Any]], Any]


def _kept(index: int, count: int, stride: int) -> bool:
    return index % stride == 0 or index == count - 1


def thin(
    events: list[dict[str, Any]], stride: int, budget: int = BUDGET_BYTES
) -> list[dict[str, Any]]:
    """`events` with only every `stride`-th epoch and the last kept, and the result's curves alike
    (each list thinned by its own index: per-epoch lists as the epochs, updateLosses per update);
    with stride > 1 the result gains `curves.epoch` (the epochs kept) and a warning."""
    if stride <= 1:
        return events
    epochs = [i for i, e in enumerate(events) if e.get("event") == "epoch"]
    keep = {index for j, index in enumerate(epochs) if _kept(j, len(epochs), stride)}
    kept_epochs = [events[i] for i in sorted(keep)]
    out: list[dict[str, Any]] = []
    for i, event in enumerate(events):
        if event.get("event") == "epoch" and i not in keep:
            continue
        is_result = event.get("event") == "result"
        out.append(_thinned_result(event, kept_epochs, stride, budget) if is_result else event)
    return out


def _thinned_result(
    result: dict[str, Any], kept_epochs: list[dict[str, Any]], stride: int, budget: int
) -> dict[str, Any]:
    curves = result.get("curves")
    if not isinstance(curves, dict):
        return result
    thinned: dict[str, Any] = {}
    for key, values in curves.items():
        if isinstance(values, list):
            n = len(values)
            thinned[key] = [v for i, v in enumerate(values) if _kept(i, n, stride)]
        else:
            thinned[key] = values
    thinned["epoch"] = [e.get("epoch") for e in kept_epochs]
    warning = (
        f"curves thinned to one epoch in {stride} (and the last) to fit the "
        f"{budget // 1024} KiB per-trial results budget"
    )
    return {**result, "curves": thinned, "warnings": [*(result.get("warnings") or []), warning]}


def compress(events: list[dict[str, Any]]) -> bytes:
    """The event lines as on stdout, gzip-compressed (mtime 0: same events, same bytes)."""
    lines = "".join(json.dumps(e, separators=(",", ":")) + "\n" for e in events)
    return gzip.compress(lines.encode(), compresslevel=9, mtime=0)


def _fit(events: list[dict[str, Any]], budget: int) -> tuple[bytes, int]:
    """The compressed events, thinned with stride 2, 4, 8, ... until they fit `budget`."""
    epochs = sum(e.get("event") == "epoch" for e in events)
    stride = 1
    blob = compress(events)
    while len(blob) > budget and stride < max(epochs, 1):
        stride *= 2
        blob = compress(thin(events, stride, budget))
    return blob, stride


def pack(
    events: list[dict[str, Any]], data: bytes | None, budget: int = BUDGET_BYTES
) -> tuple[dict[str, bytes], int]:
    """(binaryData, stride): the compressed events thinned until they fit `budget`, and the data
    when it fits beside them (else the result says it was left out)."""
    stored = [{k: v for k, v in e.items() if k not in NOT_STORED} for e in events]
    blob, stride = _fit(stored, budget)
    if data is None:
        return {EVENTS_KEY: blob}, stride
    if len(blob) + len(data) <= budget:
        return {EVENTS_KEY: blob, DATA_KEY: data}, stride
    warning = (
        f"the exported dataset ({len(data)} bytes) was not kept: over the "
        f"{budget // 1024} KiB per-trial results budget"
    )
    stored = [
        {**e, "warnings": [*(e.get("warnings") or []), warning]}
        if e.get("event") == "result"
        else e
        for e in stored
    ]
    blob, stride = _fit(stored, budget)
    return {EVENTS_KEY: blob}, stride


def configmap(
    cfg_experiment: str, trial: str, namespace: str, owner_uid: str, binary: dict[str, bytes]
) -> dict[str, Any]:
    """The ConfigMap object: owned by the ScaleTrial, labelled for readers, binary data base64."""
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "generateName": f"{trial}-results-",
            "namespace": namespace,
            "labels": {
                LABEL_EXPERIMENT: cfg_experiment,
                LABEL_TRIAL: trial,
                LABEL_COMPONENT: COMPONENT,
            },
            "ownerReferences": [
                {
                    "apiVersion": f"{GROUP}/{VERSION}",
                    "kind": "ScaleTrial",
                    "name": trial,
                    "uid": owner_uid,
                }
            ],
        },
        "binaryData": {k: base64.b64encode(v).decode() for k, v in binary.items()},
    }


class ResultsStore:
    """Event listener: keeps a trial's events; at its result, creates the ConfigMap.

    `owner` returns the ScaleTrial's uid (learnt from a status patch answer) or None; without it
    nothing is stored (logged), since an unowned ConfigMap would outlive its trial."""

    def __init__(
        self,
        create: Create,
        owner: Callable[[], str | None],
        namespace: str,
        data_path: str | None = None,
        budget: int = BUDGET_BYTES,
        *,
        retry_seconds: float = RESULT_RETRY_SECONDS,
    ) -> None:
        self.create, self.owner, self.namespace = create, owner, namespace
        self.data_path, self.budget = data_path, budget
        self.retry_seconds = retry_seconds
        self.events: list[dict[str, Any]] = []
        self.stored: dict[str, Any] | None = None  # the last ConfigMap sent (tests, measures)

    def __call__(self, event: dict[str, Any]) -> None:
        if event.get("event") not in KEPT_EVENTS:
            return
        self.events.append(event)
        if event.get("event") == "result":
            self._store(event)
            self.events = []

    def _data(self) -> bytes | None:
        if not self.data_path:
            return None
        try:
            return Path(self.data_path).read_bytes()
        except OSError as e:
            print(f"scalelab_trainer: exported data not stored ({e})", file=sys.stderr)
            return None

    def _store(self, result: dict[str, Any]) -> None:
        uid = self.owner()
        if uid is None:
            print(
                "scalelab_trainer: results not stored: the ScaleTrial's uid is unknown "
                "(no status patch succeeded)",
                file=sys.stderr,
            )
            return
        binary, _ = pack(self.events, self._data(), self.budget)
        body = configmap(
            str(result.get("experiment")), str(result.get("trial")), self.namespace, uid, binary
        )
        try:
            retrying(lambda: self.create(body), self.retry_seconds)
            self.stored = body
        except Exception as e:  # storing must never kill training, whatever the client raises
            print(
                f"scalelab_trainer: storing results failed ({type(e).__name__}: {e})",
                file=sys.stderr,
            )


def kubernetes_create(namespace: str) -> Create:
    """Create a ConfigMap in `namespace` through the in-cluster config or KUBECONFIG."""
    from kubernetes import client

    api: Any = client.CoreV1Api(load_client())  # takes the body as a plain dict

    def create(body: dict[str, Any]) -> Any:
        return api.create_namespaced_config_map(namespace, body, _request_timeout=30)

    return create
