#!/usr/bin/env bash
# Trainer image entrypoint. MPIJob worker pods run `sshd` (the MPI operator sets their command to
# `/usr/sbin/sshd -De`, rewritten here to the unprivileged config); the launcher and local use run
# the given command, normally `mpirun ... python -m scalelab_trainer ...`.
set -euo pipefail
if [ "${1:-}" = "/usr/sbin/sshd" ] || [ "${1:-}" = "sshd" ]; then
  exec /usr/sbin/sshd -De -f /home/mpiuser/.sshd_config
fi
exec "$@"
