"""scalelab's Prometheus alert and recording rules, as a rules file's {"groups": [...]} with
adjustable windows.

Plain Prometheus rules (not Grafana alerting): `files.py` writes them as rules/scalelab.rules.yaml
and as the PrometheusRule of the monitoring Component; tests/observability renders them with short
windows and runs them in a real Prometheus.
"""

from __future__ import annotations

from typing import Any

#: Defaults of the rules' time windows (Prometheus durations). Override by re-running `rule_groups`
#: with other values, or patch the PrometheusRule in an overlay (docs/monitoring.md).
DEFAULT_WINDOWS = {
    # No training samples from a trial (or a rank that cannot be scraped) for this long.
    "stall_window": "10m",
    # A trial that diverged within this window raises the alert once, then it resolves.
    "diverged_window": "30m",
    # Reconcile errors are counted over this window ...
    "errors_window": "5m",
    # ... and must keep occurring for this long.
    "errors_for": "10m",
    # GPUs admitted (MPIJob created) but not running for this long.
    "pending_for": "15m",
    # No operator replica, or more than one, holding the leader Lease for this long (a failover
    # takes up to the Lease's duration, 10 s by default, and a scrape interval or two).
    "leader_for": "2m",
    # A running trial's GPUs below IDLE_PERCENT utilisation (dcgm-exporter) for this long.
    "idle_for": "10m",
}
#: Mean utilisation (percent) of a trial's GPUs under which they count as idle.
IDLE_PERCENT = 10


def rule_groups(**windows: str) -> dict[str, Any]:
    """The alert rules as a Prometheus rules file ({"groups": [...]}); windows override defaults."""
    unknown = set(windows) - set(DEFAULT_WINDOWS)
    if unknown:
        raise ValueError(f"unknown windows {sorted(unknown)}; known: {sorted(DEFAULT_WINDOWS)}")
    w = DEFAULT_WINDOWS | windows
    return {
        "groups": [
            {"name": "scalelab.trials", "rules": _trial_rules(w)},
            {"name": "scalelab.operator", "rules": _operator_rules(w)},
            {"name": "scalelab.usage", "rules": _usage_rules()},
        ]
    }


#: The recorded series of device time used per hour (docs/monitoring.md, "Device time").
DEVICE_SECONDS_1H = "namespace_device:scalelab_operator_device_seconds:increase1h"


def _usage_rules() -> list[dict[str, Any]]:
    """Device time (GPU-seconds on GPUs) the trials' runs used in each hour, preempted and failed
    runs included, by namespace and device: summed over the operator replicas' series (the
    leader counts each run once; a restart's reset is what `increase` handles), kept after the
    experiments are deleted. A month's total: sum_over_time(RULE[30d:1h]), one sample an hour."""
    expr = (
        "sum by (namespace, device) (\n  increase(scalelab_operator_device_seconds_total[1h])\n)\n"
    )
    return [{"record": DEVICE_SECONDS_1H, "expr": expr}]


def _idle_gpus(w: dict[str, str]) -> dict[str, Any]:
    """A trial whose GPUs stay idle: dcgm-exporter's utilisation of the GPUs of its pods (their
    pod labels kept or renamed exported_*), joined to the trial through the PodMonitor's labels
    on `up`, which stay while a stopped rank cannot be scraped."""
    expr = (
        "avg by (namespace, experiment, trial) (\n"
        "  label_replace(label_replace(\n"
        "    label_replace(label_replace(DCGM_FI_DEV_GPU_UTIL,\n"
        '      "pod", "$1", "exported_pod", "(.+)"),\n'
        '      "namespace", "$1", "exported_namespace", "(.+)")\n'
        "    * on (namespace, pod) group_left (scalelab_dev_experiment, scalelab_dev_trial)\n"
        "    group by (namespace, pod, scalelab_dev_experiment, scalelab_dev_trial) (\n"
        '      up{scalelab_dev_trial!=""}),\n'
        '    "experiment", "$1", "scalelab_dev_experiment", "(.+)"),\n'
        '    "trial", "$1", "scalelab_dev_trial", "(.+)")\n'
        f") < {IDLE_PERCENT}\n"
    )
    return {
        "alert": "ScalelabTrialGPUsIdle",
        "expr": expr,
        "for": w["idle_for"],
        "labels": {"severity": "warning"},
        "annotations": {
            "summary": "The GPUs of trial {{ $labels.namespace }}/{{ $labels.trial }} have "
            f"been under {IDLE_PERCENT}% utilisation for {w['idle_for']}.",
            "description": "dcgm-exporter reads {{ $value | humanize }}% mean utilisation of "
            "the GPUs held by the pods of trial {{ $labels.trial }} (experiment "
            "{{ $labels.experiment }}). They are allocated but do no work: the input "
            "pipeline starves them, the batch is too small for the GPU count, or a rank "
            "is stuck. The report's input-time columns and the trial's logs say which.",
        },
    }


def _trial_rules(w: dict[str, str]) -> list[dict[str, Any]]:
    """A trial that stopped making progress; trials that diverged; trials whose GPUs idle."""
    stalled = (
        "(\n"
        "  sum by (namespace, experiment, trial) (\n"
        f"    increase(scalelab_trainer_samples_total[{w['stall_window']}])\n"
        "  ) == 0\n"
        ")\n"
        "or on (namespace, experiment, trial)\n"
        "(\n"
        "  min by (namespace, experiment, trial) (\n"
        "    label_replace(label_replace(\n"
        f'      max_over_time(up{{scalelab_dev_trial!=""}}[{w["stall_window"]}]),\n'
        '      "experiment", "$1", "scalelab_dev_experiment", "(.+)"),\n'
        '      "trial", "$1", "scalelab_dev_trial", "(.+)")\n'
        "  ) == 0\n"
        ")\n"
    )
    diverged = (
        'scalelab_operator_trials{phase="Diverged"}\n'
        f'  - min_over_time(scalelab_operator_trials{{phase="Diverged"}}[{w["diverged_window"]}])\n'
        "> 0\n"
    )
    return [
        {
            "alert": "ScalelabTrialStalled",
            "expr": stalled,
            "labels": {"severity": "warning"},
            "annotations": {
                "summary": "Trial {{ $labels.namespace }}/{{ $labels.trial }} "
                f"made no training progress for {w['stall_window']}.",
                "description": "No training samples counted by any rank of trial "
                "{{ $labels.trial }} (experiment {{ $labels.experiment }}), or one "
                f"of its ranks could not be scraped, for {w['stall_window']}. One "
                "stopped or hung rank blocks every other rank in the allreduce. "
                "Look at the worker pods' logs and events; the trial's "
                "activeDeadlineSeconds ends it eventually.",
            },
        },
        {
            "alert": "ScalelabTrialDiverged",
            "expr": diverged,
            "labels": {"severity": "info"},
            "annotations": {
                "summary": "{{ $value }} trial(s) of {{ $labels.namespace }}/"
                "{{ $labels.experiment }} diverged in the last "
                f"{w['diverged_window']}.",
                "description": "The loss became non-finite or grew past the "
                "divergence factor. A diverged trial is a measured outcome (the "
                "learning rate is above the stability limit at that batch size), "
                "not a failure; check the learning-rate scaling rule and warmup.",
            },
        },
        _idle_gpus(w),
    ]


def _operator_rules(w: dict[str, str]) -> list[dict[str, Any]]:
    """The operator failing on API calls; GPUs admitted but not running; no leader, or two."""
    errors = (
        "sum by (namespace, handler) (\n"
        f"  rate(scalelab_operator_reconcile_errors_total[{w['errors_window']}])\n"
        ") > 0\n"
    )
    # device="gpu": the processes of CPU-only trials (gpusPerProcess 0) wait for no GPU.
    pending = (
        "(\n"
        "  sum by (namespace, experiment) (\n"
        '    scalelab_operator_gpus{device="gpu", state="requested"})\n'
        "  - sum by (namespace, experiment) (\n"
        '    scalelab_operator_gpus{device="gpu", state="running"})\n'
        ") > 0\n"
    )
    leaders = "sum(scalelab_operator_leader) != 1\n"
    return [
        {
            "alert": "ScalelabOperatorReconcileErrors",
            "expr": errors,
            "for": w["errors_for"],
            "labels": {"severity": "warning"},
            "annotations": {
                "summary": "The scalelab operator's {{ $labels.handler }} handler "
                f"has kept failing on API calls for {w['errors_for']}.",
                "description": "Kubernetes API calls of the operator keep raising "
                "(about {{ $value | humanize }}/s). Experiments are not admitted "
                "or their status is stale. Check the operator's log, its RBAC and "
                "whether the MPIJob CRD (kubeflow.org/v2beta1) is installed.",
            },
        },
        {
            "alert": "ScalelabGPUDemandPending",
            "expr": pending,
            "for": w["pending_for"],
            "labels": {"severity": "info"},
            "annotations": {
                "summary": "{{ $value }} GPU(s) of {{ $labels.namespace }}/"
                "{{ $labels.experiment }} admitted but not running for "
                f"{w['pending_for']}.",
                "description": "MPIJobs were created for these GPUs but are not "
                "running: the cluster lacks free nvidia.com/gpu, a queue (Kueue) "
                "has not admitted them, or images are still pulling. Size the GPU "
                "pool or lower spec.execution.maxGPUs.",
            },
        },
        {
            "alert": "ScalelabOperatorLeader",
            "expr": leaders,
            "for": w["leader_for"],
            "labels": {"severity": "critical"},
            "annotations": {
                "summary": "{{ $value }} scalelab operator replicas hold the leader Lease "
                "(one should).",
                "description": "With none, nothing admits trials or updates experiments: "
                "the replicas are down or cannot reach the API server (check the "
                "operator Deployment's pods and the scalelab-operator Lease in its "
                "namespace). With two, both act at once, which the Lease should "
                "prevent: check the replicas' clocks and logs (docs/operator-ha.md).",
            },
        },
    ]
