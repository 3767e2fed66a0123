#!/usr/bin/env bash
# The test command (README.md, .ci/run): installs what is missing, builds the control plane once
# (cached), then runs lint, format check, type checks, the import contracts and every test tier
# (unit, horovod, cluster, prometheus). Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
step() { echo "== $* ($(date -u +%H:%M:%S))" >&2; }
step install;             bash hack/install.sh
step control-plane;       bash hack/build-control-plane.sh >/dev/null
step ruff;                .venv/bin/ruff check . && .venv/bin/ruff format --check .
step mypy;                .venv/bin/mypy
step import-contracts;    .venv/bin/lint-imports
step pytest;              .venv/bin/python -m pytest "$@"
