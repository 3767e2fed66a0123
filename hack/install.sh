#!/usr/bin/env bash
# Installs what a new machine needs to run scalelab locally and its tests: Debian packages and
# the Python virtualenv .venv (hack/install-python.sh). Idempotent; called by hack/test.sh.
#
#   bash hack/install.sh [TIER...]
#
# Without arguments, everything (the local executor and every test tier). With test tiers
# (hack/tiers.py names them), only what those need:
#   any tier    OpenMPI (openmpi-bin libopenmpi-dev): Horovod in .venv is compiled against it and
#               loads it, and the trainer's mpirun tests run it
#   horovod     + Chromium (the local executor's report test opens report.html in it)
#   prometheus  + Prometheus (the node tier too: it scrapes trainer pods)
# Packages already installed are not asked for again (hack/lib.sh apt_ensure), so on a machine
# that has them this needs neither root nor sudo.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=hack/lib.sh
source hack/lib.sh
tiers=" ${*:-unit horovod cluster prometheus node} "
packages=(openmpi-bin libopenmpi-dev)
if [[ $tiers == *" horovod "* ]]; then packages+=(chromium); fi
if [[ $tiers == *" prometheus "* || $tiers == *" node "* ]]; then packages+=(prometheus); fi
apt_ensure "${packages[@]}"
bash hack/install-python.sh
