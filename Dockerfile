# syntax=docker/dockerfile:1.7
# Two images from one file, built from the same pinned requirement files CI installs
# (images/requirements/*.txt; tests/operator/test_images.py fails when they drift):
#   docker build --target operator -t ghcr.io/scalelab/operator:0.1.0 .
#   docker build --target trainer  -t ghcr.io/scalelab/trainer:0.1.0 .
# The trainer needs a CUDA devel base (Horovod compiles its NCCL ops with nvcc); the operator is
# slim Python with no TensorFlow.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm
# TensorFlow 2.15 is built against CUDA 12.2 and cuDNN 8.9 (tensorflow.org/install/source#gpu).
ARG CUDA_IMAGE=nvidia/cuda:12.2.2-cudnn8-devel-ubuntu22.04

# ---------------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS operator
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY images/requirements/operator.txt images/requirements/operator.txt
RUN pip install --no-cache-dir -r images/requirements/operator.txt
COPY operator/ operator/
RUN pip install --no-cache-dir --no-deps ./operator \
    && useradd --uid 10001 --no-create-home --shell /usr/sbin/nologin scalelab
USER 10001
EXPOSE 8080
ENTRYPOINT ["scalelab", "operator"]

# ---------------------------------------------------------------------------------------------
FROM ${CUDA_IMAGE} AS trainer
ENV DEBIAN_FRONTEND=noninteractive PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv PATH=/opt/venv/bin:$PATH TF_CPP_MIN_LOG_LEVEL=2
# DL3008: Ubuntu's point releases of these packages rotate out of the archive; the Python stack,
# which decides results, is pinned exactly instead.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends \
       python3.11 python3.11-venv python3.11-dev g++ cmake make git \
       openmpi-bin libopenmpi-dev openssh-server openssh-client \
    && rm -rf /var/lib/apt/lists/* \
    && python3.11 -m venv /opt/venv
WORKDIR /src
COPY images/requirements/ images/requirements/
# The CPU pin CI uses becomes the CUDA build of the same TensorFlow version, from the same file.
RUN sed 's/^tensorflow-cpu==/tensorflow[and-cuda]==/' images/requirements/trainer.txt \
      > /tmp/trainer-gpu.txt \
    && pip install --no-cache-dir -r /tmp/trainer-gpu.txt
# Horovod: compiled against the installed TensorFlow, with NCCL for GPU allreduce and both Gloo
# and MPI controllers (the MPIJob launcher uses mpirun).
RUN HOROVOD_WITH_TENSORFLOW=1 HOROVOD_WITHOUT_PYTORCH=1 HOROVOD_WITHOUT_MXNET=1 \
    HOROVOD_WITH_GLOO=1 HOROVOD_WITH_MPI=1 HOROVOD_GPU_OPERATIONS=NCCL \
    pip install --no-cache-dir --no-build-isolation -r images/requirements/horovod.txt
COPY trainer/ trainer/
RUN pip install --no-cache-dir --no-deps ./trainer
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
