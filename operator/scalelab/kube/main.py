"""`scalelab operator`: load the API credentials, start /metrics, register the handlers, run kopf.

Called by `scalelab operator` (scalelab/cli). The only place that starts servers or reads the
environment (through `Config.from_env`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import kopf
from kopf._cogs.structs.references import Insights  # kopf pinned: see kube/resolve.py
from kubernetes import client
from kubernetes import config as kube_config
from prometheus_client import CollectorRegistry, start_http_server

from scalelab.api import GROUP
from scalelab.kube import handlers, resolve
from scalelab.kube.apply import Kube
from scalelab.kube.metrics import OperatorMetrics
from scalelab.kube.operations import Context
from scalelab.kube.settings import Config

#: Where kopf keeps its own bookkeeping on our objects (instead of kopf.zalando.org/*): our group.
PREFIX = GROUP


def load_credentials() -> client.ApiClient:
    """In-cluster ServiceAccount credentials, else KUBECONFIG (development, tests)."""
    try:
        kube_config.load_incluster_config()  # type: ignore[no-untyped-call]
    except kube_config.ConfigException:
        kube_config.load_kube_config()  # type: ignore[no-untyped-call]
    return client.ApiClient()


def kopf_settings() -> kopf.OperatorSettings:
    """kopf settings: our own annotation prefix and finalizer name; only warnings as Events (every
    handler success as an Event would be an API write per handler call)."""
    settings = kopf.OperatorSettings()
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
    """Run the operator until SIGTERM/SIGINT; watches `namespaces`, or all when empty."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    registry = CollectorRegistry()
    metrics = OperatorMetrics(registry, handlers.RECONCILING)
    port = cfg.metrics_port if metrics_port is None else metrics_port
    if port:
        start_http_server(port, registry=registry)
    operator_registry, settings, insights = kopf.OperatorRegistry(), kopf_settings(), Insights()
    handlers.register(operator_registry, cfg)
    resolve.register(operator_registry, settings, insights, handlers.WATCHED)
    ctx = Context(kube=Kube(load_credentials()), config=cfg, metrics=metrics)
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
