"""Kueue's visibility API (`visibility.kueue.x-k8s.io`, the pending workloads of a queue with
their positions) served through a test API server, for the real-node tier: the Kueue harness
(tests/harness/kueue.py) calls `enable` before the manager starts and `register` once it serves,
and `disable` at stop.

The visibility server is an aggregated API server inside Kueue's manager. For the API server to
proxy to it, three things a real cluster has and our test control plane lacks:

- a front proxy: the API server presents a client certificate (`--proxy-client-cert-file`) that
  the aggregated server trusts through `--requestheader-client-ca-file`, published in
  kube-system/extension-apiserver-authentication; without it every proxied request arrives as
  anonymous and is refused. `enable` makes a front-proxy CA and client certificate and restarts
  the API server once with those flags (the same ports and etcd data: clients reconnect), and with
  `--enable-aggregator-routing`, so the API server dials the Service's endpoint itself rather than
  its ClusterIP;
- a Service with an endpoint the API server can dial: the manager is a host process, so the
  endpoint is the node address (an EndpointSlice by hand; endpoints may not be loopback);
- the serving certificate, which Kueue reads from the fixed path /visibility when its own
  certificate management is off (pkg/visibility/server.go). Like /etc/kueue, the harness writes
  it only where /visibility does not exist, and removes it at stop. The APIServices skip TLS
  verification as the release's own do (config/components/visibility).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import yaml

from tests.harness.controlplane import ControlPlane
from tests.harness.ports import wait_until

CERT_DIR = Path("/visibility")
GROUP = "visibility.kueue.x-k8s.io"
VERSIONS = ("v1beta2", "v1beta1")
SERVICE = "kueue-visibility-server"
FRONT_PROXY_CLIENT = "front-proxy-client"


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def front_proxy_flags(d: Path) -> list[str]:
    """A front-proxy CA and client certificate in `d`; the API server flags that use them."""
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
             "-keyout", "front-proxy-ca.key", "-out", "front-proxy-ca.crt",
             "-subj", "/CN=scalelab-front-proxy-ca",
             "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=d)  # fmt: skip
    (d / "front-proxy.ext").write_text(
        "basicConstraints=CA:FALSE\nsubjectKeyIdentifier=hash\n"
        "authorityKeyIdentifier=keyid,issuer\n"
        "keyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=clientAuth\n"
    )
    _openssl("req", "-new", "-newkey", "rsa:2048", "-nodes", "-keyout", "front-proxy.key",
             "-out", "front-proxy.csr", "-subj", f"/CN={FRONT_PROXY_CLIENT}", cwd=d)  # fmt: skip
    _openssl("x509", "-req", "-in", "front-proxy.csr", "-CA", "front-proxy-ca.crt",
             "-CAkey", "front-proxy-ca.key", "-CAcreateserial", "-days", "2",
             "-out", "front-proxy.crt", "-extfile", "front-proxy.ext", cwd=d)  # fmt: skip
    return [
        f"--requestheader-client-ca-file={d / 'front-proxy-ca.crt'}",
        f"--requestheader-allowed-names={FRONT_PROXY_CLIENT}",
        "--requestheader-username-headers=X-Remote-User",
        "--requestheader-group-headers=X-Remote-Group",
        "--requestheader-extra-headers-prefix=X-Remote-Extra-",
        f"--proxy-client-cert-file={d / 'front-proxy.crt'}",
        f"--proxy-client-key-file={d / 'front-proxy.key'}",
        "--enable-aggregator-routing=true",
    ]


def enable(cp: ControlPlane, workdir: Path) -> bool:
    """Give the API server a front proxy (once per control plane: a restart) and write the
    serving certificate to /visibility. False: /visibility exists, nothing was changed."""
    if CERT_DIR.exists():
        return False
    args = cp.args["kube-apiserver"]
    if not any(a.startswith("--proxy-client-cert-file=") for a in args):
        args.extend(front_proxy_flags(workdir))
        cp.restart("kube-apiserver")
    CERT_DIR.mkdir()
    for name, src in (("tls.crt", "server.crt"), ("tls.key", "server.key")):
        (CERT_DIR / name).write_bytes((cp.workdir / src).read_bytes())
    return True


def objects(namespace: str, ip: str, port: int) -> list[dict[str, Any]]:
    """The Service, its EndpointSlice (the manager on the host) and the APIServices."""
    service: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": SERVICE, "namespace": namespace},
        "spec": {"ports": [{"name": "https", "port": 443, "targetPort": port}]},
    }
    endpoints: dict[str, Any] = {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": SERVICE,
            "namespace": namespace,
            "labels": {"kubernetes.io/service-name": SERVICE},
        },
        "addressType": "IPv4",
        "endpoints": [{"addresses": [ip], "conditions": {"ready": True}}],
        "ports": [{"name": "https", "port": port, "protocol": "TCP"}],
    }
    services = [
        {
            "apiVersion": "apiregistration.k8s.io/v1",
            "kind": "APIService",
            "metadata": {"name": f"{version}.{GROUP}"},
            "spec": {
                "group": GROUP,
                "version": version,
                "groupPriorityMinimum": 100,
                "versionPriority": 100,
                "insecureSkipTLSVerify": True,
                "service": {"name": SERVICE, "namespace": namespace, "port": 443},
            },
        }
        for version in VERSIONS
    ]
    return [service, endpoints, *services]


def register(cp: ControlPlane, namespace: str, ip: str, port: int) -> None:
    """Register the manager's visibility server and wait until the API server proxies to it."""
    cp.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(objects(namespace, ip, port)))
    wait_until(
        lambda: (
            cp.kubectl("get", "--raw", f"/apis/{GROUP}/{VERSIONS[0]}", check=False).returncode == 0
        ),
        120,
        "Kueue's visibility API through the API server",
    )


def disable(cp: ControlPlane, namespace: str) -> None:
    """Unregister the APIServices (a dead aggregated API fails discovery for every client) and
    remove /visibility."""
    for version in VERSIONS:
        cp.kubectl("delete", "apiservice", f"{version}.{GROUP}", "--ignore-not-found",
                   check=False)  # fmt: skip
    cp.kubectl("delete", "service,endpointslice", SERVICE, "-n", namespace, "--ignore-not-found",
               check=False)  # fmt: skip
    shutil.rmtree(CERT_DIR, ignore_errors=True)
