"""scalelab's Grafana dashboard, built with Grafana's typed builders (grafana-foundation-sdk).

Four rows: live trainer series while pods run, results the operator keeps as gauges after the pods
are gone, the cluster's GPU demand, and GPU pools (by Kueue queue) for admins. Every panel reads
the `$datasource` variable (no hard-coded uid) and the chosen `$namespace` and `$experiment`.
`dashboard()` is the JSON model as a plain dict: files.py writes it, tests/observability runs every
query against a real Prometheus.
"""

from __future__ import annotations

import json
from typing import Any, TypeVar

from grafana_foundation_sdk.builders import barchart, bargauge, common, prometheus, timeseries
from grafana_foundation_sdk.builders import dashboard as builders
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common as common_models
from grafana_foundation_sdk.models import dashboard as models
from grafana_foundation_sdk.models.prometheus import PromQueryFormat

DS = models.DataSourceRef(type_val="prometheus", uid="${datasource}")
#: The series of the chosen experiment (trainer and operator series both carry these labels).
SELECT = 'namespace=~"$namespace", experiment="$experiment"'
CONFIG = "B={{batch_size}} N={{gpus}}"
LIVE = 'rank="0"'

Panel = TypeVar("Panel", timeseries.Panel, barchart.Panel, bargauge.Panel)


def _target(
    expr: str, legend: str = "", ref: str = "A", instant: bool = False, table: bool = False
) -> prometheus.Dataquery:
    """One PromQL query: a range query for time series, instant for the results' bars."""
    query = prometheus.Dataquery().datasource(DS).ref_id(ref).expr(expr).legend_format(legend)
    query = query.instant() if instant else query.range()
    return query.format(PromQueryFormat.TABLE) if table else query


def _place(
    panel: Panel,
    title: str,
    description: str,
    targets: list[prometheus.Dataquery],
    pos: tuple[int, int, int, int],
    *,
    unit: str = "short",
) -> Panel:
    """Title, description, datasource, queries, grid position (x, y, w, h) and the Grafana unit
    id of a panel (an axis label stands in for units Grafana lacks)."""
    x, y, w, h = pos
    panel.title(title).description(description).datasource(DS).unit(unit)
    panel.grid_pos(models.GridPos(x=x, y=y, w=w, h=h))
    for target in targets:
        panel.with_target(target)
    return panel


def _row(title: str, y: int) -> builders.Row:
    return builders.Row(title).collapsed(False).grid_pos(models.GridPos(x=0, y=y, w=24, h=1))


def _log_lines(panel: timeseries.Panel) -> timeseries.Panel:
    """Thin lines without points on a log10 axis (losses and noise scales span decades)."""
    log = common.ScaleDistributionConfig().type(common_models.ScaleDistribution.LOG).log(10)
    return (
        panel.draw_style(common_models.GraphDrawStyle.LINE)
        .line_width(1)
        .show_points(common_models.VisibilityMode.NEVER)
        .scale_distribution(log)
    )


def _matrix(panel: barchart.Panel, rows: str, columns: str) -> barchart.Panel:
    """One bar group per `rows` value, one bar per `columns` value (groupingToMatrix)."""
    grouping = models.DataTransformerConfig(
        id_val="groupingToMatrix",
        options={"rowField": rows, "columnField": columns, "valueField": "Value"},
    )
    return (
        panel.with_transformation(grouping)
        .x_field(f"{rows}\\{columns}")
        .show_value(common_models.VisibilityMode.AUTO)
        # Grafana's own defaults, stated: the SDK's model would otherwise write a hidden legend
        # and an ascending tooltip sort.
        .legend(
            common.VizLegendOptions()
            .show_legend(True)
            .display_mode(common_models.LegendDisplayMode.LIST)
            .placement(common_models.LegendPlacement.BOTTOM)
        )
        .tooltip(
            common.VizTooltipOptions()
            .mode(common_models.TooltipDisplayMode.SINGLE)
            .sort(common_models.SortOrder.NONE)
        )
    )


def live_panels() -> list[timeseries.Panel]:
    """Trainer series of the running trials (rank 0 where one rank stands for all)."""
    by_config = "by (batch_size, gpus, trial)"
    return [
        _place(
            timeseries.Panel().axis_label("samples/s"),
            "Throughput per configuration",
            "Global training samples per second of each trial (sum over its ranks): which "
            "(batch size, GPU count) trains fastest right now, and whether it holds steady.",
            [
                _target(
                    f"sum {by_config} (rate(scalelab_trainer_samples_total"
                    f"{{{SELECT}}}[$__rate_interval]))",
                    CONFIG,
                )
            ],
            (0, 1, 12, 8),
        ),
        _place(
            timeseries.Panel(),
            "Step time p90 per configuration",
            "90th percentile of one optimizer step's wall time (rank 0): compute plus the "
            "allreduce; a rising line with flat throughput points at communication.",
            [
                _target(
                    "histogram_quantile(0.9, sum by (le, batch_size, gpus, trial) (rate("
                    f"scalelab_trainer_step_duration_seconds_bucket{{{SELECT}, {LIVE}}}"
                    "[$__rate_interval])))",
                    CONFIG,
                )
            ],
            (12, 1, 12, 8),
            unit="s",
        ),
        *_loss_panels(by_config),
        _place(
            _log_lines(timeseries.Panel()),
            "Gradient noise scale per configuration",
            "Measured B_simple = tr(Σ)/|G|² (McCandlish et al. 2018): batch sizes well below it "
            "scale almost perfectly; well above it, larger batches stop saving steps.",
            [
                _target(
                    f"max {by_config} (scalelab_trainer_gradient_noise_scale{{{SELECT}, {LIVE}}})",
                    CONFIG,
                )
            ],
            (0, 17, 12, 8),
        ),
        _dcgm_panel(),
    ]


def _loss_panels(by_config: str) -> list[timeseries.Panel]:
    """The full-dataset and the per-update loss, on log axes, side by side."""
    return [
        _place(
            _log_lines(timeseries.Panel()),
            title,
            what,
            [
                _target(
                    f'max {by_config} (scalelab_trainer_loss{{{SELECT}, {LIVE}, kind="{kind}"}})',
                    CONFIG,
                )
            ],
            (12 * i, 9, 12, 8),
        )
        for i, (kind, title, what) in enumerate(
            (
                (
                    "full",
                    "Full-dataset loss per configuration",
                    "Loss on the whole dataset at each epoch end: comparable across batch sizes.",
                ),
                (
                    "update",
                    "Per-update loss per configuration",
                    "Mean of the epoch's per-update (mini-batch) losses: what the optimizer saw.",
                ),
            )
        )
    ]


#: DCGM_FI_DEV_GPU_UTIL with the GPU's pod and namespace as `pod` and `namespace`, whether the
#: scrape kept dcgm-exporter's labels (honorLabels) or renamed them exported_pod/_namespace.
GPU_UTIL = (
    "label_replace(label_replace(DCGM_FI_DEV_GPU_UTIL,\n"
    '    "pod", "$1", "exported_pod", "(.+)"),\n'
    '    "namespace", "$1", "exported_namespace", "(.+)")'
)


def _dcgm_panel() -> timeseries.Panel:
    """GPU utilisation from NVIDIA's dcgm-exporter, joined to the experiment's trainer pods:
    each GPU, and the mean of a configuration's GPUs (batch size, GPU count)."""
    join = (
        "  * on (namespace, pod) group_left (batch_size, gpus)\n"
        "  group by (namespace, pod, experiment, batch_size, gpus) (\n"
        f"    scalelab_trainer_samples_total{{{SELECT}}})\n"
    )
    return _place(
        timeseries.Panel(),
        "GPU utilization of the experiment's pods (DCGM)",
        "DCGM_FI_DEV_GPU_UTIL of each GPU, joined to the trainer pods by (namespace, pod), and "
        "the mean over each configuration's GPUs. Empty without NVIDIA's dcgm-exporter (with "
        "Kubernetes pod mapping). Works whether its scrape keeps the pod labels (honorLabels) "
        "or renames them exported_pod.",
        [
            _target(
                f"avg by (batch_size, gpus, pod, gpu) (\n  {GPU_UTIL}\n{join})",
                "{{pod}} GPU {{gpu}} (" + CONFIG + ")",
            ),
            _target(
                f"avg by (batch_size, gpus) (\n  {GPU_UTIL}\n{join})",
                "mean (" + CONFIG + ")",
                ref="B",
            ),
        ],
        (12, 17, 12, 8),
        unit="percent",
    )


def _result(metric: str) -> prometheus.Dataquery:
    """The operator's gauge of a finished trials' result, per (batch size, GPU count), now."""
    return _target(f"avg by (batch_size, gpus) ({metric}{{{SELECT}}})", instant=True, table=True)


def result_panels() -> list[barchart.Panel | bargauge.Panel]:
    """Results of finished trials, from the operator's gauges (kept after the pods are gone)."""
    return [
        _place(
            _matrix(barchart.Panel(), "gpus", "batch_size"),
            "Scaling efficiency vs GPUs per batch size",
            "thr(N)/(N·thr(1)) of finished trials, one bar per batch size at each GPU count "
            "(strong scaling for a global batch, weak for a per-process batch). 1 is perfect.",
            [_result("scalelab_trial_result_scaling_efficiency_ratio")],
            (0, 26, 12, 9),
            unit="percentunit",
        ),
        _place(
            _matrix(barchart.Panel().axis_label("samples/s"), "gpus", "batch_size"),
            "Throughput vs GPUs per batch size",
            "Steady-state global samples/s of finished trials: the absolute scaling curve.",
            [_result("scalelab_trial_result_samples_per_second")],
            (12, 26, 12, 9),
        ),
        _place(
            _matrix(barchart.Panel(), "batch_size", "gpus"),
            "Time to target vs batch size",
            "Training seconds until the full-dataset loss reached spec.training.targetLoss, one "
            "bar per GPU count at each batch size: where adding batch or GPUs stops paying.",
            [_result("scalelab_trial_result_time_to_target_seconds")],
            (0, 35, 12, 9),
            unit="s",
        ),
        _place(
            bargauge.Panel()
            .orientation(common_models.VizOrientation.HORIZONTAL)
            .display_mode(common_models.BarGaugeDisplayMode.BASIC)
            # Grafana's default reduction, stated (the SDK's model writes no calculation).
            .reduce_options(common.ReduceDataOptions().calcs(["lastNotNull"]).values(False)),
            "Trials by phase",
            "How far the sweep is: trials Pending, Running, Succeeded, Diverged, Failed, Skipped.",
            [
                _target(
                    f"sum by (phase) (scalelab_operator_trials{{{SELECT}}})",
                    "{{phase}}",
                    instant=True,
                )
            ],
            (12, 35, 12, 9),
        ),
    ]


def demand_panels() -> list[timeseries.Panel]:
    """The cluster's GPU demand and the operator's health, across experiments."""
    # device="gpu": CPU-only trials (gpusPerProcess 0) count their processes as device="cpu".
    gpus = 'scalelab_operator_gpus{namespace=~"$namespace", device="gpu", state="%s"}'
    return [
        _place(
            timeseries.Panel(),
            "GPUs requested / running / pending / queued",
            "requested: GPUs of admitted trials (MPIJob not finished); running: of those, "
            "MPIJob Running; pending: requested minus running (waiting for nodes, a queue or "
            "image pulls); queued: runnable trials the operator holds back under maxGPUs / "
            "maxConcurrentTrials. A lasting pending line means the GPU pool is too small. "
            "Trials with resources.gpusPerProcess 0 (CPU only) are not counted.",
            [
                _target(f"sum({gpus % 'requested'})", "requested", "A"),
                _target(f"sum({gpus % 'running'})", "running", "B"),
                _target(f"sum({gpus % 'requested'}) - sum({gpus % 'running'})", "pending", "C"),
                _target(f"sum({gpus % 'queued'})", "queued", "D"),
            ],
            (0, 45, 16, 8),
        ),
        _place(
            timeseries.Panel().axis_label("per second"),
            "Operator reconciles and errors",
            "Reconciliations per second and failing Kubernetes API calls per second, by handler: "
            "a lasting error line is what ScalelabOperatorReconcileErrors alerts on.",
            [
                _target(
                    "sum by (handler) (rate(scalelab_operator_reconciles_total[$__rate_interval]))",
                    "{{handler}}",
                    "A",
                ),
                _target(
                    "sum by (handler) (rate(scalelab_operator_reconcile_errors_total"
                    "[$__rate_interval]))",
                    "errors: {{handler}}",
                    "B",
                ),
            ],
            (16, 45, 8, 8),
        ),
    ]


#: GPU-seconds a finished trial used beyond what perfect scaling would have needed:
#: gpu_seconds × (1 − efficiency) where efficiency < 1 (both gauges carry the same labels).
EXCESS = (
    "scalelab_trial_result_gpu_seconds{%s} * clamp_min(1 - "
    "scalelab_trial_result_scaling_efficiency_ratio{%s}, 0)"
)


def pool_panels() -> list[timeseries.Panel | barchart.Panel]:
    """GPU pools for admins: demand vs Kueue-admitted vs running by queue, scaling efficiency
    by experiment and GPU count, and the GPU-seconds spent past the knee of each sweep."""
    gpus = 'scalelab_operator_gpus{namespace=~"$namespace", device="gpu", state=~"%s"}'
    ns = 'namespace=~"$namespace"'
    return [
        _place(
            timeseries.Panel(),
            "GPU pools: demand vs admitted vs running, by queue",
            "demand: GPUs every unfinished trial asks for (MPIJobs not finished, plus trials the "
            "operator holds under maxGPUs / maxConcurrentTrials); admitted: MPIJobs Kueue let "
            "run (not suspended); running: MPIJob Running. queue is execution.queueName (empty "
            "without Kueue). Demand above admitted is what the queue's quota refuses; admitted "
            "above running is what the nodes cannot place. CPU-only trials (gpusPerProcess 0) "
            "are not counted.",
            [
                _target(f"sum by (queue) ({gpus % 'requested|queued'})", "demand {{queue}}", "A"),
                _target(
                    f"sum by (queue) ({gpus % 'requested'}) - sum by (queue) "
                    f"({gpus % 'suspended'})",
                    "admitted {{queue}}",
                    "B",
                ),
                _target(f"sum by (queue) ({gpus % 'running'})", "running {{queue}}", "C"),
            ],
            (0, 54, 12, 9),
        ),
        _place(
            _matrix(barchart.Panel(), "experiment", "gpus"),
            "Scaling efficiency by experiment and GPU count",
            "Mean over batch sizes of thr(N)/(N·thr(1)) of each experiment's finished trials: "
            "where each team's model stops using added GPUs well.",
            [
                _target(
                    "avg by (experiment, gpus) "
                    f"(scalelab_trial_result_scaling_efficiency_ratio{{{ns}}})",
                    instant=True,
                    table=True,
                )
            ],
            (12, 54, 12, 9),
            unit="percentunit",
        ),
        _place(
            _matrix(barchart.Panel().axis_label("GPU-seconds"), "experiment", "gpus"),
            "GPU-seconds past the knee, by experiment and GPU count",
            "GPU-seconds each experiment's trials used beyond what perfect scaling would have "
            "needed (GPU-seconds × (1 − efficiency)): the price of the points past the knee.",
            [_target(f"sum by (experiment, gpus) ({EXCESS % (ns, ns)})", instant=True, table=True)],
            (0, 63, 24, 9),
        ),
    ]


def variables() -> list[builders.DatasourceVariable | builders.QueryVariable]:
    """$datasource (any Prometheus), then $namespace and $experiment from the series present."""
    experiments = (
        'label_values({__name__=~"scalelab_operator_trials|scalelab_trainer_samples_total", '
        'namespace=~"$namespace"}, experiment)'
    )
    return [
        builders.DatasourceVariable("datasource")
        .label("Data source")
        .type("prometheus")
        .hide(models.VariableHide.DONT_HIDE),
        builders.QueryVariable("namespace")
        .label("Namespace")
        .datasource(DS)
        .query({"query": "label_values(scalelab_operator_trials, namespace)", "refId": "namespace"})
        .include_all(True)
        .all_value(".*")
        .multi(False)
        .refresh(models.VariableRefresh.ON_TIME_RANGE_CHANGED)
        .sort(models.VariableSort.ALPHABETICAL_ASC)
        .hide(models.VariableHide.DONT_HIDE),
        builders.QueryVariable("experiment")
        .label("Experiment")
        .datasource(DS)
        .query({"query": experiments, "refId": "experiment"})
        .include_all(False)
        .multi(False)
        .refresh(models.VariableRefresh.ON_TIME_RANGE_CHANGED)
        .sort(models.VariableSort.ALPHABETICAL_ASC)
        .hide(models.VariableHide.DONT_HIDE),
    ]


def build() -> builders.Dashboard:
    """The dashboard builder: metadata, variables, then rows and panels top to bottom."""
    board = (
        builders.Dashboard("scalelab: scaling experiments")
        .uid("scalelab-sweeps")
        .description("Throughput, loss and scaling of ScaleExperiment sweeps; GPU demand.")
        .tags(["scalelab", "horovod", "gpu"])
        .editable()
        .tooltip(models.DashboardCursorSync.CROSSHAIR)
        .version(1)
        .refresh("30s")
        .time("now-3h", "now")
        .timezone("browser")
    )
    for variable in variables():
        board.with_variable(variable)
    sections: list[tuple[str, int, list[Any]]] = [
        ("Live training (trainer ranks, while pods run)", 0, live_panels()),
        ("Results (operator gauges, kept after the pods are gone)", 25, result_panels()),
        ("Cluster GPU demand (all experiments, for admins)", 44, demand_panels()),
        ("GPU pools (queues, efficiency, waste; for admins)", 53, pool_panels()),
    ]
    number = 0
    for title, y, panels in sections:
        number += 1
        board.with_row(_row(title, y).id(number))
        for panel in panels:
            number += 1
            board.with_panel(panel.id(number))
    return board


def dashboard() -> dict[str, Any]:
    """The dashboard's JSON model as a plain dict (what Grafana imports)."""
    data: dict[str, Any] = json.loads(json.dumps(build().build(), cls=JSONEncoder))
    return data
