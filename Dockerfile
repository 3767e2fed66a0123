# syntax=docker/dockerfile:1.7
# Two images from one file, built from the same pinned requirement files CI installs
# (images/requirements/*.txt; tests/images/test_images.py fails when they drift):
#   docker build --target operator -t scalelab/operator:0.1.0 .
#   docker build --target trainer  -t scalelab/trainer:0.1.0 .
# The operator is slim Python with no TensorFlow. The trainer is Debian bookworm with TensorFlow
# and Horovod; its default build is for NVIDIA GPUs, with every CUDA library from pip
# (tensorflow[and-cuda]), so no CUDA base image is needed.
#
# Build arguments (the defaults are what the two commands above build; no registry publishes
# these images: build them, or use hack/build-images.sh, which builds and tests them here):
#   BASE_IMAGE   one base for both targets; unset, the operator uses python:3.11-slim-bookworm
#                and the trainer debian:bookworm-slim. The test suite passes a local Debian
#                bookworm image (hack/build-images.sh: debootstrap, no registry), which must hold
#                python3 and python3-venv for the operator target. A trainer base must be Debian
#                bookworm or alike (apt with python3.11); one with a CUDA toolkit on PATH (an
#                nvidia/cuda *-devel image) compiles Horovod with its own nvcc.
#   ACCELERATOR  trainer only: `cuda` (default) installs tensorflow[and-cuda] with the CUDA
#                wheels pinned in images/requirements/cuda.txt and compiles Horovod with NCCL
#                (images/cuda-toolchain.sh: nvcc for the build only); `cpu` installs tensorflow-cpu
#                exactly as CI does, Horovod without GPU operations, and takes a prebuilt Horovod
#                wheel from images/wheels/ when one is there (hack/build-images.sh puts CI's cached
#                wheel there; empty, pip compiles it).
# Package index: pip uses its default index unless the build gets the optional secrets `pip.conf`
# (mounted as /etc/pip.conf) and `pip-ca.crt` (/run/secrets/pip-ca.crt, for a `cert =` line);
# hack/build-images.sh makes both from the host's pip configuration. Secrets stay out of the image.
ARG BASE_IMAGE

# ---------------------------------------------------------------------------------------------
FROM ${BASE_IMAGE:-python:3.11-slim-bookworm} AS operator
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv PATH=/opt/venv/bin:$PATH
WORKDIR /src
# Only operator.txt: no TensorFlow and none of the report's plotting stack (report.txt).
COPY images/requirements/operator.txt images/requirements/operator.txt
RUN --mount=type=secret,id=pip.conf,target=/etc/pip.conf \
    --mount=type=secret,id=pip-ca.crt,target=/run/secrets/pip-ca.crt \
    python3 -m venv /opt/venv \
    && pip install --no-cache-dir -r images/requirements/operator.txt
COPY operator/ operator/
RUN --mount=type=secret,id=pip.conf,target=/etc/pip.conf \
    --mount=type=secret,id=pip-ca.crt,target=/run/secrets/pip-ca.crt \
    pip install --no-cache-dir --no-deps ./operator \
    && rm -rf /src/operator \
    && useradd --uid 10001 --no-create-home --shell /usr/sbin/nologin scalelab
USER 10001
EXPOSE 8080
ENTRYPOINT ["scalelab", "operator"]

# ---------------------------------------------------------------------------------------------
# TensorFlow 2.15 is built against CUDA 12.2 and cuDNN 8.9; tensorflow[and-cuda] brings both as
# pip wheels, which it finds itself. The NVIDIA driver comes from the host at run time (the NVIDIA
# container toolkit mounts it; 525.60 or newer for CUDA 12).
FROM ${BASE_IMAGE:-debian:bookworm-slim} AS trainer
ARG ACCELERATOR=cuda
ENV DEBIAN_FRONTEND=noninteractive PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv PATH=/opt/venv/bin:$PATH TF_CPP_MIN_LOG_LEVEL=2
# DL3008: the distribution's point releases of these packages rotate out of the archive; the
# Python stack, which decides results, is pinned exactly instead.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends \
       python3.11 python3.11-venv python3.11-dev g++ cmake make git \
       openmpi-bin libopenmpi-dev openssh-server openssh-client \
    && rm -rf /var/lib/apt/lists/* \
    && python3.11 -m venv /opt/venv
WORKDIR /src
COPY images/requirements/trainer.txt images/requirements/horovod.txt images/requirements/cuda.txt \
     images/requirements/
# CI pins the CPU build; the CUDA image gets the CUDA build of the same version, from the same
# file, and the CUDA wheels it depends on at the versions cuda.txt pins.
RUN --mount=type=secret,id=pip.conf,target=/etc/pip.conf \
    --mount=type=secret,id=pip-ca.crt,target=/run/secrets/pip-ca.crt \
    case "$ACCELERATOR" in \
      cuda) sed 's/^tensorflow-cpu==/tensorflow[and-cuda]==/' images/requirements/trainer.txt \
              > /tmp/trainer.txt \
            && cat images/requirements/cuda.txt >> /tmp/trainer.txt ;; \
      cpu) cp images/requirements/trainer.txt /tmp/trainer.txt ;; \
      *) echo "ACCELERATOR must be cuda or cpu, not '$ACCELERATOR'" >&2; exit 1 ;; \
    esac \
    && pip install --no-cache-dir -r /tmp/trainer.txt \
    && rm /tmp/trainer.txt
# Horovod: compiled against the installed TensorFlow, with both Gloo and MPI controllers (the
# MPIJob launcher uses mpirun) and, for CUDA, NCCL for GPU allreduce (cuda-toolchain.sh provides
# nvcc for this step only). The CPU build may take a wheel compiled the same way by CI
# (hack/install-python.sh) from images/wheels/.
RUN --mount=type=secret,id=pip.conf,target=/etc/pip.conf \
    --mount=type=secret,id=pip-ca.crt,target=/run/secrets/pip-ca.crt \
    --mount=type=bind,source=images/wheels,target=/tmp/wheels \
    --mount=type=bind,source=images/cuda-toolchain.sh,target=/tmp/cuda-toolchain.sh \
    if [ "$ACCELERATOR" = cuda ]; then export HOROVOD_GPU_OPERATIONS=NCCL; \
    else export PIP_FIND_LINKS=/tmp/wheels; fi \
    && HOROVOD_WITH_TENSORFLOW=1 HOROVOD_WITHOUT_PYTORCH=1 HOROVOD_WITHOUT_MXNET=1 \
       HOROVOD_WITH_GLOO=1 HOROVOD_WITH_MPI=1 \
       sh /tmp/cuda-toolchain.sh \
       pip install --no-cache-dir --no-build-isolation -r images/requirements/horovod.txt
COPY trainer/ trainer/
RUN --mount=type=secret,id=pip.conf,target=/etc/pip.conf \
    --mount=type=secret,id=pip-ca.crt,target=/run/secrets/pip-ca.crt \
    pip install --no-cache-dir --no-deps ./trainer
# sshd as the unprivileged user mpiuser, the way MPIJob v2beta1 expects: keys from the Secret
# mounted at sshAuthMountPath=/home/mpiuser/.ssh, workers run `sshd -De -f ~/.sshd_config`.
RUN useradd --create-home --uid 1000 --shell /bin/bash mpiuser \
    && mkdir -p /var/run/sshd
COPY images/ssh_config /etc/ssh/ssh_config.d/scalelab.conf
COPY --chown=mpiuser:mpiuser images/sshd_config /home/mpiuser/.sshd_config
COPY images/entrypoint-trainer.sh /usr/local/bin/scalelab-trainer-entrypoint
USER 1000
WORKDIR /home/mpiuser
EXPOSE 2222 9400
ENTRYPOINT ["/usr/local/bin/scalelab-trainer-entrypoint"]
CMD ["python", "-m", "scalelab_trainer", "--help"]
