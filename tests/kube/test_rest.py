"""The operator's API client (kube/rest.py): the requests it sends, the errors it raises, the
credentials it hands kopf, and that it never imports the official kubernetes client."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx2 as httpx
import pytest
import yaml
from lightkube import ApiError, KubeConfig

from scalelab.kube import leader, rest
from tests.kube.fake_api import fake_api, sent, status

pytestmark = pytest.mark.unit


def test_requests_go_to_the_path_with_query_json_body_and_merge_patches() -> None:
    seen: list[tuple[str, str, str, Any]] = []

    def answer(request: httpx.Request) -> tuple[int, Any]:
        kind = request.headers.get("Content-Type", "")
        seen.append((request.method, str(request.url), kind, sent(request)))
        return 200, {"ok": True}

    api = fake_api(answer)
    trials = rest.path("scalelab.dev", "v1alpha1", "scaletrials", "ns")
    assert trials == "/apis/scalelab.dev/v1alpha1/namespaces/ns/scaletrials"
    assert rest.path("", "v1", "events", "ns") == "/api/v1/namespaces/ns/events"
    assert api.get(trials, params={"labelSelector": "a=b", "limit": None}) == {"ok": True}
    api.patch(f"{trials}/t1/status", {"status": {"phase": "Running"}})
    api.delete(f"{trials}/t1", params={"propagationPolicy": "Background"})
    assert seen == [
        ("GET", f"https://api.example{trials}?labelSelector=a%3Db", "", None),
        ("PATCH", f"https://api.example{trials}/t1/status", rest.MERGE,
         {"status": {"phase": "Running"}}),
        ("DELETE", f"https://api.example{trials}/t1?propagationPolicy=Background", "", None),
    ]  # fmt: skip


def test_an_answer_that_is_not_2xx_is_an_api_error_with_its_http_status() -> None:
    api = fake_api(lambda request: status(409, "AlreadyExists"))
    with pytest.raises(ApiError) as caught:
        api.post("/api/v1/namespaces/ns/configmaps", {"metadata": {"name": "x"}})
    assert (rest.code(caught.value), caught.value.status.reason) == (409, "AlreadyExists")
    assert rest.reason(caught.value) == "Conflict"  # the HTTP reason phrase, as messages say it
    page = fake_api(lambda request: (502, b"<html>Bad Gateway</html>"))
    with pytest.raises(ApiError) as caught:
        page.get("/apis")
    assert (rest.code(caught.value), rest.reason(caught.value)) == (502, "Bad Gateway")
    made = rest.api_error(403, "Forbidden")
    assert (rest.code(made), rest.reason(made)) == (403, "Forbidden")


def test_every_request_is_reported_to_the_hook_with_its_full_url() -> None:
    api = fake_api(lambda request: (200, None))
    calls: list[tuple[str, str]] = []
    api.on_request = lambda method, url: calls.append((method, url))
    assert api.get("/version") is None
    assert calls == [("GET", "https://api.example/version")]


def test_kopf_logs_in_with_the_same_token_ca_and_client_certificate(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("rotated-token\n")
    ca = base64.b64encode(b"-----BEGIN CERTIFICATE-----").decode()
    config = KubeConfig.from_dict(
        {
            "current-context": "c",
            "contexts": [{"name": "c", "context": {"cluster": "k", "user": "u"}}],
            "clusters": [{"name": "k", "cluster": {"server": "https://k:6443",
                                                   "certificate-authority-data": ca}}],
            "users": [{"name": "u", "user": {"tokenFile": str(token_file),
                                             "client-certificate": "crt.pem"}}],
        },
        fname=tmp_path / "kubeconfig",
    ).get()  # fmt: skip
    assert config is not None
    info = rest.login(config, trust_env=False)
    assert (info.server, info.scheme, info.token) == ("https://k:6443", "Bearer", "rotated-token")
    assert info.ca_data == ca
    assert info.ca_path is None
    assert Path(str(info.certificate_path)) == tmp_path / "crt.pem"
    anonymous = rest.login(config._replace(user=None), trust_env=False)
    assert (anonymous.scheme, anonymous.token) == (None, None)


def test_several_kubeconfig_files_merge_as_kubectl_merges_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def write(name: str, conf: dict[str, Any]) -> str:
        (tmp_path / name).write_text(yaml.safe_dump(conf))
        return str(tmp_path / name)

    first = write("a", {"clusters": [{"name": "k", "cluster": {"server": "https://a:6443"}}],
                        "contexts": [], "users": []})  # fmt: skip
    second = write("b", {
        "current-context": "c",
        "clusters": [{"name": "k", "cluster": {"server": "https://b:6443"}}],
        "contexts": [{"name": "c", "context": {"cluster": "k", "namespace": "team"}}],
    })  # fmt: skip
    monkeypatch.setenv("KUBECONFIG", os.pathsep.join([first, str(tmp_path / "gone"), second]))
    config = rest.kubeconfig()
    assert (config.cluster.server, config.namespace) == ("https://a:6443", "team")


def test_a_leases_micro_time_reads_back_as_it_is_written() -> None:
    assert leader._micro_time("2026-12-07T16:42:57.000000Z") == "2026-12-07T16:42:57.000000Z"
    assert leader._micro_time("2026-12-07T16:42:57.5Z") == "2026-12-07T16:42:57.500000Z"
    assert leader._micro_time(None) is None


def test_the_operator_imports_without_the_kubernetes_client() -> None:
    """As in the operator image, which does not install it (kopf would import it if it could)."""
    code = (
        "import sys; sys.modules['kubernetes'] = None\n"
        "import scalelab.kube.main, scalelab.cli\n"
        "assert not [m for m in sys.modules if m.startswith(('kubernetes.', 'urllib3'))]\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
