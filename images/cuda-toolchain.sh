#!/bin/sh
# Runs the trainer image's Horovod install (the Dockerfile's trainer stage, as root) with what a
# CUDA build of Horovod needs, then takes the build-only parts away again. Without
# HOROVOD_GPU_OPERATIONS (the CPU build) it only runs the command.
#
# Horovod's NCCL build compiles a few CUDA kernels with nvcc and links NCCL. The CUDA libraries
# TensorFlow uses come from pip (tensorflow[and-cuda]: CUDA 12.2 runtime, cuDNN 8.9, NCCL 2.16;
# images/requirements/cuda.txt), and Horovod takes NCCL's header and library from that wheel too.
# No pip package ships nvcc (nvidia-cuda-nvcc-cu12 holds ptxas and libNVVM, for XLA), so:
#   - a base image with a CUDA toolkit on PATH (an nvidia/cuda *-devel image) gives its nvcc;
#   - otherwise Debian's toolkit (non-free `nvidia-cuda-toolkit`, CUDA 11.8 on bookworm) is
#     installed for the build and purged afterwards, with the apt source added for it.
# Horovod links its CUDA runtime statically (its default), so nothing of the toolkit is needed at
# run time, whichever CUDA 11.8+ it came from; the process's other CUDA runtime (TensorFlow's
# 12.2) shares the device's primary context with it, as every statically linked CUDA library does.
set -eu
if [ -z "${HOROVOD_GPU_OPERATIONS:-}" ]; then exec "$@"; fi

site=$(python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
nccl="$site/nvidia/nccl"
if [ ! -f "$nccl/include/nccl.h" ]; then
  echo "cuda-toolchain: no NCCL wheel in $nccl (tensorflow[and-cuda] installs it)" >&2
  exit 1
fi
work=$(mktemp -d)
# The wheel has libnccl.so.2 only; the linker looks for libnccl.so.
ln -s "$nccl/lib/libnccl.so.2" "$work/libnccl.so"
export HOROVOD_NCCL_INCLUDE="$nccl/include" HOROVOD_NCCL_LIB="$work" HOROVOD_NCCL_LINK=SHARED
# Kernels for Maxwell to Hopper (the last as PTX too), as TensorFlow 2.15's own; not every
# architecture nvcc knows (twice as long to compile on a small builder).
export HOROVOD_BUILD_CUDA_CC_LIST="${HOROVOD_BUILD_CUDA_CC_LIST:-50,60,70,75,80,86,89,90}"

debian_toolkit=""
if ! command -v nvcc >/dev/null 2>&1; then
  debian_toolkit=/etc/apt/sources.list.d/scalelab-non-free
  # The image's own Debian sources, with the contrib non-free component instead of theirs.
  if [ -f /etc/apt/sources.list ]; then
    sed -n -E 's/^(deb +(\[[^]]*\] +)?[^ ]+ +[^ ]+) .*/\1 contrib non-free/p' /etc/apt/sources.list \
      >"$debian_toolkit.list"
  fi
  for f in /etc/apt/sources.list.d/*.sources; do
    [ -f "$f" ] || continue
    sed -E 's/^Components:.*/Components: contrib non-free/' "$f" >"$debian_toolkit-$(basename "$f")"
  done
  apt-get update
  apt-get install -y --no-install-recommends nvidia-cuda-toolkit
  # CUDA 11.8's nvcc supports GCC 11 at most (bookworm's default is 12), and Horovod makes the
  # C++ compiler nvcc's host compiler: the whole build uses GCC 11, which the toolkit brings.
  export CC=gcc-11 CXX=g++-11
fi
nvcc --version | tail -2

"$@"

# Horovod's library needs libnccl.so.2 at run time, from the wheel's folder.
echo "$nccl/lib" >/etc/ld.so.conf.d/scalelab-nccl.conf
ldconfig
if [ -n "$debian_toolkit" ]; then
  apt-get purge -y --autoremove nvidia-cuda-toolkit
  rm -f "$debian_toolkit".list "$debian_toolkit"-*.sources
  rm -rf /var/lib/apt/lists/*
fi
rm -rf "$work"
