#!/usr/bin/env bash
# Builds a real Kubernetes control plane (kube-apiserver, kube-controller-manager,
# kube-scheduler, and a kubectl of the same version), etcd and the Kubeflow MPI operator from
# the Go module proxy, once, into a cache outside the repository keyed by version. Called by
# hack/test.sh and by the cluster test fixture.
# Prints the bin directory on the last line of stdout. The Kubernetes build: hack/lib.sh.
# SCALELAB_FETCH_ONLY=1: only download the Go modules (hack/lib.sh fetch_only).
#
#   bash hack/build-control-plane.sh [BINARY...]
#
# Binaries named as arguments are the only ones built (the prometheus tier needs only kubectl,
# for the monitoring manifests' kustomize); without arguments, all of them.
set -euo pipefail
# shellcheck source=hack/lib.sh
source "$(dirname "$0")/lib.sh"

ETCD_VERSION="${ETCD_VERSION:-3.6.16}"
# The MPI operator v0.8.2: the newest the Go module proxy serves here (v0.8.1 and v0.9.0 refused);
# over v0.8.0 it stops recreating launcher pods that are terminating and re-emits the Running
# condition, and it is the version Kueue v0.19.2 is built against (hack/build-kueue.sh).
MPI_OPERATOR_VERSION="${MPI_OPERATOR_VERSION:-0.8.2}"
CACHE="${SCALELAB_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/scalelab}"
BIN="$CACHE/control-plane/k8s-v${K8S_VERSION}-etcd-v${ETCD_VERSION}-mpi-v${MPI_OPERATOR_VERSION}"
export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-buildvcs=false

log() { echo "build-control-plane: $*" >&2; }

K8S_CMDS=(kube-apiserver kube-controller-manager kube-scheduler kubectl)
WANT=("$@")
[ ${#WANT[@]} -gt 0 ] || WANT=("${K8S_CMDS[@]}" etcd mpi-operator)
wants() { [[ " ${WANT[*]} " == *" $1 "* ]]; }
for b in "${WANT[@]}"; do
  [[ " ${K8S_CMDS[*]} etcd mpi-operator " == *" $b "* ]] || { log "no binary $b here"; exit 2; }
done

have_all() {
  for b in "${WANT[@]}"; do [ -x "$BIN/$b" ] || return 1; done
}

if have_all; then
  log "cached in $BIN"
  echo "$BIN"
  exit 0
fi

mkdir -p "$BIN"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
start=$(date +%s)

# --- Kubernetes -------------------------------------------------------------
cmds=()
for c in "${K8S_CMDS[@]}"; do if wants "$c"; then cmds+=("$c"); fi; done
if [ ${#cmds[@]} -gt 0 ]; then
  if fetch_only; then log "downloading the modules"
  else log "building ${cmds[*]} v${K8S_VERSION}"; fi
  k8s_build "$K8S_VERSION" "$work/k8s" "$BIN" "${cmds[@]}"
fi

# --- etcd -------------------------------------------------------------------
if wants etcd; then
  mkdir -p "$work/etcd" && cd "$work/etcd"
  go mod init local/etcdbin >/dev/null 2>&1
  go get "go.etcd.io/etcd/server/v3@v${ETCD_VERSION}" >&2
  if ! fetch_only; then
    log "building etcd v${ETCD_VERSION}"
    go build -trimpath -ldflags "-s -w" -o "$BIN/etcd" go.etcd.io/etcd/server/v3 >&2
  fi
fi

# --- Kubeflow MPI operator (the real MPIJob controller and its CRD) ----------
# A wrapper module again: `go install module@version` would ask the proxy for the module's
# version list (to check deprecation), which this proxy refuses for this module.
if wants mpi-operator; then
  mkdir -p "$work/mpi" && cd "$work/mpi"
  go mod init local/mpioperator >/dev/null 2>&1
  go get "github.com/kubeflow/mpi-operator/cmd/mpi-operator@v${MPI_OPERATOR_VERSION}" >&2
  if ! fetch_only; then
    log "building mpi-operator v${MPI_OPERATOR_VERSION}"
    go build -trimpath -ldflags "-s -w" -o "$BIN/mpi-operator" \
      github.com/kubeflow/mpi-operator/cmd/mpi-operator >&2
    mpi_dir=$(go mod download -json "github.com/kubeflow/mpi-operator@v${MPI_OPERATOR_VERSION}" \
      | sed -n 's/.*"Dir": "\(.*\)".*/\1/p')
    cp "$mpi_dir/manifests/base/kubeflow.org_mpijobs.yaml" "$BIN/mpijobs-crd.yaml"
  fi
fi

if fetch_only; then
  log "modules downloaded in $(( $(date +%s) - start )) s"
  exit 0
fi

log "built in $(( $(date +%s) - start )) s into $BIN"
echo "$BIN"
