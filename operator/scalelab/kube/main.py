"""`scalelab operator`: load the API credentials, start /metrics, register the handlers, run kopf;
with leader election, only while holding the Lease (kube/leader.py, docs/operator-ha.md). Every
API request the process makes, kopf's included, is counted in /metrics (`count_requests`).

Called by `scalelab operator` (scalelab/cli). The only place that starts servers or reads the
environment (through `Config.from_env`).
"""

from __future__ import annotations

import ctypes
import logging
import os
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import kopf
from kopf._cogs.clients import api as kopf_api  # kopf pinned: see kube/resolve.py
from kopf._cogs.structs.references import Insights
from prometheus_client import CollectorRegistry, Gauge, start_http_server

from scalelab.api import GROUP
from scalelab.kube import handlers, leader, resolve, rest
from scalelab.kube.apply import Kube
from scalelab.kube.metrics import OperatorMetrics
from scalelab.kube.mpijob import LABEL_ARCHIVED
from scalelab.kube.operations import Context
from scalelab.kube.resources import MPIJOB_RESOURCE, TRIAL_RESOURCE
from scalelab.kube.settings import Config

#: Exit status of a replica that lost the Lease: the kubelet restarts it, as a standby.
EXIT_LOST_LEADERSHIP = 1
log = logging.getLogger(__name__)

#: Where kopf keeps its own bookkeeping on our objects (instead of kopf.zalando.org/*): our group.
PREFIX = GROUP


def load_credentials() -> rest.Api:
    """In-cluster ServiceAccount credentials, else KUBECONFIG (development, tests)."""
    return rest.Api(rest.load_config())


#: Objects per page of kopf's initial listing (client-go's default page size).
LIST_CHUNK = 500
#: Seconds an object's kopf worker waits for its next event before it exits (kopf's default 5).
WORKER_IDLE_SECONDS = 0.5


def kopf_settings() -> kopf.OperatorSettings:
    """kopf settings: our own annotation prefix and finalizer name; only warnings as Events (every
    handler success as an Event would be an API write per handler call).

    And memory that does not grow with what the cluster holds: the API server sends only the
    ScaleTrials and MPIJobs scalelab made, and of those only the ones of experiments not yet
    finished and archived (LABEL_ARCHIVED: kube/apply.py `retire`), by a label selector, not
    kopf's filter after parsing every object; the initial listing comes in pages of
    LIST_CHUNK, not all objects in one response; and each object's worker, which holds its
    last body, exits WORKER_IDLE_SECONDS after its last event (a burst of a thousand trials
    and their MPIJobs kept two thousand bodies for five seconds)."""
    settings = kopf.OperatorSettings()
    ours = ",".join(
        [*(f"{key}={value}" for key, value in handlers.OURS.items()), f"!{LABEL_ARCHIVED}"]
    )
    for group, _, plural in (TRIAL_RESOURCE, MPIJOB_RESOURCE):
        settings.watching.label_selectors[group, plural] = ours
    settings.watching.chunk_size = LIST_CHUNK
    settings.queueing.idle_timeout = WORKER_IDLE_SECONDS
    settings.persistence.finalizer = f"{PREFIX}/finalizer"
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=PREFIX)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=PREFIX, key="last-handled-configuration"
    )
    settings.posting.level = logging.WARNING
    return settings


def run(
    cfg: Config,
    *,
    namespaces: Sequence[str] = (),
    standalone: bool = True,
    metrics_port: int | None = None,
    liveness_port: int = 8081,
) -> int:
    """Run the operator until SIGTERM/SIGINT; watches `namespaces`, or all when empty. With
    `cfg.leader_elect`, stand by (serving /metrics and /healthz) until this replica holds the
    Lease, and exit EXIT_LOST_LEADERSHIP the moment it cannot keep it."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    tune_malloc()  # before any thread starts
    registry = CollectorRegistry()
    metrics = OperatorMetrics(registry, handlers.RECONCILING)
    leading = metrics.leader
    port = cfg.metrics_port if metrics_port is None else metrics_port
    if port:  # before the Lease: a standby's /metrics says it stands by
        start_http_server(port, registry=registry)
    operator_registry, settings, insights = kopf.OperatorRegistry(), kopf_settings(), Insights()
    handlers.register(operator_registry, cfg)
    resolve.register(operator_registry, settings, insights, handlers.WATCHED)
    api = load_credentials()
    count_requests(api, metrics)
    kube = Kube(api, on_write=lambda verb, what: metrics.api_writes.labels(verb, what).inc())
    ctx = Context(kube=kube, config=cfg, metrics=metrics)
    with _leadership(cfg, api, leading, liveness_port):
        kopf.run(
            registry=operator_registry,
            settings=settings,
            insights=insights,
            standalone=standalone,
            clusterwide=not namespaces,
            namespaces=list(namespaces),
            liveness_endpoint=f"http://0.0.0.0:{liveness_port}/healthz" if liveness_port else None,
            memo=kopf.Memo(ctx=ctx),
        )
    return 0


#: glibc's mallopt parameter for the number of malloc arenas.
M_ARENA_MAX = -8
#: Seconds between returns of freed heap memory to the system.
TRIM_SECONDS = 30.0


def tune_malloc(trim_seconds: float = TRIM_SECONDS) -> bool:
    """With glibc: two malloc arenas instead of eight per core (each thread that allocates,
    such as the API calls' worker threads, otherwise gets an arena of its own, and freed memory
    in one is not reused by another), and a thread that hands freed heap pages back to the
    system every `trim_seconds` (after a burst of a thousand trials, or listing every finished
    experiment's objects at start, Python frees the objects but the pages stay resident).
    Returns whether glibc was found."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(M_ARENA_MAX, 2)
    except (OSError, AttributeError):
        return False  # not glibc (musl, macOS): nothing to tune

    def trim() -> None:
        while True:
            time.sleep(trim_seconds)
            libc.malloc_trim(0)

    threading.Thread(target=trim, name="malloc-trim", daemon=True).start()
    return True


#: The attribute of a counting wrapper that holds the function it wraps.
UNCOUNTED = "_scalelab_uncounted"


def count_requests(api: rest.Api, metrics: OperatorMetrics) -> None:
    """Count every request to the API server in `metrics`: those of the operator's client `api`
    (reconciliation, prerequisites, the Lease; its request hook) and kopf's. kopf has no hook
    for its requests; all of them go through one function of its API module, wrapped here (the
    kopf version is pinned, see kube/resolve.py). Wrapping again replaces the earlier wrapper."""

    def counted(method: str, url: str) -> None:
        metrics.request("scalelab", method, url)

    # Not __wrapped__: kopf's request is itself a functools.wraps wrapper (its authentication).
    original = getattr(kopf_api.request, UNCOUNTED, kopf_api.request)

    async def kopf_counted(method: str, url: str, **kwargs: Any) -> Any:
        metrics.request("kopf", method, url)
        return await original(method, url, **kwargs)

    setattr(kopf_counted, UNCOUNTED, original)
    api.on_request = counted
    setattr(kopf_api, "request", kopf_counted)  # noqa: B010 - the module global kopf calls


@contextmanager
def _leadership(cfg: Config, api: rest.Api, leading: Gauge, liveness_port: int) -> Iterator[None]:
    """Hold the Lease around the body (at once without leader election): wait for it, renew it
    in a thread that ends the process if it is lost, release it when the body returns."""
    if not cfg.leader_elect:
        leading.set(1)
        yield
        return
    elector = leader.Elector(
        leader.KubeLeases(api, cfg.lease_name, cfg.pod_namespace),
        leader.identity(cfg.pod_name),
        leader.Timing(
            cfg.lease_duration_seconds, cfg.lease_renew_deadline_seconds, cfg.lease_retry_seconds
        ),
    )
    leading.set(0)
    health = leader.StandbyHealth(liveness_port) if liveness_port else None
    try:  # SIGTERM while standing by ends the process: nothing to hand over
        elector.acquire(threading.Event())
    finally:
        if health is not None:
            health.close()
    leading.set(1)
    stop = threading.Event()
    renewer = threading.Thread(
        target=_keep_or_exit, args=(elector, stop, leading), name="lease-renewer", daemon=True
    )
    renewer.start()
    try:
        yield
    finally:  # kopf has stopped: nothing acts any more, so the standby may take over at once
        stop.set()
        renewer.join()
        leading.set(0)
        elector.release()


def _keep_or_exit(elector: leader.Elector, stop: threading.Event, leading: Gauge) -> None:
    """Renew until stopped; on lost leadership end the process now, from this thread: kopf's
    handlers must not write once a standby may hold the Lease, and a clean kopf shutdown can
    take longer than the gap left before the Lease expires for the standby."""
    if elector.keep(stop):
        leading.set(0)
        log.critical("lost leadership; exiting %d to restart as a standby", EXIT_LOST_LEADERSHIP)
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(EXIT_LOST_LEADERSHIP)
