#!/usr/bin/env bash
# Installs what a new machine needs to run scalelab locally and its tests: Debian packages
# (OpenMPI for Horovod, Prometheus for the observability tests, Chromium for the report test)
# and the Python virtualenv .venv (hack/install-python.sh). Idempotent; called by hack/test.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=hack/lib.sh
source hack/lib.sh
apt_ensure openmpi-bin libopenmpi-dev prometheus chromium
bash hack/install-python.sh
