#!/usr/bin/env bash
# Builds what a real test node needs besides the control plane, once, into a cache outside the
# repository keyed by version: kubelet and kube-proxy at the control plane's Kubernetes version
# (same wrapper-module technique as hack/build-control-plane.sh, sharing its Go build cache),
# CoreDNS with only the plugins the cluster's DNS needs (hack/node/coredns), and the fake GPU
# device plugin (hack/node/fake-gpu-plugin). Installs the Debian packages of the node runtime
# (containerd, runc, CNI plugins, iptables, conntrack) when missing.
# Called by hack/test.sh and by tests/harness/cluster.py. Prints the bin directory last.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=hack/lib-k8s-build.sh
source hack/lib-k8s-build.sh
REPO=$PWD
K8S_VERSION="${K8S_VERSION:-1.36.3}"
COREDNS_VERSION=$(sed -n 's/^require github.com\/coredns\/coredns \(v[^ ]*\)$/\1/p' hack/node/coredns/go.mod)
CACHE="${SCALELAB_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/scalelab}"
plugin_hash=$(cat hack/node/fake-gpu-plugin/* hack/node/coredns/* | sha256sum | cut -c1-12)
BIN="$CACHE/node/k8s-v${K8S_VERSION}-coredns-${COREDNS_VERSION}-${plugin_hash}"
export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-buildvcs=false

log() { echo "build-node: $*" >&2; }

PACKAGES=(containerd runc containernetworking-plugins iptables conntrack iproute2 ethtool socat)
missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  log "apt-get install ${missing[*]}"
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
  $SUDO apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
  # Debian starts containerd as a service on install; the test node runs its own instance.
  if command -v systemctl >/dev/null && systemctl is-active -q containerd 2>/dev/null; then
    $SUDO systemctl disable --now containerd >&2 || true
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

# --- kubelet and kube-proxy (hack/lib-k8s-build.sh; shares the control plane's Go cache) ------
log "building kubelet and kube-proxy v${K8S_VERSION}"
k8s_build "$K8S_VERSION" "$work/k8s" "$BIN" kubelet kube-proxy

# --- CoreDNS (a minimal plugin set) and the fake GPU device plugin: modules in this repo ------
log "building coredns ${COREDNS_VERSION}"
(cd "$REPO/hack/node/coredns" && go build -trimpath -ldflags "-s -w" -o "$BIN/coredns" . >&2)
log "building fake-gpu-plugin"
(cd "$REPO/hack/node/fake-gpu-plugin" && go build -trimpath -ldflags "-s -w" -o "$BIN/fake-gpu-plugin" . >&2)

log "built in $(( $(date +%s) - start )) s into $BIN"
echo "$BIN"
