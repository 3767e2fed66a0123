"""Deterministic, DNS-safe names of trials (and of the MPIJobs and pods derived from them).

A trial is named `<experiment>-b<batch>-g<gpus>[-r<repeat>]`. The MPI operator names pods
`<mpijob>-worker-<i>` and the launcher Job's pod `<mpijob>-launcher-<5 random>`, and pod
hostnames must be RFC 1035 labels (≤ 63 characters, starting with a letter), so trial names are
capped at MAX_TRIAL_NAME_LENGTH: long experiment names are cut and made unique with a short hash.
Used by the planner (local and cluster alike).
"""

from __future__ import annotations

import hashlib
import re

#: 63 − len("-launcher-") − 5 random characters − 1 spare; also leaves room for "-worker-9999".
MAX_TRIAL_NAME_LENGTH = 47
_HASH_LENGTH = 5
_INVALID = re.compile(r"[^a-z0-9-]+")


def _short_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:_HASH_LENGTH]


def dns_prefix(experiment: str) -> str:
    """The experiment name as an RFC 1035 label prefix: lower-case, starts with a letter."""
    name = _INVALID.sub("-", experiment.lower()).strip("-") or "x"
    if not name[0].isalpha():
        name = f"x-{name}"
    return name


def trial_name(experiment: str, batch_size: int, gpus: int, repeat: int = 0) -> str:
    """The name of one grid point's trial; unique within the experiment, at most 47 characters."""
    suffix = f"-b{batch_size}-g{gpus}" + (f"-r{repeat}" if repeat else "")
    prefix = dns_prefix(experiment)
    if len(prefix) + len(suffix) > MAX_TRIAL_NAME_LENGTH:
        keep = MAX_TRIAL_NAME_LENGTH - len(suffix) - _HASH_LENGTH - 1
        prefix = f"{prefix[:keep].rstrip('-')}-{_short_hash(experiment)}"
    return prefix + suffix


def worker_pod_name(trial: str, index: int) -> str:
    """The MPI operator's name for worker `index` of the trial's MPIJob."""
    return f"{trial}-worker-{index}"


def launcher_name(trial: str) -> str:
    """The MPI operator's name for the launcher Job of the trial's MPIJob."""
    return f"{trial}-launcher"
