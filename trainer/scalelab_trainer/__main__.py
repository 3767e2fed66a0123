"""`python -m scalelab_trainer`: the trial program of the trial contract (docs/trial-contract.md).

Starts TensorFlow and Horovod once, then runs one trial, or each trial of `--trial-list` in turn
(the local executor's way to pay interpreter, TF and Horovod start-up once). Serves /metrics when a
port is given and reports ScaleTrial status when asked. Exit code: 0 when every trial Succeeded or
Diverged, 1 when one Failed, 143 after SIGTERM (a partial `result` is written first).
"""

from __future__ import annotations

import json
import os
import signal
import sys
import traceback
from collections.abc import Callable, Sequence
from types import FrameType
from typing import Any

from scalelab_trainer.config import TrialConfig, build_parser, parse_config

SIGTERM_EXIT = 143


class StopFlag:
    """Set by SIGTERM; the training loop polls it between compiled calls."""

    def __init__(self) -> None:
        self.set = False

    def __call__(self) -> bool:
        return self.set

    def handle(self, signum: int, frame: FrameType | None) -> None:
        self.set = True


def trial_argvs(argv: Sequence[str]) -> list[list[str]]:
    """One argv per trial: the command line itself, or the entries of --trial-list."""
    ns, _ = build_parser().parse_known_args(list(argv))
    if ns.trial_list is None:
        return [list(argv)]
    with open(ns.trial_list) as f:
        entries = json.load(f)
    if not isinstance(entries, list) or not all(isinstance(e, list) for e in entries):
        raise SystemExit("--trial-list must be a JSON array of argv lists")
    return [[str(a) for a in e] for e in entries]


def _start_runtime(first: TrialConfig | None, requested: int) -> tuple[int, int, int, Any]:
    """Configure TensorFlow, start Horovod (N > 1), pin the GPU; return (rank, size, local
    rank, the device Placement or the DeviceError that stops every trial)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    from scalelab_trainer import devices, world

    if first is not None and first.intra_op_threads > 0:
        tf.config.threading.set_intra_op_parallelism_threads(first.intra_op_threads)
    rank, size, local_rank = world.start()
    chosen: devices.Placement | devices.DeviceError
    try:
        chosen = devices.place(requested, local_rank, world.local_size())
    except devices.DeviceError as e:
        chosen = e
    placement = devices.gather(chosen, world.hvd() if size > 1 else None)
    return rank, size, local_rank, placement


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    argvs = trial_argvs(argv)
    configs: list[TrialConfig | Exception] = []
    for a in argvs:
        try:
            configs.append(parse_config(a))
        except (ValueError, SystemExit) as e:
            configs.append(ValueError(str(e) or "invalid flags"))
    first = next((c for c in configs if isinstance(c, TrialConfig)), None)
    requested = max((c.gpus_per_process for c in configs if isinstance(c, TrialConfig)), default=0)
    rank, size, local_rank, placement = _start_runtime(first, requested)

    from scalelab_trainer.events import Emitter
    from scalelab_trainer.train import run_trial

    stop = StopFlag()
    signal.signal(signal.SIGTERM, stop.handle)
    metrics = _serve_metrics(configs, local_rank)
    _EXIT.fast = not needs_teardown(configs, size, serving_metrics=metrics is not None)
    code = 0
    for a, cfg in zip(argvs, configs, strict=True):
        if isinstance(cfg, Exception) or isinstance(placement, Exception):
            # An invalid trial, or no device for any: a Failed result with the reason, at once.
            error = cfg if isinstance(cfg, Exception) else placement
            config = cfg if isinstance(cfg, TrialConfig) else None
            _fail(_emitter(Emitter, config, a, rank), error, config)
            code = 1
            continue
        em = _emitter(Emitter, cfg, a, rank)
        series = metrics.for_trial(cfg, size, rank) if metrics else None
        try:
            result = run_trial(cfg, em, stop, series, placement)
            if result.get("phase") == "Failed":
                code = max(code, 1)
        except Exception as e:  # one failed trial is a result, not a crash of the trial list
            _fail(em, e, cfg)
            code = 1
        finally:
            if series is not None:
                # A finished trial's flat counters would look like a stalled trial to the
                # alert: its series go after a grace period (one last scrape sees the end).
                series.finish()
        if stop.set:
            return SIGTERM_EXIT
    return code


def _emitter(kind: Any, cfg: TrialConfig | None, argv: Sequence[str], rank: int) -> Any:
    """The trial's event writer; rank 0 of a trial that reports status patches its ScaleTrial."""
    if cfg is None:
        return kind("local", _trial_name(argv), rank)
    listeners: list[Callable[[dict[str, Any]], None]] = []
    if cfg.report_status and rank == 0:
        listeners.append(_status_listener(cfg))
    return kind(cfg.experiment, cfg.trial, rank, listeners=listeners)


def _trial_name(argv: Sequence[str]) -> str:
    return argv[argv.index("--trial") + 1] if "--trial" in argv[:-1] else "trial"


def _fail(em: Any, error: Exception, cfg: TrialConfig | None) -> None:
    traceback.print_exception(error, file=sys.stderr)
    em.emit("error", message=str(error), type=type(error).__name__)
    em.emit(
        "result",
        phase="Failed",
        reason=f"{type(error).__name__}: {error}",
        epochs=0,
        steps=0,
        config=cfg.as_dict() if cfg else None,
        interrupted=False,
        warnings=[],
    )


def _status_listener(cfg: TrialConfig) -> Callable[[dict[str, Any]], None]:
    from scalelab_trainer.report_status import StatusReporter, kubernetes_patch
    from scalelab_trainer.store_results import ResultsStore, kubernetes_create

    namespace = cfg.namespace
    if not namespace:
        print(
            "scalelab_trainer: --report-status without --namespace; not reporting", file=sys.stderr
        )
        return lambda event: None
    try:
        patch = kubernetes_patch(namespace, cfg.trial)
        create = kubernetes_create(namespace) if cfg.store_results else None
    except Exception as e:  # no cluster config: training goes on without status
        print(f"scalelab_trainer: no Kubernetes config ({e}); not reporting", file=sys.stderr)
        return lambda event: None
    reporter = StatusReporter(patch, cfg.progress_interval_seconds)
    if create is None:
        return reporter
    # After the reporter: the result's status patch comes first and its answer names the owner.
    store = ResultsStore(create, lambda: reporter.uid, namespace, cfg.export_data)

    def both(event: dict[str, Any]) -> None:
        reporter(event)
        store(event)

    return both


def _serve_metrics(configs: Sequence[TrialConfig | Exception], local_rank: int) -> Any:
    port = next(
        (c.metrics_port for c in configs if isinstance(c, TrialConfig) and c.metrics_port > 0), 0
    )
    if not port:
        return None
    from prometheus_client import CollectorRegistry, start_http_server

    from scalelab_trainer.metrics import Metrics

    registry = CollectorRegistry()
    # Horovod: processes on one node share its ports, so each serves on base port + local rank.
    start_http_server(port + local_rank, registry=registry)
    return Metrics(registry)


def needs_teardown(
    configs: Sequence[TrialConfig | Exception], size: int, *, serving_metrics: bool
) -> bool:
    """Whether the process must end through the interpreter's teardown (see `exit_with`):
    in a Horovod world, while serving /metrics, or after running a team's plugin (which may rely
    on atexit hooks or on files flushed by finalizers)."""
    plugin = any(isinstance(c, TrialConfig) and c.model == "custom" for c in configs)
    return size > 1 or serving_metrics or plugin


class _ExitPlan:
    """Whether the process may end without the interpreter's teardown (see `exit_with`)."""

    fast = False


_EXIT = _ExitPlan()


def exit_with(code: int) -> None:
    """End the process with `code` once main returned.

    With TensorFlow loaded, the interpreter's teardown (module finalizers, graphs, thread pools)
    takes about 0.9 s on this project's 2-core machine after the last `result` line, and the local
    executor's report waits for stdout to close. A process that ran alone and served no /metrics
    and trained only this project's models needs none of it: its events are flushed lines, status
    patches and results ConfigMaps are written synchronously, and no peer or scraper is left to
    see it go. It ends with os._exit after flushing. A Horovod world (N > 1), a /metrics server
    or a team's plugin takes the ordinary exit: Horovod's own atexit shutdown, the last scrape of
    a finished trial's series, whatever the plugin's code left to its teardown."""
    if _EXIT.fast:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)


if __name__ == "__main__":
    exit_with(main())
