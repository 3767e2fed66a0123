"""Deterministic, DNS-safe names of trials (and of the MPIJobs and pods derived from them).

A trial is named `<experiment>-b<batch>-g<gpus>[-lr<rate>][-r<repeat>]`, the learning-rate part
only when the sweep has a learningRates axis (`learning_rate_part`: the rate's shortest exact
decimal, '.' → 'p', '-' → 'm', so 0.1 → lr0p1 and 3e-05 → lr3em05). The MPI operator names pods
`<mpijob>-worker-<i>` and the launcher Job's pod `<mpijob>-launcher-<5 random>`, and pod
hostnames must be RFC 1035 labels (≤ 63 characters, starting with a letter), so trial names are
capped at MAX_TRIAL_NAME_LENGTH: long experiment names are cut and made unique with a short hash.
Used by the planner (local and cluster alike).
"""

from __future__ import annotations

import hashlib
import re
import struct

#: 63 − len("-launcher-") − 5 random characters − 1 spare; also leaves room for "-worker-9999".
MAX_TRIAL_NAME_LENGTH = 47
_HASH_LENGTH = 5
_INVALID = re.compile(r"[^a-z0-9-]+")
#: Longest readable learning-rate part (after "lr"); a longer decimal (0.30000000000000004) is
#: written as the float's 64 bits instead, which is as exact and at most 14 characters.
_READABLE_RATE = 12
_BASE36 = "0123456789abcdefghijklmnopqrstuvwxyz"


def _short_hash(text: str, length: int = _HASH_LENGTH) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def _base36(number: int) -> str:
    digits = ""
    while True:
        number, digit = divmod(number, 36)
        digits = _BASE36[digit] + digits
        if not number:
            return digits


def learning_rate_part(rate: float) -> str:
    """The DNS-safe, exact name of a positive learning rate: distinct rates, distinct parts.

    Python's repr is the shortest decimal that reads back as the same float, so mapping its
    '.' to 'p', '-' to 'm' and dropping '+' (and a trailing ".0") loses nothing; a decimal over
    12 characters becomes 'x' and the float's bits in base 36 (repr never writes an 'x')."""
    text = repr(float(rate)).removesuffix(".0")
    readable = text.replace(".", "p").replace("-", "m").replace("+", "")
    if len(readable) <= _READABLE_RATE:
        return readable
    (bits,) = struct.unpack(">Q", struct.pack(">d", rate))
    return "x" + _base36(bits)


def dns_prefix(experiment: str) -> str:
    """The experiment name as an RFC 1035 label prefix: lower-case, starts with a letter."""
    name = _INVALID.sub("-", experiment.lower()).strip("-") or "x"
    if not name[0].isalpha():
        name = f"x-{name}"
    return name


def trial_name(
    experiment: str,
    batch_size: int,
    gpus: int,
    repeat: int = 0,
    learning_rate: float | None = None,
) -> str:
    """The name of one grid point's trial; unique within the experiment, at most 47 characters.
    `learning_rate`: the point's base rate when the sweep has a learningRates axis, else None."""
    rate = f"-lr{learning_rate_part(learning_rate)}" if learning_rate is not None else ""
    suffix = f"-b{batch_size}-g{gpus}{rate}" + (f"-r{repeat}" if repeat else "")
    prefix = dns_prefix(experiment)
    if len(prefix) + len(suffix) <= MAX_TRIAL_NAME_LENGTH:
        return prefix + suffix
    keep = MAX_TRIAL_NAME_LENGTH - len(suffix) - _HASH_LENGTH - 1
    if keep < 1:
        # Only a global batch of many digits beside a long rate leaves no room for a prefix:
        # one long hash of the whole name, still a label starting with a letter.
        return "x" + _short_hash(prefix + suffix, MAX_TRIAL_NAME_LENGTH - 1)
    return f"{prefix[:keep].rstrip('-')}-{_short_hash(experiment)}{suffix}"


def worker_pod_name(trial: str, index: int) -> str:
    """The MPI operator's name for worker `index` of the trial's MPIJob."""
    return f"{trial}-worker-{index}"


def launcher_name(trial: str) -> str:
    """The MPI operator's name for the launcher Job of the trial's MPIJob."""
    return f"{trial}-launcher"
