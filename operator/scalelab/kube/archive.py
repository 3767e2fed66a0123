"""Results that outlive their experiment: the results archive, one ConfigMap per finished run.

Deleting a ScaleExperiment (to free its pods and objects) garbage-collects its ScaleTrials and
the ConfigMaps their trainers stored, which is everything `scalelab report --experiment` reads
(kube/results.py). So when an experiment finishes, the operator (kube/operations.py) writes the
results file that report would write, compacted, into a ConfigMap that has NO owner reference:

- name `<experiment>-results-archive-<first 8 characters of its uid>`: deterministic, so writing
  is idempotent (409 AlreadyExists is success) across restarts and the replicas of a failover,
  and an experiment recreated under the same name gets an archive of its own;
- labels `scalelab.dev/results-archive: <experiment>` (how readers and `kubectl delete -l` find
  it) and `app.kubernetes.io/component: results-archive`; annotations: when it was archived, the
  experiment's uid, and how many data files were left out;
- `binaryData["results.json.gz"]`: results.json as `scalelab report --experiment` writes it,
  gzip-compressed (mtime 0: the same results, the same bytes), and `binaryData["data.<trial>.npz"]`
  each trial's exported dataset (`data/<trial>.npz` beside results.json) while they fit.

Budget: BUDGET_BYTES of binary data in all (the API server refuses a ConfigMap over 1 MiB;
etcd's request limit is 1.5 MiB). Results come first, whole while they fit: 1,000 trials of 10
epochs, every curve point a random full-precision float (what compresses worst: ~7 bytes each),
take 761 KB (tests/kube/test_archive.py); at 40 epochs each their curves are cut to 10 points.
Beyond the budget the longest curves are thinned first: every curve over a cap keeps every k-th
point and the last, the cap halving until the file fits, and results.json says so in its
warnings (that archived file then differs from the live one, which reads the trainers' full
curves). Data files are then added in trial order while they fit; the rest are left out (the
report draws without them).

Read by `scalelab report --experiment NAME` when the experiment is gone (`find`, `decode`) and
removed by `scalelab report --prune` (`prunable`) or `kubectl delete configmap -l
scalelab.dev/results-archive=NAME`; nothing deletes an archive by itself.

RBAC: the operator reads the trainers' ConfigMaps and writes the archive in the experiment's
namespace only, through a RoleBinding it makes there (`ensure_reader`) to the
`scalelab-operator-results` ClusterRole (get, list, create configmaps): its ClusterRole grants no
cluster-wide read of ConfigMaps.
"""

from __future__ import annotations

import base64
import binascii
import gzip
import json
import threading
import time
import zlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

from lightkube import ApiError
from pydantic import ValidationError

from scalelab.api import GROUP, VERSION, TrialPhase
from scalelab.kube import rest
from scalelab.kube import results as cluster
from scalelab.kube.apply import CONFLICT, NOT_FOUND, Kube
from scalelab.kube.mpijob import LABEL_MANAGED_BY, MANAGED_BY
from scalelab.kube.resources import EXPERIMENTS
from scalelab.kube.rest import code
from scalelab.results.model import ResultsFile

LABEL_ARCHIVE = "scalelab.dev/results-archive"
LABEL_COMPONENT, COMPONENT = "app.kubernetes.io/component", "results-archive"
ARCHIVED_AT = "scalelab.dev/archived-at"  # RFC 3339, when the operator wrote it
EXPERIMENT_UID = "scalelab.dev/experiment-uid"
FILES_LEFT_OUT = "scalelab.dev/files-left-out"  # data files over the budget, a count
RESULTS_KEY = "results.json.gz"
DATA_PREFIX = "data."
#: Binary data of one archive, at most. Unit: bytes (the API's ConfigMap limit is 1 MiB).
BUDGET_BYTES = 900 * 1024
#: The ClusterRole the operator binds to itself in each experiment namespace, and the binding.
READER_ROLE = READER_BINDING = "scalelab-operator-results"
FORBIDDEN = 403
#: A RoleBinding just made takes the API server's authorizer a moment to see: retry a 403.
FORBIDDEN_RETRIES, FORBIDDEN_WAIT_SECONDS = 10, 0.5
T = TypeVar("T")


class ArchiveReadError(Exception):
    """An archive exists but cannot be decoded (damaged, or written by an incompatible version)."""


@dataclass(frozen=True)
class Packed:
    """An archive's binary data, the longest curve kept whole (None: no curve thinned), and the
    data files left out."""

    binary: dict[str, bytes]
    cap: int | None = None
    left_out: tuple[str, ...] = ()


@dataclass(frozen=True)
class Archived:
    """What an archive holds: the results file, the data files, its name and when it was made."""

    name: str
    results: ResultsFile
    files: dict[str, bytes]
    archived_at: str
    left_out: int = 0


def archive_name(experiment: str, uid: str) -> str:
    """The archive's name: one per experiment object, whatever its name's history."""
    return f"{experiment}-results-archive-{uid[:8]}"


def _file_key(path: str) -> str:
    """A data file's binaryData key (keys may not hold '/'): data/t.npz -> data.t.npz."""
    return DATA_PREFIX + path.removeprefix("data/")


def _gzip(results: ResultsFile) -> bytes:
    text = json.dumps(results.model_dump(by_alias=True, mode="json"), separators=(",", ":"))
    return gzip.compress(text.encode(), compresslevel=9, mtime=0)


def _thin(values: list[Any], cap: int) -> list[Any]:
    """At most about `cap` of `values`: every k-th and the last (k = ceil(len / cap))."""
    if len(values) <= cap:
        return values
    k = -(-len(values) // cap)
    return [v for i, v in enumerate(values) if i % k == 0 or i == len(values) - 1]


def thin(results: ResultsFile, cap: int, budget: int = BUDGET_BYTES) -> ResultsFile:
    """`results` with every curve longer than `cap` points thinned to every k-th point and the
    last (curves of one length alike, so a trial's per-epoch curves stay aligned), and a warning
    saying so; shorter curves are kept whole."""
    trials = []
    for trial in results.trials:
        curves = {key: _thin(list(values), cap) for key, values in trial.curves.items()}
        trials.append(trial.model_copy(update={"curves": curves}))
    warning = (
        f"curves longer than {cap} points thinned to every k-th point and the last to fit the "
        f"{budget // 1024} KiB results archive"
    )
    return results.model_copy(update={"trials": trials, "warnings": [*results.warnings, warning]})


def pack(results: ResultsFile, files: Mapping[str, bytes], budget: int = BUDGET_BYTES) -> Packed:
    """The archive's binary data: the compressed results file (its longest curves thinned until
    it fits `budget`: at most half as many points each round), then the data files in order
    while they fit beside it."""
    longest = max((len(v) for t in results.trials for v in t.curves.values()), default=0)
    cap, blob = None, _gzip(results)
    while len(blob) > budget and (cap or longest) > 1:
        cap = (cap or longest) // 2
        blob = _gzip(thin(results, cap, budget))
    if len(blob) > budget:
        raise ValueError(f"the results file is {len(blob)} bytes compressed, over {budget}")
    binary, used, left_out = {RESULTS_KEY: blob}, len(blob), []
    for path in sorted(files):
        if used + len(files[path]) <= budget:
            binary[_file_key(path)] = files[path]
            used += len(files[path])
        else:
            left_out.append(path)
    return Packed(binary, cap, tuple(left_out))


def body(
    namespace: str, experiment: Mapping[str, Any], packed: Packed, archived_at: str
) -> dict[str, Any]:
    """The archive ConfigMap of `experiment` (its body as the API returns it): no owner."""
    meta = experiment.get("metadata") or {}
    name, uid = str(meta.get("name")), str(meta.get("uid"))
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": archive_name(name, uid),
            "namespace": namespace,
            "labels": {
                LABEL_ARCHIVE: name,
                LABEL_COMPONENT: COMPONENT,
                LABEL_MANAGED_BY: MANAGED_BY,
            },
            "annotations": {
                ARCHIVED_AT: archived_at,
                EXPERIMENT_UID: uid,
                FILES_LEFT_OUT: str(len(packed.left_out)),
            },
        },
        "binaryData": {k: base64.b64encode(v).decode() for k, v in packed.binary.items()},
    }


def decode(configmap: Mapping[str, Any]) -> Archived:
    """The results file and data files of an archive ConfigMap (as the API returns it)."""
    meta = configmap.get("metadata") or {}
    annotations = meta.get("annotations") or {}
    binary = configmap.get("binaryData") or {}
    try:
        text = gzip.decompress(base64.b64decode(binary[RESULTS_KEY]))
        results = ResultsFile.model_validate(json.loads(text))
        files = {
            t.data_file: base64.b64decode(binary[_file_key(t.data_file)])
            for t in results.trials
            if t.data_file and _file_key(t.data_file) in binary
        }
    except (KeyError, TypeError, binascii.Error, OSError, EOFError, zlib.error, ValueError) as e:
        # ValueError covers JSON and pydantic's ValidationError (whose text is pages long).
        kind = "ValidationError" if isinstance(e, ValidationError) else f"{type(e).__name__}: {e}"
        raise ArchiveReadError(
            f"configmap {meta.get('name')}: not a results archive this version reads ({kind})"
        ) from None
    left_out = str(annotations.get(FILES_LEFT_OUT) or "0")
    return Archived(
        str(meta.get("name")),
        results,
        files,
        str(annotations.get(ARCHIVED_AT) or ""),
        int(left_out) if left_out.isdigit() else 0,
    )


def as_fetched(found: Archived, server: str) -> cluster.ClusterResults:
    """An archive as `scalelab report --experiment` writes a live experiment's results: the
    host's `cluster` is the API server it was read from (the operator may address the same
    cluster otherwise, e.g. by its in-cluster Service)."""
    results = found.results.model_copy(update={"host": {**found.results.host, "cluster": server}})
    running = [t.name for t in results.trials if t.phase is TrialPhase.RUNNING]
    pending = [t.name for t in results.trials if t.phase is TrialPhase.PENDING]
    return cluster.ClusterResults(results, found.files, running, pending)


def newest(configmaps: Sequence[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    """Of several archives of one name (the experiment was recreated), the last archived."""
    stamped = [(_annotation(m, ARCHIVED_AT), m) for m in configmaps]
    return max(stamped, key=lambda pair: pair[0])[1] if stamped else None


def _annotation(configmap: Mapping[str, Any], key: str) -> str:
    return str(((configmap.get("metadata") or {}).get("annotations") or {}).get(key) or "")


def _seconds(stamp: str) -> float | None:
    try:
        return datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).timestamp()
    except ValueError:
        return None


def prunable(
    configmaps: Sequence[Mapping[str, Any]],
    live_uids: set[str],
    older_than_seconds: float,
    now: float,
) -> list[str]:
    """The archives `scalelab report --prune` deletes: those of experiments no longer there
    (their uid is not among `live_uids`), archived more than `older_than_seconds` before `now`.
    An archive with no readable time is old enough."""
    names = []
    for m in configmaps:
        if _annotation(m, EXPERIMENT_UID) in live_uids:
            continue  # the experiment is still there: the operator would write it again
        made = _seconds(_annotation(m, ARCHIVED_AT))
        if made is None or now - made > older_than_seconds:
            names.append(str((m.get("metadata") or {}).get("name")))
    return names


def now_rfc3339(now: float | None = None) -> str:
    """`now` (default: the current time) as the annotation writes it."""
    moment = datetime.fromtimestamp(time.time() if now is None else now, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


# --- API calls -----------------------------------------------------------------------------


def _subject(api: rest.Api) -> dict[str, str]:
    """The RBAC subject this process authenticates as (a SelfSubjectReview: no rights needed)."""
    review = api.post("/apis/authentication.k8s.io/v1/selfsubjectreviews",
                      {"apiVersion": "authentication.k8s.io/v1",
                       "kind": "SelfSubjectReview"})  # fmt: skip
    user = str(((review.get("status") or {}).get("userInfo") or {}).get("username"))
    parts = user.split(":")
    if len(parts) == 4 and parts[:2] == ["system", "serviceaccount"]:
        return {"kind": "ServiceAccount", "name": parts[3], "namespace": parts[2]}
    return {"kind": "User", "name": user, "apiGroup": "rbac.authorization.k8s.io"}


def _retry_forbidden(fn: Callable[[], T], sleep: Callable[[float], None] = time.sleep) -> T:
    """fn(), retried while the API server answers 403 (a fresh RoleBinding not yet in force)."""
    for _ in range(FORBIDDEN_RETRIES - 1):
        try:
            return fn()
        except ApiError as error:
            if code(error) != FORBIDDEN:
                raise
        except cluster.ClusterReadError as error:
            if error.status != FORBIDDEN:
                raise
        sleep(FORBIDDEN_WAIT_SECONDS)
    return fn()


@dataclass
class Archiver:
    """Writes archives for the operator, and reads them back; remembers, per process, its own
    RBAC subject, the namespaces where its RoleBinding exists and the experiments (uids)
    already archived. Reads run one at a time: a restarted operator reads the archive of every
    finished experiment at once, and each decodes to tens of MiB for a moment."""

    subject: dict[str, str] | None = None
    bound: set[str] = field(default_factory=set)
    archived: set[str] = field(default_factory=set)
    reading: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def read(self, kube: Kube, namespace: str, name: str, uid: str) -> ResultsFile | None:
        """The results file in the archive of experiment `namespace/name` (uid `uid`); None
        when it has none or it cannot be decoded. Raises ApiError."""
        target = rest.path("", "v1", "configmaps", namespace, archive_name(name, uid))
        with self.reading:
            try:
                return decode(_retry_forbidden(lambda: kube.api.get(target))).results
            except ApiError as error:
                if code(error) != NOT_FOUND:
                    raise
                return None
            except ArchiveReadError:
                return None

    def ensure_reader(self, kube: Kube, namespace: str) -> None:
        """The RoleBinding of the operator to READER_ROLE in `namespace` (AlreadyExists: fine)."""
        if namespace in self.bound:
            return
        if self.subject is None:
            try:
                self.subject = _subject(kube.api)
            except ApiError as error:
                if code(error) != NOT_FOUND:
                    raise
                self.subject = {}  # no SelfSubjectReview API (before 1.28): unknown
        if not self.subject:  # whoever we are must hold the ConfigMap rights some other way
            self.bound.add(namespace)
            return
        binding = {
            "metadata": {"name": READER_BINDING, "labels": {LABEL_MANAGED_BY: MANAGED_BY}},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                        "name": READER_ROLE},
            "subjects": [self.subject],
        }  # fmt: skip
        kube.wrote("create", "rolebindings")
        try:
            kube.api.post(rest.path("rbac.authorization.k8s.io", "v1", "rolebindings", namespace),
                          binding)  # fmt: skip
        except ApiError as error:
            if code(error) != CONFLICT:
                raise
        self.bound.add(namespace)

    def ensure(self, kube: Kube, namespace: str, name: str, uid: str) -> str | None:
        """Archive the finished experiment `namespace/name` (uid `uid`) unless its archive
        exists; the name of the archive written, or None when there was nothing to write.
        Raises ApiError, or ClusterReadError when the experiment cannot be read."""
        if uid in self.archived:
            return None
        self.ensure_reader(kube, namespace)
        target = archive_name(name, uid)
        configmaps = rest.path("", "v1", "configmaps", namespace)
        try:
            _retry_forbidden(lambda: kube.api.get(f"{configmaps}/{target}"))
            self.archived.add(uid)
            return None  # written before (this replica before a restart, or another one)
        except ApiError as error:
            if code(error) != NOT_FOUND:
                raise
        snapshot = _retry_forbidden(lambda: cluster.fetch(kube.api, namespace, name))
        if str((snapshot.experiment.get("metadata") or {}).get("uid")) != uid:
            return None  # deleted and recreated meanwhile: the new one is archived when it ends
        assembled = cluster.assemble(snapshot)
        packed = pack(assembled.results, assembled.files)
        made = body(namespace, snapshot.experiment, packed, now_rfc3339())
        kube.wrote("create", "configmaps")
        try:
            kube.api.post(configmaps, made)
        except ApiError as error:
            if code(error) != CONFLICT:  # another replica wrote it meanwhile: the same file
                raise
        self.archived.add(uid)
        return target


@contextmanager
def _api_errors(what: str) -> Iterator[None]:
    """API and connection errors of `what` as a ClusterReadError saying so."""
    try:
        yield
    except ApiError as error:
        message = f"cannot {what}: {code(error)} {rest.reason(error)}"
        raise cluster.ClusterReadError(message, code(error)) from None
    except rest.TRANSPORT_ERRORS as error:
        raise cluster.ClusterReadError(f"cannot {what}: {error}") from None


def find(api: rest.Api, namespace: str, name: str) -> Archived | None:
    """The newest archive of experiment `name` in `namespace`, or None. Raises ClusterReadError
    (the API) or ArchiveReadError (the archive)."""
    with _api_errors(f"list the results archives in {namespace}"):
        maps = api.get(rest.path("", "v1", "configmaps", namespace),
                       params={"labelSelector": f"{LABEL_ARCHIVE}={name}"})  # fmt: skip
    found = newest(list(maps.get("items") or []))
    return decode(found) if found is not None else None


def prune(
    api: rest.Api,
    namespace: str,
    older_than_seconds: float,
    experiment: str | None = None,
    now: float | None = None,
) -> list[str]:
    """Delete the archives in `namespace` (of `experiment` only, if given) whose experiment is
    gone and that are older than `older_than_seconds`; their names. Raises ClusterReadError."""
    configmaps = rest.path("", "v1", "configmaps", namespace)
    selector = f"{LABEL_ARCHIVE}={experiment}" if experiment else LABEL_ARCHIVE
    with _api_errors(f"list the results archives and experiments in {namespace}"):
        maps = api.get(configmaps, params={"labelSelector": selector})
        live = api.get(rest.path(GROUP, VERSION, EXPERIMENTS, namespace))
    uids = {str((x.get("metadata") or {}).get("uid")) for x in live["items"]}
    bodies = list(maps.get("items") or [])
    names = prunable(bodies, uids, older_than_seconds, time.time() if now is None else now)
    for target in names:
        with _api_errors(f"delete configmap {namespace}/{target}"):
            try:
                api.delete(f"{configmaps}/{target}")
            except ApiError as error:
                if code(error) != NOT_FOUND:  # deleted meanwhile: what this call wanted
                    raise
    return names
