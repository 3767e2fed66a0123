#!/usr/bin/env bash
# Builds Kueue's controller manager from the Go module proxy, once, into a cache outside the
# repository keyed by version, with the CRDs and webhook configurations of the same release.
# Called by hack/test.sh and by the Kueue test fixture (tests/harness/kueue.py).
# Prints the directory on the last line of stdout. SCALELAB_FETCH_ONLY=1: only download the Go
# modules (hack/lib.sh fetch_only).
#
# v0.17.0: the newest release the proxy serves; its go.mod requires the MPI operator v0.8.0 (the
# MPIJob v2beta1 types our tests run) and k8s.io/* v0.35, whose clients speak to our 1.36 API
# server within the supported skew; MPIJob v2beta1 has been a Kueue integration since v0.3.
set -euo pipefail
# shellcheck source=hack/lib.sh
source "$(dirname "$0")/lib.sh"
KUEUE_VERSION="${KUEUE_VERSION:-0.17.0}"
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
