#!/usr/bin/env bash
# Builds Kueue's controller manager from the Go module proxy, once, into a cache outside the
# repository keyed by version, with the CRDs and webhook configurations of the same release.
# Called by hack/test.sh and by the Kueue test fixture (tests/harness/kueue.py).
# Prints the directory on the last line of stdout. SCALELAB_FETCH_ONLY=1: only download the Go
# modules (hack/lib.sh fetch_only).
#
# v0.19.2: the newest release the Go module proxy serves here (2026-12-07: v0.17.1, v0.18.1 and
# v0.19.0-v0.19.2 served; v0.17.8, v0.18.0, v0.19.3 and v0.20.0 refused). Its go.mod requires the
# MPI operator v0.8.2, the version hack/build-control-plane.sh builds, k8s.io/* v0.36 (our API
# server's minor) and Go 1.26. It passes the Kueue tier unchanged from v0.17.0 (same v1beta2
# API, Configuration and visibility API). MPIJob v2beta1 has been a Kueue integration since v0.3.
set -euo pipefail
# shellcheck source=hack/lib.sh
source "$(dirname "$0")/lib.sh"
KUEUE_VERSION="${KUEUE_VERSION:-0.19.2}"
CACHE="${SCALELAB_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/scalelab}"
OUT="$CACHE/kueue/v${KUEUE_VERSION}"
export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-buildvcs=false
log() { echo "build-kueue: $*" >&2; }

if [ -x "$OUT/kueue" ] && [ -s "$OUT/crds.yaml" ] && [ -s "$OUT/webhooks.yaml" ]; then
  log "cached in $OUT"
  echo "$OUT"
  exit 0
fi
go_tool_workdir kueuebin
go_tool_get "sigs.k8s.io/kueue/cmd/kueue@v${KUEUE_VERSION}"
log "building kueue v${KUEUE_VERSION}"
go build -trimpath -ldflags "-s -w" -o "$OUT/kueue.tmp" sigs.k8s.io/kueue/cmd/kueue >&2
dir=$(go mod download -json "sigs.k8s.io/kueue@v${KUEUE_VERSION}" | sed -n 's/.*"Dir": "\(.*\)".*/\1/p')
for f in "$dir"/config/components/crd/bases/*.yaml; do echo "---"; cat "$f"; done > "$OUT/crds.yaml"
cp "$dir/config/components/webhook/manifests.yaml" "$OUT/webhooks.yaml"
mv "$OUT/kueue.tmp" "$OUT/kueue"
log "built in $(( $(date +%s) - start )) s into $OUT"
echo "$OUT"
