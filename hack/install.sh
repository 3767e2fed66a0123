#!/usr/bin/env bash
# Installs what a new machine needs to run scalelab locally and its tests: Debian packages
# (OpenMPI for Horovod, Prometheus for the observability tests, Chromium for the report test)
# and the Python virtualenv .venv (hack/install-python.sh). Idempotent; called by hack/test.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
PACKAGES=(openmpi-bin libopenmpi-dev prometheus chromium)
missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "install: apt-get install ${missing[*]}" >&2
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
  $SUDO apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
fi
bash hack/install-python.sh
