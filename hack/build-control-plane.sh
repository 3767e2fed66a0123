#!/usr/bin/env bash
# Builds a real Kubernetes control plane (kube-apiserver, kube-controller-manager,
# kube-scheduler, and a kubectl of the same version), etcd and the Kubeflow MPI operator from
# the Go module proxy, once, into a cache outside the repository keyed by version. Called by
# hack/test.sh and by the cluster test fixture.
# Prints the bin directory on the last line of stdout.
#
# Why a wrapper module: `go install k8s.io/kubernetes/cmd/...` fails because
# k8s.io/kubernetes's go.mod replaces every staging module with ./staging/src/...
# (golang/go#44840). The wrapper requires k8s.io/kubernetes v1.Y.Z and replaces each
# staging module by k8s.io/<m> v0.Y.Z, which upstream publishes from the same tree
# (kubernetes/kubernetes#79384).
set -euo pipefail

K8S_VERSION="${K8S_VERSION:-1.36.3}"
ETCD_VERSION="${ETCD_VERSION:-3.6.16}"
MPI_OPERATOR_VERSION="${MPI_OPERATOR_VERSION:-0.8.0}"
CACHE="${SCALELAB_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/scalelab}"
BIN="$CACHE/control-plane/k8s-v${K8S_VERSION}-etcd-v${ETCD_VERSION}-mpi-v${MPI_OPERATOR_VERSION}"
export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-buildvcs=false

log() { echo "build-control-plane: $*" >&2; }

have_all() {
  for b in kube-apiserver kube-controller-manager kube-scheduler kubectl etcd mpi-operator; do
    [ -x "$BIN/$b" ] || return 1
  done
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
staging="v0.${K8S_VERSION#1.}"
mkdir -p "$work/k8s" && cd "$work/k8s"
go mod init local/k8sbins >/dev/null 2>&1
gomod=$(go mod download -json "k8s.io/kubernetes@v${K8S_VERSION}" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')
for m in $(sed -n 's|^[[:space:]]*\(k8s\.io/[^ ]*\) => \./staging/src/.*|\1|p' "$gomod"); do
  go mod edit "-replace=$m=$m@$staging"
done
# go get on the command packages (not just the module) records go.sum for everything they import.
go get "k8s.io/kubernetes/cmd/kube-apiserver@v${K8S_VERSION}" \
  "k8s.io/kubernetes/cmd/kube-controller-manager@v${K8S_VERSION}" \
  "k8s.io/kubernetes/cmd/kube-scheduler@v${K8S_VERSION}" \
  "k8s.io/kubernetes/cmd/kubectl@v${K8S_VERSION}" >&2
minor="${K8S_VERSION#1.}"; minor="${minor%%.*}"
ldflags="-s -w \
 -X k8s.io/component-base/version.gitVersion=v${K8S_VERSION} \
 -X k8s.io/component-base/version.gitMajor=1 \
 -X k8s.io/component-base/version.gitMinor=${minor} \
 -X k8s.io/component-base/version.gitTreeState=clean"
log "building kubernetes v${K8S_VERSION} (staging ${staging})"
go build -trimpath -ldflags "$ldflags" -o "$BIN/" \
  k8s.io/kubernetes/cmd/kube-apiserver \
  k8s.io/kubernetes/cmd/kube-controller-manager \
  k8s.io/kubernetes/cmd/kube-scheduler \
  k8s.io/kubernetes/cmd/kubectl >&2

# --- etcd -------------------------------------------------------------------
mkdir -p "$work/etcd" && cd "$work/etcd"
go mod init local/etcdbin >/dev/null 2>&1
go get "go.etcd.io/etcd/server/v3@v${ETCD_VERSION}" >&2
log "building etcd v${ETCD_VERSION}"
go build -trimpath -ldflags "-s -w" -o "$BIN/etcd" go.etcd.io/etcd/server/v3 >&2

# --- Kubeflow MPI operator (the real MPIJob controller and its CRD) ----------
# A wrapper module again: `go install module@version` would ask the proxy for the module's
# version list (to check deprecation), which this proxy refuses for this module.
mkdir -p "$work/mpi" && cd "$work/mpi"
go mod init local/mpioperator >/dev/null 2>&1
go get "github.com/kubeflow/mpi-operator/cmd/mpi-operator@v${MPI_OPERATOR_VERSION}" >&2
log "building mpi-operator v${MPI_OPERATOR_VERSION}"
go build -trimpath -ldflags "-s -w" -o "$BIN/mpi-operator" \
  github.com/kubeflow/mpi-operator/cmd/mpi-operator >&2
mpi_dir=$(go mod download -json "github.com/kubeflow/mpi-operator@v${MPI_OPERATOR_VERSION}" \
  | sed -n 's/.*"Dir": "\(.*\)".*/\1/p')
cp "$mpi_dir/manifests/base/kubeflow.org_mpijobs.yaml" "$BIN/mpijobs-crd.yaml"

log "built in $(( $(date +%s) - start )) s into $BIN"
echo "$BIN"
