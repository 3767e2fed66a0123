#!/usr/bin/env bash
# Builds Helm from the Go module proxy, once, into a cache outside the repository keyed by
# version. Called by hack/test.sh (the cluster tier renders charts/scalelab and compares it with
# `kubectl kustomize manifests/`; the node tier installs it) and by tests/harness/helm.py.
# Prints the directory on the last line of stdout. SCALELAB_FETCH_ONLY=1: only download the Go
# modules (hack/lib.sh fetch_only).
#
# v3.21.4: the newest Helm 3 the proxy serves; charts/scalelab is apiVersion v2, which Helm 3
# and Helm 4 both install.
set -euo pipefail
# shellcheck source=hack/lib.sh
source "$(dirname "$0")/lib.sh"
HELM_VERSION="${HELM_VERSION:-3.21.4}"
CACHE="${SCALELAB_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/scalelab}"
OUT="$CACHE/helm/v${HELM_VERSION}"
export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-buildvcs=false
log() { echo "build-helm: $*" >&2; }

if [ -x "$OUT/helm" ]; then
  log "cached in $OUT"
  echo "$OUT"
  exit 0
fi
go_tool_workdir helmbin
go_tool_get "helm.sh/helm/v3/cmd/helm@v${HELM_VERSION}"
log "building helm v${HELM_VERSION}"
# The version stamp `helm version` prints (a release build sets it the same way).
go build -trimpath -o "$OUT/helm.tmp" -ldflags "-s -w \
  -X helm.sh/helm/v3/internal/version.version=v${HELM_VERSION} \
  -X helm.sh/helm/v3/internal/version.gitTreeState=clean" helm.sh/helm/v3/cmd/helm >&2
mv "$OUT/helm.tmp" "$OUT/helm"
log "built in $(( $(date +%s) - start )) s into $OUT"
echo "$OUT"
