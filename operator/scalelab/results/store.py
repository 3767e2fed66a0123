"""Reading and atomically writing DIR/results.json and DIR/results.csv (and the report's files).

Each write goes to a temporary file in DIR, is flushed to disk, then renamed over the old file,
so a crash or a full disk never leaves a torn results file: the previous version survives.
A full disk (or quota, or file-size limit) raises `ResultsWriteError` with a message to act on.
"""

from __future__ import annotations

import csv
import errno
import io
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from scalelab.results.columns import CSV_COLUMNS, shown
from scalelab.results.model import SCHEMA_VERSION, ResultsFile, has_learning_rates

RESULTS_JSON = "results.json"
RESULTS_CSV = "results.csv"
_FULL = {
    errno.ENOSPC: "no space left on device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EFBIG: "file size limit exceeded",
}


_UMASK = os.umask(0o022)
os.umask(_UMASK)


class ResultsWriteError(Exception):
    """DIR cannot take the results (full disk, quota, permissions); finished results are kept."""


class ResultsReadError(Exception):
    """DIR/results.json exists but is not a results file this version can read."""


def write_atomic(path: Path, data: bytes) -> None:
    """Replace `path` with `data` all at once (temp file in the same directory + rename)."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_UMASK)  # mkstemp makes 0600; results are for everyone to read
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _csv(results: ResultsFile) -> bytes:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    keys = [c.key for c in shown(CSV_COLUMNS, has_learning_rates(results))]
    writer.writerow(keys)
    for trial in results.trials:
        row = trial.model_dump(by_alias=True, mode="json")
        writer.writerow([_cell(row.get(k)) for k in keys])
    return buffer.getvalue().encode()


def _cell(value: Any) -> Any:
    """A CSV cell: empty for null, true/false as in results.json, else the value."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return value


def _drop_torn_temporaries(directory: Path) -> None:
    """Temporary files a killed writer (SIGKILL between write and rename) left behind; the
    results files themselves were never torn."""
    for name in (RESULTS_JSON, RESULTS_CSV):
        for stale in directory.glob(f".{name}.*.tmp"):
            stale.unlink(missing_ok=True)


def save(directory: Path, results: ResultsFile) -> None:
    """Write results.json then results.csv atomically; ResultsWriteError if DIR cannot take them."""
    payload = json.dumps(results.model_dump(by_alias=True, mode="json"), indent=1).encode()
    try:
        directory.mkdir(parents=True, exist_ok=True)
        _drop_torn_temporaries(directory)
        write_atomic(directory / RESULTS_JSON, payload + b"\n")
        write_atomic(directory / RESULTS_CSV, _csv(results))
    except OSError as error:
        full = _FULL.get(error.errno or 0)
        what = full or error.strerror or str(error)
        fix = (
            "free space (or choose another --out)" if full else "fix that (or choose another --out)"
        )
        raise ResultsWriteError(
            f"cannot write results to {directory}: {what}. Results saved before this point are "
            f"intact in {directory / RESULTS_JSON}; {fix} and rerun the same command to resume."
        ) from None


def load(directory: Path, experiment: str | None = None) -> ResultsFile | None:
    """The results saved in DIR, or None when there are none yet; with `experiment`, results of
    another experiment are an error (a run or a cluster report never mixes two experiments)."""
    path = directory / RESULTS_JSON
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if data.get("schemaVersion") != SCHEMA_VERSION:
            raise ResultsReadError(
                f"{path}: schemaVersion {data.get('schemaVersion')!r}, expected {SCHEMA_VERSION!r}"
            )
        results = ResultsFile.model_validate(data)
    except (OSError, ValueError, AttributeError, ValidationError) as error:
        raise ResultsReadError(f"{path}: not a readable results file ({error})") from None
    if experiment is not None and results.experiment != experiment:
        raise ResultsReadError(
            f"{directory} holds results of experiment {results.experiment!r}, not "
            f"{experiment!r}; choose another --out"
        )
    return results


def save_files(directory: Path, files: dict[str, bytes]) -> None:
    """Write files beside the results (paths relative to DIR, e.g. data/<trial>.npz) atomically."""
    for relative, data in files.items():
        path = directory / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, data)
