#!/usr/bin/env bash
# Builds what a real test node needs besides the control plane, once, into a cache outside the
# repository keyed by version: kubelet and kube-proxy at the control plane's Kubernetes version
# (same wrapper-module technique as hack/build-control-plane.sh, sharing its Go build cache),
# CoreDNS with only the plugins the cluster's DNS needs (hack/node/coredns), and the fake GPU
# device plugin (hack/node/fake-gpu-plugin). Installs the Debian packages of the node runtime
# (containerd, runc, CNI plugins, iptables, conntrack) when missing.
# Called by hack/test.sh and by tests/harness/cluster.py. Prints the bin directory last.
# SCALELAB_FETCH_ONLY=1: only download the Go modules (no packages, no compiling).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=hack/lib.sh
source hack/lib.sh
REPO=$PWD
COREDNS_VERSION=$(sed -n 's/^require github.com\/coredns\/coredns \(v[^ ]*\)$/\1/p' hack/node/coredns/go.mod)
CACHE="${SCALELAB_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/scalelab}"
plugin_hash=$(cat hack/node/fake-gpu-plugin/* hack/node/coredns/* | sha256sum | cut -c1-12)
BIN="$CACHE/node/k8s-v${K8S_VERSION}-coredns-${COREDNS_VERSION}-${plugin_hash}"
export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-buildvcs=false

log() { echo "build-node: $*" >&2; }

if ! fetch_only; then
  apt_ensure containerd runc containernetworking-plugins iptables conntrack iproute2 ethtool socat
  # Debian starts containerd as a service on install; the test node runs its own instance.
  if [[ " ${APT_INSTALLED[*]} " == *" containerd "* ]] && command -v systemctl >/dev/null \
     && systemctl is-active -q containerd 2>/dev/null; then
    systemctl disable --now containerd >&2 || true
  fi
fi

have_all() {
  for b in kubelet kube-proxy coredns fake-gpu-plugin; do [ -x "$BIN/$b" ] || return 1; done
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

# --- kubelet and kube-proxy (hack/lib.sh; shares the control plane's Go cache) --------------
if fetch_only; then
  log "downloading the modules"
  k8s_build "$K8S_VERSION" "$work/k8s" "$BIN" kubelet kube-proxy
  (cd "$REPO/hack/node/coredns" && go list -deps . >/dev/null)
  (cd "$REPO/hack/node/fake-gpu-plugin" && go list -deps . >/dev/null)
  exit 0
fi
log "building kubelet and kube-proxy v${K8S_VERSION}"
k8s_build "$K8S_VERSION" "$work/k8s" "$BIN" kubelet kube-proxy

# --- CoreDNS (a minimal plugin set) and the fake GPU device plugin: modules in this repo ------
log "building coredns ${COREDNS_VERSION}"
(cd "$REPO/hack/node/coredns" && go build -trimpath -ldflags "-s -w" -o "$BIN/coredns" . >&2)
log "building fake-gpu-plugin"
(cd "$REPO/hack/node/fake-gpu-plugin" && go build -trimpath -ldflags "-s -w" -o "$BIN/fake-gpu-plugin" . >&2)

log "built in $(( $(date +%s) - start )) s into $BIN"
echo "$BIN"
