"""The `scalelab` command: validate, plan, run, report, operator and crds.

The top layer: each subcommand parses its arguments, hands off to a module (validation, planner,
local.executor, report, kube) and turns what comes back into output and an exit code. Every
print and every exit code of the package lives here. Exit codes: 0 success, 1 invalid input or
failed trials, 2 usage, 130 interrupted. Bad input never produces a traceback. The report and the
local executor (matplotlib, rich) are imported only by the subcommands that use them, so
`scalelab operator` runs in an image without them.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import shlex
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from scalelab.adaptive import is_adaptive, pilot_trial
from scalelab.api import ScaleExperiment
from scalelab.planner import (
    PlannedTrial,
    dataset_size_text,
    local_command,
    plan,
    trainer_command,
    trainer_flags,
)
from scalelab.results import store
from scalelab.results.model import ResultsFile
from scalelab.validation import InvalidExperimentError, Problem, load_experiment

EXIT_OK = 0
EXIT_INVALID = 1  # invalid input, a failed trial, or a directory that cannot take the results
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as shells report it

#: After the adaptive pilot's phase in `scalelab plan`: it runs alone, before every other trial.
PILOT_MARK = "[pilot: runs first, measures B_simple]"


def _load(file: str) -> ScaleExperiment | None:
    """The experiment in FILE, or None after printing every problem with it (and warnings)."""
    warnings: list[Problem] = []
    try:
        experiment: ScaleExperiment | None = load_experiment(file, warnings)
    except InvalidExperimentError as error:
        experiment = None
        for problem in error.problems:
            print(problem.render(error.file), file=sys.stderr)
    for warning in warnings:
        print(f"{file}: warning: {warning.path}: {warning.message}", file=sys.stderr)
    return experiment


def cmd_validate(args: argparse.Namespace) -> int:
    """Validate every file; print each problem; non-zero if any file is invalid."""
    invalid = 0
    for file in args.files:
        experiment = _load(file)
        if experiment is None:
            invalid += 1
            continue
        trials = plan(experiment)
        skipped = sum(t.skipped for t in trials)
        print(
            f"{file}: ok ({experiment.metadata.name}: {len(trials)} trials, {skipped} skipped); "
            f"each trial: {dataset_size_text(experiment.spec.workload)}"
        )
    return EXIT_INVALID if invalid else EXIT_OK


def cmd_plan(args: argparse.Namespace) -> int:
    """Print the trials of one experiment: grid point, seed, learning rate, phase, command,
    and the dataset size every trial trains on. An adaptive sweep's pilot (the trial that runs
    first and measures B_simple) is marked; a sweep with learningRates gets a base-rate column."""
    experiment = _load(args.file)
    if experiment is None:
        return EXIT_INVALID
    trials = plan(experiment)
    pilot = pilot_trial(trials) if is_adaptive(experiment) else None
    if args.json:
        print(json.dumps([_plan_row(t, t is pilot) for t in trials], indent=2))
        return EXIT_OK
    _plan_table(trials, pilot, axis=experiment.spec.sweep.learning_rates is not None)
    print()
    print(f"each trial: {dataset_size_text(experiment.spec.workload)}")
    print()
    for t in trials:
        if not t.skipped:
            command = local_command(t.gpus, trainer_command(trainer_flags(t.spec, t.name)))
            print(f"{t.name}: {shlex.join(command)}")
    return EXIT_OK


def _plan_row(t: PlannedTrial, pilot: bool) -> dict[str, Any]:
    """One trial of `scalelab plan --json`. datasetSize null: every example the custom
    workload provides; baseLearningRate null: the sweep has no learningRates axis."""
    return {
        "name": t.name,
        "batchSize": t.batch_size,
        "gpus": t.gpus,
        "repeat": t.repeat,
        "seed": t.spec.seed,
        "learningRate": t.spec.learning_rate,
        "baseLearningRate": t.base_learning_rate,
        "datasetSize": t.spec.workload.examples(),
        "phase": t.phase.value,
        "reason": t.reason,
        "pilot": pilot,
        "argv": trainer_command(trainer_flags(t.spec, t.name)),
    }


def _plan_table(trials: list[PlannedTrial], pilot: PlannedTrial | None, axis: bool) -> None:
    """The table of `scalelab plan`: one line per trial, the pilot marked; `axis` adds the
    base learning rate of each trial (the lr column is that rate scaled to its batch)."""
    base = f" {'base lr':>11}" if axis else ""
    print(f"{'trial':<48} {'batch':>6} {'gpus':>4} {'rep':>3} {'seed':>5}{base} {'lr':>11}  phase")
    for t in trials:
        base = f" {t.base_learning_rate or 0.0:>11.6g}" if axis else ""
        line = (
            f"{t.name:<48} {t.batch_size:>6} {t.gpus:>4} {t.repeat:>3} {t.spec.seed:>5}{base} "
            f"{t.spec.learning_rate:>11.6g}  {t.phase.value}"
        )
        if t is pilot:
            line += f" {PILOT_MARK}"
        print(line + (f" ({t.reason})" if t.reason else ""))


def _error(message: str) -> int:
    print(f"scalelab: {message}", file=sys.stderr)
    return EXIT_INVALID


#: The newest Python that TensorFlow 2.15 (with Horovod 0.28.1, the trainer's pair) has wheels for.
TRAINER_PYTHON_MAX = (3, 11)


def trainer_python_problem(overridden: bool, version: tuple[int, int]) -> str | None:
    """Why `scalelab run` cannot train with this interpreter (None when it may): said before a
    sweep starts, rather than as an import error of every trial."""
    if overridden or version <= TRAINER_PYTHON_MAX:
        return None
    return (
        f"scalelab run trains with TensorFlow 2.15 and Horovod 0.28.1, which have wheels up to "
        f"Python {'.'.join(map(str, TRAINER_PYTHON_MAX))}; this is Python "
        f"{'.'.join(map(str, version))}. Run it from a Python 3.11 environment "
        "(hack/install-python.sh), or set SCALELAB_TRAINER_PYTHON to one's interpreter. "
        "validate, plan and report work on this Python (pip install './operator[report]')."
    )


def cmd_run(args: argparse.Namespace) -> int:
    """Run the experiment on this machine and write results and the report."""
    import os

    from scalelab.cli.progress import make_progress
    from scalelab.local.executor import LocalRun, Outcome, busy_ports

    problem = trainer_python_problem("SCALELAB_TRAINER_PYTHON" in os.environ, sys.version_info[:2])
    if problem:
        return _error(problem)
    experiment = _load(args.file)
    if experiment is None:
        return EXIT_INVALID
    out = Path(args.out) if args.out else Path("out") / experiment.metadata.name
    try:
        run = LocalRun(
            experiment,
            out,
            retry_failed=args.retry_failed,
            separate_processes=args.separate_processes,
            metrics_port=args.metrics_port,
        )
        if args.metrics_port:
            # Checked once up front: a busy port would fail every trial of the sweep.
            busy = busy_ports(args.metrics_port, run.max_processes())
            if busy:
                return _error(
                    f"--metrics-port {args.metrics_port}: port(s) {', '.join(map(str, busy))} in "
                    f"use or out of range (rank r of a trial listens on {args.metrics_port} + r); "
                    "choose another port"
                )
        run.progress = make_progress(
            run.results.trials,
            experiment.spec.training.max_epochs,
            learning_rates=experiment.spec.sweep.learning_rates is not None,
        )
        if not args.no_report:
            _preload_report()
        if kept := run.finished():
            print(f"resuming in {out}: {kept} finished trial(s) kept", flush=True)
        outcome = run.run()
    except (store.ResultsReadError, store.ResultsWriteError) as error:
        return _error(str(error))
    except OSError as error:
        return _error(f"cannot use {out}: {error}")
    if outcome is Outcome.INTERRUPTED:
        print(
            f"scalelab: interrupted; {run.finished()} finished trial(s) kept in "
            f"{out / store.RESULTS_JSON}. Run the same command again to resume.",
            file=sys.stderr,
        )
        return EXIT_INTERRUPTED
    if not args.no_report and _render(out, run.results) != EXIT_OK:
        return EXIT_INVALID
    print(f"results: {out / store.RESULTS_JSON}")
    return EXIT_INVALID if outcome is Outcome.FAILED else EXIT_OK


def _preload_report() -> None:
    """Import the report's modules (matplotlib: about a second) on a thread while the trainer
    runs, so the report does not wait for them after the last trial. A failure is left to the
    import in `_render`, which reports it."""

    def load() -> None:
        with contextlib.suppress(Exception):
            importlib.import_module("scalelab.report.render")

    threading.Thread(target=load, name="preload-report", daemon=True).start()


def _render(directory: Path, results: ResultsFile) -> int:
    """Write DIR/report.html and the plots; print where, or why not."""
    from scalelab.report.render import render_report

    try:
        path = render_report(directory, results)
    except OSError as error:
        return _error(f"cannot write the report to {directory}: {error}")
    print(f"report: {path}")
    return EXIT_OK


def cmd_report(args: argparse.Namespace) -> int:
    """Re-render DIR/report.html and the plots from DIR/results.json, or write a cluster
    experiment's results.json, results.csv and report.html (--experiment), or delete old
    results archives (--prune)."""
    if args.prune:
        if args.dir is not None or args.out is not None:
            return _error("--prune takes no DIR and no --out")
        return _prune_archives(args)
    if args.older_than is not None:
        return _error("--older-than goes with --prune")
    if args.experiment is not None:
        if args.dir is not None:
            return _error("give either DIR or --experiment NAME (with --out DIR), not both")
        return _report_cluster(args)
    if args.dir is None:
        return _error("give DIR (a local run's results) or --experiment NAME (a cluster's)")
    directory = Path(args.dir)
    try:
        results = store.load(directory)
    except store.ResultsReadError as error:
        return _error(str(error))
    if results is None:
        return _error(f"{directory / store.RESULTS_JSON} not found")
    return _render(directory, results)


def _report_cluster(args: argparse.Namespace) -> int:
    """Fetch a cluster experiment (or, once it is deleted, its results archive), write its
    results files and report; say what still runs."""
    from scalelab.kube import archive
    from scalelab.kube import results as cluster

    name = args.experiment
    out = Path(args.out) if args.out else Path("out") / name
    try:
        api, namespace = cluster.connect()
        namespace = args.namespace or namespace
        with api:
            try:
                fetched = cluster.assemble(cluster.fetch(api, namespace, name))
            except cluster.ExperimentNotFoundError as gone:
                found = archive.find(api, namespace, name)
                if found is None:
                    raise cluster.ClusterReadError(
                        f"{gone}; no results archive of it either (kubectl get configmaps -n "
                        f"{namespace} -l {archive.LABEL_ARCHIVE} lists the archives there)"
                    ) from None
                fetched = archive.as_fetched(found, api.host)
                print(
                    f"{namespace}/{name}: the experiment is gone; read its results archive, "
                    f"configmap {found.name} (archived {found.archived_at or 'at an unknown time'})"
                )
                if found.left_out:
                    print(f"{found.left_out} data file(s) were over the archive's budget: the "
                          "report draws without them")  # fmt: skip
        if args.prometheus:
            _gpu_utilisation(fetched.results, namespace, args.prometheus)
        store.load(out, experiment=name)  # never overwrite another experiment's results
        store.save(out, fetched.results)
        store.save_files(out, fetched.files)
    except (cluster.ClusterReadError, archive.ArchiveReadError) as error:
        return _error(str(error))
    except (store.ResultsReadError, store.ResultsWriteError) as error:
        return _error(str(error))
    except OSError as error:
        return _error(f"cannot use {out}: {error}")
    finished = len(fetched.results.trials) - len(fetched.running) - len(fetched.pending)
    print(f"{namespace}/{name}: {finished} of {len(fetched.results.trials)} trial(s) finished")
    if fetched.running or fetched.pending:
        for label, names in (("running", fetched.running), ("pending", fetched.pending)):
            if names:
                print(f"still {label}: {', '.join(names)}")
        print("rerun this command when they finish for the complete report")
    if _render(out, fetched.results) != EXIT_OK:
        return EXIT_INVALID
    print(f"results: {out / store.RESULTS_JSON}")
    return EXIT_OK


def _gpu_utilisation(results: ResultsFile, namespace: str, url: str) -> None:
    """Each trial's mean GPU utilisation from Prometheus into its diagnostics, printed; a
    Prometheus that cannot answer is said and leaves the results as they are."""
    import time

    from scalelab.kube import utilisation

    try:
        means = utilisation.annotate(results, namespace, url, time.time())
    except utilisation.PrometheusReadError as error:
        print(f"scalelab: no GPU utilisation: {error}", file=sys.stderr)
        return
    if not means:
        print(f"{url}: no DCGM_FI_DEV_GPU_UTIL series of this experiment's pods")
    for trial, mean in sorted(means.items()):
        print(f"{trial}: mean GPU utilisation {mean:.0f}%")


def _prune_archives(args: argparse.Namespace) -> int:
    """Delete the results archives of deleted experiments (older than --older-than days)."""
    from scalelab.kube import archive
    from scalelab.kube import results as cluster

    days = args.older_than or 0.0
    try:
        api, namespace = cluster.connect()
        namespace = args.namespace or namespace
        with api:
            names = archive.prune(api, namespace, days * 86400.0, args.experiment)
    except cluster.ClusterReadError as error:
        return _error(str(error))
    for target in names:
        print(f"deleted configmap {namespace}/{target}")
    age = f", archived over {days:g} day(s) ago" if days else ""
    print(f"{namespace}: {len(names)} results archive(s) of deleted experiments pruned{age}")
    return EXIT_OK


def cmd_operator(args: argparse.Namespace) -> int:
    """Run the kopf operator against the cluster in KUBECONFIG or in-cluster credentials."""
    from pydantic import ValidationError

    from scalelab.kube.main import run as run_operator
    from scalelab.kube.settings import PREFIX, Config

    try:
        config = Config.from_env()
    except ValidationError as error:
        for e in error.errors():
            variable = PREFIX + "_".join(str(part) for part in e["loc"]).upper()
            print(f"scalelab: {variable}={e['input']!r}: {e['msg']}", file=sys.stderr)
        return EXIT_INVALID
    flags = {
        "leader_elect": args.leader_elect,
        "lease_name": args.lease_name,
        "pod_namespace": args.lease_namespace,
    }
    config = config.model_copy(update={k: v for k, v in flags.items() if v is not None})
    return run_operator(
        config,
        namespaces=[] if args.all_namespaces else args.namespace,
        standalone=args.standalone,
        metrics_port=args.metrics_port,
        liveness_port=args.liveness_port,
    )


def cmd_crds(args: argparse.Namespace) -> int:
    """Write (or --check) the CRDs generated from the API models."""
    from scalelab.kube import crd

    out = Path(args.out)
    if args.check:
        stale = crd.drift(out)
        for name in stale:
            print(f"{out / name}: stale, run `scalelab crds`", file=sys.stderr)
        return EXIT_INVALID if stale else EXIT_OK
    for path in crd.write(out):
        print(path)
    return EXIT_OK


def _port(text: str) -> int:
    """A TCP port number or 0 (off), for argparse."""
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{port} is not a port number (0-65535)")
    return port


def _days(text: str) -> float:
    """A number of days, zero or more, for argparse."""
    try:
        days = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of days: {text!r}") from None
    if not days >= 0:  # also refuses nan
        raise argparse.ArgumentTypeError(f"{text} is not a number of days (0 or more)")
    return days


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    parser = argparse.ArgumentParser(
        prog="scalelab",
        description="Sweep batch sizes × GPU counts of a Horovod training job and report "
        "throughput, loss, scaling efficiency and a recommendation.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    validate = sub.add_parser("validate", help="check ScaleExperiment files")
    validate.add_argument("files", nargs="+", metavar="FILE")
    validate.set_defaults(func=cmd_validate)

    plan_ = sub.add_parser("plan", help="print the trials and their trainer command lines")
    plan_.add_argument("file", metavar="FILE")
    plan_.add_argument("--json", action="store_true", help="machine-readable output")
    plan_.set_defaults(func=cmd_plan)

    _add_run(sub)
    _add_report(sub)
    _add_operator(sub)

    crds = sub.add_parser("crds", help="write the CRDs generated from the API models")
    crds.add_argument("--out", default="manifests/crds", metavar="DIR", help="default %(default)s")
    crds.add_argument("--check", action="store_true", help="fail if the files are stale")
    crds.set_defaults(func=cmd_crds)
    return parser


# The subparsers' collection type is private to argparse; Any keeps mypy strict without it.
def _add_run(sub: Any) -> None:
    """`scalelab run FILE`: the local executor's options."""
    run = sub.add_parser("run", help="run every trial on this machine (horovodrun, Gloo)")
    run.add_argument("file", metavar="FILE")
    run.add_argument("--out", metavar="DIR", help="results directory (default out/<name>)")
    run.add_argument(
        "--retry-failed", action="store_true", help="when resuming, rerun Failed trials too"
    )
    run.add_argument(
        "--separate-processes",
        action="store_true",
        help="one trainer process per trial instead of one per process count (measures the "
        "start-up cost that --trial-list saves)",
    )
    run.add_argument("--no-report", action="store_true", help="skip report.html and the plots")
    run.add_argument(
        "--metrics-port", type=_port, default=0, metavar="P",
        help="every trainer rank serves Prometheus /metrics on P + its rank while its trial "
        "runs (default 0: off)",
    )  # fmt: skip
    run.set_defaults(func=cmd_run)


def _add_report(sub: Any) -> None:
    """`scalelab report DIR` or `scalelab report --experiment NAME`."""
    report = sub.add_parser(
        "report",
        help="re-render DIR/report.html from DIR/results.json, or write a cluster experiment's "
        "results and report (--experiment)",
    )
    report.add_argument("dir", metavar="DIR", nargs="?", help="a local run's results directory")
    report.add_argument(
        "--experiment", metavar="NAME",
        help="a ScaleExperiment on the cluster of the current kubeconfig context (as kubectl "
        "finds it): write results.json, results.csv and report.html of what has finished; "
        "once it is deleted, of its results archive",
    )  # fmt: skip
    report.add_argument(
        "--namespace", "-n", metavar="NS",
        help="with --experiment: its namespace (default: the context's, else default)",
    )  # fmt: skip
    report.add_argument(
        "--out", metavar="DIR", help="with --experiment: where to write (default out/<name>)"
    )
    report.add_argument(
        "--prometheus", metavar="URL",
        help="with --experiment: a Prometheus scraping dcgm-exporter and the trainer pods; adds "
        "each trial's mean GPU utilisation (diagnostics.gpuUtilisationPercent in results.json)",
    )  # fmt: skip
    report.add_argument(
        "--prune", action="store_true",
        help="delete the results archives (kept when an experiment finishes) of experiments "
        "that were deleted, in --namespace; with --experiment NAME only that name's",
    )  # fmt: skip
    report.add_argument(
        "--older-than", type=_days, metavar="DAYS",
        help="with --prune: only archives made more than DAYS ago (default: all)",
    )  # fmt: skip
    report.set_defaults(func=cmd_report)


def _add_operator(sub: Any) -> None:
    """`scalelab operator`: the kopf operator's scope and ports."""
    operator = sub.add_parser("operator", help="run the Kubernetes operator (kopf)")
    scope = operator.add_mutually_exclusive_group()
    scope.add_argument(
        "--namespace", "-n", action="append", default=[], metavar="NS",
        help="watch this namespace (repeatable); default: all namespaces",
    )  # fmt: skip
    scope.add_argument("--all-namespaces", "-A", action="store_true", help="watch every namespace")
    operator.add_argument(
        "--standalone", action=argparse.BooleanOptionalAction, default=True,
        help="no kopf peering (replicas exclude each other with --leader-elect instead)",
    )  # fmt: skip
    operator.add_argument(
        "--leader-elect", action=argparse.BooleanOptionalAction, default=None,
        help="act only while holding a Lease; other replicas stand by "
        "(default SCALELAB_LEADER_ELECT or off)",
    )  # fmt: skip
    operator.add_argument(
        "--lease-name", metavar="NAME",
        help="the Lease's name (default SCALELAB_LEASE_NAME or scalelab-operator)",
    )  # fmt: skip
    operator.add_argument(
        "--lease-namespace", metavar="NS",
        help="the Lease's namespace (default SCALELAB_POD_NAMESPACE or scalelab-system)",
    )  # fmt: skip
    operator.add_argument(
        "--metrics-port", type=int, default=None,
        help="port of /metrics (default SCALELAB_METRICS_PORT or 8080; 0 = off)",
    )  # fmt: skip
    operator.add_argument(
        "--liveness-port", type=int, default=8081, help="port of /healthz (0 = off)"
    )
    operator.set_defaults(func=cmd_operator)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `scalelab` console script."""
    args = build_parser().parse_args(argv)
    try:
        code: int = args.func(args)
    except KeyboardInterrupt:
        print("scalelab: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    return code


if __name__ == "__main__":
    sys.exit(main())
