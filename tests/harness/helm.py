"""Helm (built by hack/build-helm.sh) and the chart charts/scalelab, for the chart tests
(tests/chart) and the node tier's install with Helm (tests/node/test_helm.py)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import yaml

from tests.harness.controlplane import REPO, control_plane_bin

BUILD_SCRIPT = REPO / "hack" / "build-helm.sh"
CHART = REPO / "charts" / "scalelab"


def helm_bin() -> Path:
    """The cached helm binary; builds it once (minutes)."""
    out = subprocess.run(
        ["bash", str(BUILD_SCRIPT)], check=True, capture_output=True, text=True
    ).stdout
    return Path(out.strip().splitlines()[-1]) / "helm"


def kubectl_bin() -> str:
    """kubectl for `kubectl kustomize`: an installed one, else the control plane's build."""
    return shutil.which("kubectl") or str(control_plane_bin("kubectl") / "kubectl")


def helm(*args: str, home: Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run helm with its cache, configuration and data under `home` (none of the user's)."""
    env = {
        "HOME": str(home),
        "HELM_CACHE_HOME": str(home / "cache"),
        "HELM_CONFIG_HOME": str(home / "config"),
        "HELM_DATA_HOME": str(home / "data"),
        "PATH": "/usr/bin:/bin",
    }
    r = subprocess.run(
        [str(helm_bin()), *args], check=False, capture_output=True, text=True, env=env
    )
    if check and r.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)}: {r.stderr}")
    return r


def objects(text: str) -> list[dict[str, Any]]:
    """The objects of a multi-document YAML stream (empty documents dropped)."""
    return [d for d in yaml.safe_load_all(text) if d]


def by_key(objs: list[dict[str, Any]]) -> dict[tuple[str, str, str], dict[str, Any]]:
    """Objects keyed by (kind, namespace, name), each key once."""
    out = {(o["kind"], o["metadata"].get("namespace", ""), o["metadata"]["name"]): o for o in objs}
    assert len(out) == len(objs), "two objects of the same kind, namespace and name"
    return out
