#!/usr/bin/env bash
# The test command (README.md, .ci/run): installs what is missing, builds the control plane, the
# node (kubelet, kube-proxy, CoreDNS, fake-GPU plugin), Kueue and the images once (cached), then runs
# lint, format check, type checks, the import contracts and every test tier (unit, horovod,
# cluster, prometheus, node). Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
step() { echo "== $* ($(date -u +%H:%M:%S))" >&2; }
step install;             bash hack/install.sh
# The images build (network and disk bound) runs beside the Go builds (CPU bound).
images_log=$(mktemp); bash hack/build-images.sh >/dev/null 2>"$images_log" & images=$!
step control-plane;       bash hack/build-control-plane.sh >/dev/null
step node;                bash hack/build-node.sh >/dev/null
step kueue;               bash hack/build-kueue.sh >/dev/null
step images;              wait "$images" || { cat "$images_log" >&2; exit 1; }; rm -f "$images_log"
step ruff;                .venv/bin/ruff check . && .venv/bin/ruff format --check .
step mypy;                .venv/bin/mypy
step import-contracts;    .venv/bin/lint-imports
step pytest;              .venv/bin/python -m pytest "$@"
