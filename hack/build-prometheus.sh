#!/usr/bin/env bash
# Builds Prometheus from the Go module proxy, once, into a cache outside the repository keyed by
# version: the server (with Kubernetes service discovery, which the Debian package lacks) and
# promtool. Called by hack/test.sh for the node tier and by tests/harness/promop.py.
# Prints the directory on the last line of stdout. SCALELAB_FETCH_ONLY=1: only download the Go
# modules (hack/lib.sh fetch_only).
#
# Tags: remove_all_sd drops every service discovery but the one enable_kubernetes_sd puts back
# (a third of the build). The web UI's assets are not embedded; the HTTP API, which the tests
# and `scalelab report --prometheus` use, works without them.
set -euo pipefail
# shellcheck source=hack/lib.sh
source "$(dirname "$0")/lib.sh"
PROMETHEUS_MODULE_VERSION="${PROMETHEUS_MODULE_VERSION:-0.316.0}"
CACHE="${SCALELAB_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/scalelab}"
OUT="$CACHE/prometheus/v${PROMETHEUS_MODULE_VERSION}"
export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-buildvcs=false
log() { echo "build-prometheus: $*" >&2; }

if [ -x "$OUT/prometheus" ] && [ -x "$OUT/promtool" ]; then
  log "cached in $OUT"
  echo "$OUT"
  exit 0
fi
go_tool_workdir prometheusbin
m=github.com/prometheus/prometheus
go_tool_get "$m/cmd/prometheus@v${PROMETHEUS_MODULE_VERSION}" \
  "$m/cmd/promtool@v${PROMETHEUS_MODULE_VERSION}"
log "building prometheus (module v${PROMETHEUS_MODULE_VERSION})"
# Module v0.X.Y is Prometheus 3.X/100... as the release tags say: v0.316.0 is 3.16.0.
minor=${PROMETHEUS_MODULE_VERSION#0.}
release="$(( ${minor%%.*} / 100 )).$(( ${minor%%.*} % 100 )).${minor#*.}"
go build -trimpath -tags remove_all_sd,enable_kubernetes_sd -o "$OUT/bin.tmp/" -ldflags "-s -w \
  -X github.com/prometheus/common/version.Version=${release}" \
  "$m/cmd/prometheus" "$m/cmd/promtool" >&2
mv "$OUT/bin.tmp/prometheus" "$OUT/bin.tmp/promtool" "$OUT/"
rmdir "$OUT/bin.tmp"
log "built in $(( $(date +%s) - start )) s into $OUT"
echo "$OUT"
