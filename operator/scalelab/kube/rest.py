"""The operator's client of the Kubernetes API, on lightkube: its configuration loading (the
in-cluster ServiceAccount, whose token it re-reads when rotated; a kubeconfig with its CA,
client certificates, tokens and exec plugins), one HTTP client with a bounded connection pool,
and JSON as plain dicts both ways. The operator's calls are requests by path (custom objects,
discovery, the Kueue visibility API), so no resource model is built or imported; the official
`kubernetes` client it replaces costs ~29 MiB of RSS in its imports alone (and kopf imports it
whenever it is installed, so the operator image does not install it).

Every answer that is not 2xx raises lightkube's `ApiError`, its `.status.code` the HTTP status
(also when the body is no Status: a proxy's page); `code` and `reason` read it. Connection
errors are `httpx2.TransportError`s (`TRANSPORT_ERRORS`). `login` gives kopf the same
credentials for its own connection.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, cast

import httpx2 as httpx
import kopf
import msgspec
import yaml
from lightkube import ApiError, ConfigError, KubeConfig
from lightkube.config.client_adapter import ConnectionParams, user_auth
from lightkube.config.kubeconfig import DEFAULT_KUBECONFIG, SingleConfig
from lightkube.config.models import User
from lightkube.models.meta_v1 import Status

__all__ = [
    "Api", "ApiError", "ConfigError", "api_error", "code", "load_config", "login", "path", "reason",
]  # fmt: skip

JSON, MERGE = "application/json", "application/merge-patch+json"
#: Objects per list call of `Api.pages`.
PAGE = 200
#: Pooled connections kept open (a call beyond them opens one and closes it after, like the
#: urllib3 pool of the kubernetes client this replaces); `Kube` sets its own parallelism.
POOL = 8
#: Tries of a connection that could not be opened (urllib3's default of the client before).
CONNECT_RETRIES = 3
#: What a request that never reached an answer raises (no connection, a timeout).
TRANSPORT_ERRORS: tuple[type[Exception], ...] = (httpx.TransportError, OSError)
#: kopf's priority of a login through an API client library (kopf.login_via_client's).
PRIORITY = 10
_decode, _encode = msgspec.json.decode, msgspec.json.encode


def code(error: ApiError) -> int:
    """The HTTP status of an API error (e.g. 404, 409)."""
    return int(error.status.code or error.response.status_code)


def reason(error: ApiError) -> str:
    """The HTTP reason phrase of an API error ("Not Found"), as the error messages say it."""
    phrase = error.response.reason_phrase if error.response is not None else ""
    return str(phrase or error.status.reason or "")


def api_error(status: int, phrase: str, message: str = "") -> ApiError:
    """An ApiError of HTTP status `status` with reason phrase `phrase` and no response."""
    return ApiError(status=Status(code=status, reason=phrase, message=message or phrase))


def _error(response: httpx.Response) -> ApiError:
    """The ApiError of a non-2xx answer; a body that is no Status (an HTML page of a proxy)
    becomes one with its status code and reason phrase."""
    try:
        body = _decode(response.content)
    except msgspec.DecodeError:
        body = None
    if isinstance(body, dict) and body.get("kind") == "Status":
        status = cast(Status, Status.from_dict(body))
    else:
        status = Status(message=response.text[:300], reason=response.reason_phrase)
    status.code = status.code or response.status_code
    error = ApiError(request=response.request, status=status)
    error.response = response
    return error


class Api:
    """One API server, its credentials, and a pool of `pool` kept connections; `transport`
    replaces the network (the unit tests' httpx2.MockTransport)."""

    def __init__(
        self, config: SingleConfig, pool: int = POOL, transport: httpx.BaseTransport | None = None
    ) -> None:
        self.config, self.transport = config, transport
        #: Called with (method, URL) before every request (the operator's request counter).
        self.on_request: Callable[[str, str], None] | None = None
        self._http = self._client(pool)

    @property
    def host(self) -> str:
        """The API server's URL."""
        return str(self.config.cluster.server)

    def _client(self, pool: int) -> httpx.Client:
        # No timeout unless a call asks for one, and no proxy from the environment: as before.
        params = ConnectionParams(timeout=httpx.Timeout(None), trust_env=False)
        # A context without a user is anonymous (lightkube's adapter asserts one).
        args = params.httpx_params(self.config._replace(user=self.config.user or User()))
        limits = httpx.Limits(max_connections=None, max_keepalive_connections=pool)
        args["transport"] = self.transport or httpx.HTTPTransport(
            verify=args["verify"], limits=limits, retries=CONNECT_RETRIES, trust_env=False
        )
        return httpx.Client(**args)

    def resize(self, pool: int) -> None:
        """Keep `pool` connections (before the first request: the old client is closed)."""
        self._http.close()
        self._http = self._client(pool)

    def close(self) -> None:
        """Close the pooled connections."""
        self._http.close()

    def __enter__(self) -> Api:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        body: Any = None,
        content_type: str = JSON,
        timeout: float | None = None,
    ) -> Any:
        """Send one request; its JSON answer as plain data (None when empty). Raises ApiError
        for an answer that is not 2xx, a TRANSPORT_ERRORS one without an answer."""
        query = {k: v for k, v in (params or {}).items() if v is not None}
        headers = {"Accept": JSON}
        content = None
        if body is not None:
            content, headers["Content-Type"] = _encode(body), content_type
        request = self._http.build_request(
            method, path, params=query, content=content, headers=headers,
            timeout=httpx.Timeout(timeout) if timeout is not None else httpx.USE_CLIENT_DEFAULT,
        )  # fmt: skip
        if self.on_request is not None:
            self.on_request(method, str(request.url))
        response = self._http.send(request)
        if not response.is_success:
            raise _error(response)
        return _decode(response.content) if response.content else None

    def get(self, path: str, **kwargs: Any) -> Any:
        """GET `path`."""
        return self.request("GET", path, **kwargs)

    def post(self, path: str, body: Any, **kwargs: Any) -> Any:
        """POST `body` to `path` (a create)."""
        return self.request("POST", path, body=body, **kwargs)

    def put(self, path: str, body: Any, **kwargs: Any) -> Any:
        """PUT `body` to `path` (a replace)."""
        return self.request("PUT", path, body=body, **kwargs)

    def patch(self, path: str, body: Any, **kwargs: Any) -> Any:
        """A JSON merge patch of `path`."""
        return self.request("PATCH", path, body=body, content_type=MERGE, **kwargs)

    def delete(self, path: str, **kwargs: Any) -> Any:
        """DELETE `path`."""
        return self.request("DELETE", path, **kwargs)

    def pages(
        self, path: str, params: Mapping[str, Any] | None = None, limit: int = PAGE
    ) -> Iterator[list[dict[str, Any]]]:
        """The items of the collection `path`, a list call of at most `limit` each (the API's
        chunked list: a page's bodies are held, not the whole collection's)."""
        token = None
        while True:
            page = self.get(path, params={**(params or {}), "limit": limit, "continue": token})
            yield list(page.get("items") or [])
            token = (page.get("metadata") or {}).get("continue")
            if not token:
                return


def path(group: str, version: str, plural: str, namespace: str = "", name: str = "") -> str:
    """The URL path of a collection or an object (group "" is the core API)."""
    parts = ["api", version] if not group else ["apis", group, version]
    if namespace:
        parts += ["namespaces", namespace]
    parts.append(plural)
    if name:
        parts.append(name)
    return "/" + "/".join(parts)


def in_cluster() -> SingleConfig:
    """The in-cluster ServiceAccount's configuration; ConfigError outside a pod."""
    if "KUBERNETES_SERVICE_HOST" not in os.environ:
        raise ConfigError("KUBERNETES_SERVICE_HOST is not set: not in a pod")
    return _single(KubeConfig.from_service_account())


def kubeconfig() -> SingleConfig:
    """The current context of the kubeconfig kubectl would use (KUBECONFIG, else
    ~/.kube/config); ConfigError when there is none. Several files in KUBECONFIG are merged as
    kubectl merges them: the first to name a context, cluster or user (or the current
    context) wins; relative paths are taken from the first file's directory."""
    files = [f for f in (os.environ.get("KUBECONFIG") or "").split(os.pathsep) if f]
    if len(files) <= 1:
        return _single(KubeConfig.from_file(files[0] if files else DEFAULT_KUBECONFIG))
    merged: dict[str, Any] = {"clusters": [], "contexts": [], "users": []}
    found = [Path(f).expanduser() for f in files if Path(f).expanduser().is_file()]
    if not found:
        raise ConfigError(f"no kubeconfig file of KUBECONFIG={os.environ['KUBECONFIG']} exists")
    for file in found:
        conf = yaml.safe_load(file.read_text()) or {}
        merged["current-context"] = merged.get("current-context") or conf.get("current-context")
        for key in ("clusters", "contexts", "users"):
            names = {item["name"] for item in merged[key]}
            merged[key] += [i for i in conf.get(key) or [] if i.get("name") not in names]
    return _single(KubeConfig.from_dict(merged, fname=found[0]))


def _single(config: KubeConfig) -> SingleConfig:
    found = config.get()
    if found is None:
        raise ConfigError("no current context")
    return found


def load_config() -> SingleConfig:
    """In-cluster ServiceAccount credentials, else KUBECONFIG (development, tests)."""
    try:
        return in_cluster()
    except ConfigError:
        return kubeconfig()


def login(config: SingleConfig, trust_env: bool) -> kopf.ConnectionInfo:
    """kopf's connection from the same configuration: the Authorization header lightkube would
    send now (a ServiceAccount token read afresh, an exec plugin's token), the CA and client
    certificate; kopf logs in again through this on a 401."""
    cluster, user = config.cluster, config.user
    header = ""
    auth = user_auth(user) if user is not None else None
    if auth is not None:
        flow = auth.sync_auth_flow(httpx.Request("GET", cluster.server))
        header = next(flow).headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")

    def file(name: str | None) -> Any:
        return config.abs_file(name) if name else None

    return kopf.ConnectionInfo(
        server=cluster.server,
        ca_path=file(cluster.certificate_auth),
        ca_data=cluster.certificate_auth_data,
        insecure=bool(cluster.insecure),
        scheme=scheme or None,
        token=token or None,
        certificate_path=file(user.client_cert) if user else None,
        certificate_data=user.client_cert_data if user else None,
        private_key_path=file(user.client_key) if user else None,
        private_key_data=user.client_key_data if user else None,
        trust_env=trust_env,
        priority=PRIORITY,
    )
