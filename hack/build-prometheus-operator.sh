#!/usr/bin/env bash
# Builds the Prometheus Operator from the Go module proxy, once, into a cache outside the
# repository keyed by version, with the monitoring.coreos.com CRDs of the same release
# (crds.yaml). Called by hack/test.sh for the node tier and by tests/harness/promop.py.
# Prints the directory on the last line of stdout. SCALELAB_FETCH_ONLY=1: only download the Go
# modules (hack/lib.sh fetch_only).
#
# Why a wrapper module: the operator's go.mod replaces its two API submodules
# (pkg/apis/monitoring, pkg/client) with ./ paths, which `go install module@version` refuses.
# The wrapper requires the root module and points each replaced submodule at its own tag of
# the same release, as hack/lib.sh does for Kubernetes' staging modules.
set -euo pipefail
# shellcheck source=hack/lib.sh
source "$(dirname "$0")/lib.sh"
PROMETHEUS_OPERATOR_VERSION="${PROMETHEUS_OPERATOR_VERSION:-0.85.0}"
CACHE="${SCALELAB_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/scalelab}"
OUT="$CACHE/prometheus-operator/v${PROMETHEUS_OPERATOR_VERSION}"
export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-buildvcs=false
log() { echo "build-prometheus-operator: $*" >&2; }

if [ -x "$OUT/operator" ] && [ -s "$OUT/crds.yaml" ]; then
  log "cached in $OUT"
  echo "$OUT"
  exit 0
fi
go_tool_workdir promopbin
v="v${PROMETHEUS_OPERATOR_VERSION}"
m=github.com/prometheus-operator/prometheus-operator
gomod=$(go mod download -json "$m@$v" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')
for sub in $(sed -n "s|^[[:space:]]*\($m/[^ ]*\) => \./.*|\1|p" "$gomod"); do
  go mod edit "-replace=$sub=$sub@$v"
done
go_tool_get "$m/cmd/operator@$v"
log "building prometheus-operator $v"
go build -trimpath -o "$OUT/operator.tmp" -ldflags "-s -w \
  -X github.com/prometheus/common/version.Version=${PROMETHEUS_OPERATOR_VERSION}" \
  "$m/cmd/operator" >&2
dir=$(go mod download -json "$m@$v" | sed -n 's/.*"Dir": "\(.*\)".*/\1/p')
for f in "$dir"/example/prometheus-operator-crd/*.yaml; do echo "---"; cat "$f"; done \
  > "$OUT/crds.yaml"
mv "$OUT/operator.tmp" "$OUT/operator"
log "built in $(( $(date +%s) - start )) s into $OUT"
echo "$OUT"
