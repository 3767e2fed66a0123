#!/usr/bin/env bash
# The one prepared GPU check, at most 8 minutes on one GPU: ResNet-50 synthetic images/s of our
# trainer against a bare Horovod/TensorFlow loop (and their ratio) in float32, float16 and with
# XLA, whether NCCL ran, each side's GPU memory peak and the gradient noise estimator's overhead
# (bench/gpu_check.py says how). Run it from the repository with the CUDA trainer image's Python,
# or in that image: bench/gpu_check.sh
# --dry (or GPU_CHECK_DRY=1) runs the same code on the CPU in seconds with tiny shapes; a test
# runs it so the script cannot rot.
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
if [[ -x .venv/bin/python ]]; then python=.venv/bin/python; fi
exec timeout 480 "$python" bench/gpu_check.py "$@"
