#!/usr/bin/env bash
# Creates the development virtualenv (.venv) with both packages, the pinned training stack and
# the tooling. Horovod is compiled once per (Horovod, TF, Python) and its wheel cached outside the
# repository, so later installs take seconds. Called by .ci/run; safe to rerun.
set -euo pipefail
cd "$(dirname "$0")/.."
REQ=images/requirements
CACHE="${SCALELAB_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/scalelab}"
VENV="${VENV:-.venv}"
log() { echo "install-python: $*" >&2; }

[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
PY="$VENV/bin/python"
# A virtualenv this script completed from the same inputs is left as it is: pip's resolve, the
# editable builds (setuptools in an isolated environment) and two TensorFlow imports took 56 s
# of every test run otherwise (two busy cores). Sources need no reinstall (editable installs).
stamp="$VENV/.scalelab-installed"
inputs=$( {
  "$PY" -V
  cat "$REQ"/*.txt manifests/monitoring/requirements.txt operator/pyproject.toml \
    trainer/pyproject.toml hack/install-python.sh
} | sha256sum | cut -c1-16)
if [ "$(cat "$stamp" 2>/dev/null)" = "$inputs" ]; then
  log "up to date: $VENV"
  exit 0
fi
rm -f "$stamp"
"$PY" -m pip install -q -r "$REQ/trainer.txt" -r "$REQ/operator.txt" -r "$REQ/report.txt" \
  -r "$REQ/dev.txt" -r manifests/monitoring/requirements.txt >&2

hvd=$(sed -n 's/^horovod==\([^ ]*\).*/\1/p' "$REQ/horovod.txt")
tf=$("$PY" -c 'import importlib.metadata as m; print(m.version("tensorflow-cpu"))')
pyv=$("$PY" -c 'import sys; print(f"cp{sys.version_info[0]}{sys.version_info[1]}")')
wheels="$CACHE/wheels/horovod-${hvd}-tf-${tf}-${pyv}-gloo-mpi"
if ! "$PY" -c "import horovod, sys; sys.exit(horovod.__version__ != '$hvd')" 2>/dev/null \
   || ! "$PY" -c "import horovod.tensorflow" 2>/dev/null; then
  if ! ls "$wheels"/horovod-*.whl >/dev/null 2>&1; then
    log "compiling horovod $hvd against tensorflow-cpu $tf (a few minutes, once)"
    mkdir -p "$wheels"
    HOROVOD_WITH_TENSORFLOW=1 HOROVOD_WITHOUT_PYTORCH=1 HOROVOD_WITHOUT_MXNET=1 \
    HOROVOD_WITH_GLOO=1 HOROVOD_WITH_MPI=1 \
      "$PY" -m pip wheel -q --no-cache-dir --no-build-isolation --no-deps \
        -w "$wheels" "horovod==$hvd" >&2
  fi
  "$PY" -m pip install -q "$wheels"/horovod-*.whl >&2
fi
"$PY" -m pip install -q --no-deps -e operator -e trainer >&2
"$PY" -m pip check >&2
echo "$inputs" >"$stamp"
log "ready: $VENV (horovod $hvd, tensorflow-cpu $tf)"
