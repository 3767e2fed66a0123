#!/usr/bin/env bash
# The test command (README.md, .ci/run): installs what is missing, builds what the selected test
# tiers start (once, cached outside the repository), then runs lint, the format check, type
# checks, the import contracts and pytest. Extra arguments go to pytest.
#
# Without -m every tier runs (CI). With -m, only what the tiers the expression can select need
# is installed and built (hack/tiers.py decides which):
#   unit        the virtualenv and OpenMPI (hack/install.sh); no root once OpenMPI is installed
#   horovod     + Chromium
#   cluster     + the control plane, etcd and the MPI operator (hack/build-control-plane.sh),
#               Kueue (hack/build-kueue.sh; its harness writes /etc/kueue, so root) and Helm
#   prometheus  + Prometheus and kubectl alone (the monitoring manifests' kustomize)
#   node        + the control plane, the node (hack/build-node.sh), Kueue, the images
#               (hack/build-images.sh; the CUDA trainer image when its tests ask), Helm, Prometheus
#               and the Prometheus Operator (hack/build-{helm,prometheus,prometheus-operator}.sh);
#               root
set -euo pipefail
cd "$(dirname "$0")/.."
step() { echo "== $* ($(date -u +%H:%M:%S))" >&2; }
read -r -a tiers <<<"$(python3 hack/tiers.py "$@")"
has() { [[ " ${tiers[*]} " == *" $1 "* ]]; }
echo "test.sh: tiers: ${tiers[*]:-none}" >&2
if has node && [ "$(id -u)" != 0 ]; then
  echo "test.sh: the node tier needs root (containers, the node's network); as this user select" \
    "other tiers, e.g. -m 'not node'" >&2
  exit 1
fi
builds=()          # hack/build-*.sh
control_plane=()   # which control-plane binaries (all when empty)
if has cluster || has node; then builds+=(control-plane)
elif has prometheus; then builds+=(control-plane); control_plane=(kubectl); fi
if has node; then builds+=(node); fi
if has cluster || has node; then builds+=(kueue); fi
if has cluster || has node; then builds+=(helm); fi          # the chart's tests, helm install
if has node; then builds+=(prometheus prometheus-operator); fi # monitoring as the operator runs it
build() { # NAME: hack/build-NAME.sh with the arguments this run needs
  if [ "$1" = control-plane ]; then bash hack/build-control-plane.sh "${control_plane[@]}"
  else bash "hack/build-$1.sh"; fi
}
logs=$(mktemp -d)
trap 'rm -rf "$logs"' EXIT

# Module downloads (network) of the Go builds run beside the install (CPU: Horovod's compile);
# the builds below then compile from the module cache. Best effort: a build downloads whatever
# is still missing itself.
fetch=""
if [ ${#builds[@]} -gt 0 ]; then
  for b in "${builds[@]}"; do SCALELAB_FETCH_ONLY=1 build "$b" || true; done \
    >/dev/null 2>"$logs/fetch.log" &
  fetch=$!
fi
step install;             bash hack/install.sh "${tiers[@]:-unit}"

# The images build (network and disk bound) runs beside the Go builds (CPU bound) and, when it
# has work left (sources changed since the cached archives: minutes), beside the tiers pytest runs
# before the node tier, whose fixtures wait for it (hack/build-images.sh takes a lock; the node
# tier runs last, tests/conftest.py). Niced, so the builds and tests it runs beside come first.
images=""
if has node; then
  nice -n 10 bash hack/build-images.sh >/dev/null 2>"$logs/images.log" & images=$!
fi
# The checks of the Python code run beside the builds too, and are waited for before pytest.
# One command a line: under set -e a failure on the left of && would not stop the script.
lint() {
  step ruff;              .venv/bin/ruff check .; .venv/bin/ruff format --check .
  step mypy;              .venv/bin/mypy
  step import-contracts;  .venv/bin/lint-imports
}
checks=""
if [ ${#builds[@]} -gt 0 ]; then lint >"$logs/lint.log" 2>&1 & checks=$!; fi
for b in "${builds[@]}"; do
  step "$b";              build "$b" >/dev/null
done
[ -z "$fetch" ] || wait "$fetch" || true
if [ -n "$checks" ]; then
  step "lint (ran beside the builds)"
  wait "$checks" && rc=0 || rc=$?
  cat "$logs/lint.log" >&2
  [ "$rc" = 0 ] || exit "$rc"
else
  lint
fi
# The node tier runs in a pytest process of its own beside the other tiers: most of its time is
# waiting (containers starting, pods scheduled, the trainer's epochs in pods), and it shares no
# component with them (its own control plane; one real node per machine, tests/harness/cluster.py).
# Its output is printed after the others'. Each process gets the command line with its -m
# expression narrowed (pytest takes the last -m).
pytest_cmd=(.venv/bin/python -m pytest --durations=30)
if has node && [ ${#tiers[@]} -gt 1 ]; then
  expr=$(python3 hack/tiers.py --expression "$@")
  both() { if [ -n "$expr" ]; then echo "($expr) and ($1)"; else echo "$1"; fi; }
  step "pytest (the node tier beside the others)"
  # The real MPI operator's health port is fixed at :8080 on the host: the cluster tier's tests
  # that start one run in the node tier's process, before its node (mpi_operator_port). The
  # node tier's tests of the images alone, which start no node, run in the other process, after
  # its other tiers (images_only): the node tier's process was minutes the longer of the two.
  node_side="(node and not images_only) or mpi_operator_port"
  "${pytest_cmd[@]}" "$@" -m "$(both "$node_side")" >"$logs/node-tier.log" 2>&1 &
  node_tier=$!
  trap 'kill -TERM "$node_tier" 2>/dev/null; wait "$node_tier"; rm -rf "$logs"' EXIT
  "${pytest_cmd[@]}" "$@" -m "$(both "not ($node_side)")" && rc=0 || rc=$?
  wait "$node_tier" && node_rc=0 || node_rc=$?
  trap 'rm -rf "$logs"' EXIT
  step "pytest: the node tier"
  cat "$logs/node-tier.log"
  # One status for both: a failure or an interruption wins over success, and 5 (nothing
  # collected: a -k or -m that selects tests of one side only) over nothing else.
  if [ "$rc" = 5 ] || { [ "$node_rc" != 0 ] && [ "$node_rc" != 5 ] && [ "$rc" != 2 ]; }; then
    rc=$node_rc
  fi
else
  step pytest;            "${pytest_cmd[@]}" "$@" && rc=0 || rc=$?
fi
if [ -n "$images" ] && [ "$rc" != 2 ]; then # 2: pytest was interrupted; no waiting then
  step images;            wait "$images" || { cat "$logs/images.log" >&2; exit 1; }
fi
exit "$rc"
