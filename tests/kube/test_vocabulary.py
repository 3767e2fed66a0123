"""The names the trainer and the operator must agree on, although the trainer may not import
scalelab: the resource its rank 0 patches, and the labels and keys of the results ConfigMap it
stores for `scalelab report`. Each side keeps its own copy; these tests hold the copies equal."""

from __future__ import annotations

import pytest

from scalelab import api
from scalelab.kube import mpijob, resources
from scalelab.kube import results as cluster
from scalelab_trainer import report_status, store_results

pytestmark = pytest.mark.unit


def test_the_trainer_patches_the_resource_the_operator_serves_and_watches() -> None:
    trainer = (report_status.GROUP, report_status.VERSION, report_status.PLURAL)
    assert trainer == (api.GROUP, api.VERSION, resources.TRIALS)
    assert trainer == resources.TRIAL_RESOURCE


def test_the_results_configmap_is_labelled_as_the_operator_labels_the_trial() -> None:
    assert store_results.LABEL_EXPERIMENT == mpijob.LABEL_EXPERIMENT
    assert store_results.LABEL_TRIAL == mpijob.LABEL_TRIAL


def test_scalelab_report_reads_the_configmap_the_trainer_stores() -> None:
    trainer = (
        store_results.LABEL_COMPONENT,
        store_results.COMPONENT,
        store_results.EVENTS_KEY,
        store_results.DATA_KEY,
    )
    assert trainer == (
        cluster.LABEL_COMPONENT,
        cluster.COMPONENT,
        cluster.EVENTS_KEY,
        cluster.DATA_KEY,
    )
