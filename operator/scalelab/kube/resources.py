"""The Kubernetes resources the operator watches, reads and writes, each named once: API group,
version and plural.

The kube modules that call the API or watch a resource (handlers.py, apply.py, prerequisites.py,
results.py, crd.py, observed.py, mpijob.py) take the names from here; scalelab's own group and
version are the API's (the scalelab.api package). The trainer keeps its own copy of what it patches
(trainer/scalelab_trainer/report_status.py: it may not import scalelab), and
tests/kube/test_vocabulary.py checks that the two agree.
"""

from __future__ import annotations

from scalelab.api import GROUP, VERSION

#: scalelab's own resources, in GROUP/VERSION (scalelab.dev/v1alpha1).
EXPERIMENTS = "scaleexperiments"
TRIALS = "scaletrials"

#: The Kubeflow MPI operator's MPIJob (one per trial).
MPIJOB_GROUP, MPIJOB_VERSION, MPIJOBS = "kubeflow.org", "v2beta1", "mpijobs"
MPIJOB_API_VERSION = f"{MPIJOB_GROUP}/{MPIJOB_VERSION}"

#: Kueue's Workload API (kueue.x-k8s.io/v1beta2, served since Kueue 0.15, stored since 0.16).
KUEUE_GROUP, KUEUE_VERSION, WORKLOADS = "kueue.x-k8s.io", "v1beta2", "workloads"

#: (group, version, plural) of each resource kopf watches (kube/handlers.py).
Resource = tuple[str, str, str]
EXPERIMENT_RESOURCE: Resource = (GROUP, VERSION, EXPERIMENTS)
TRIAL_RESOURCE: Resource = (GROUP, VERSION, TRIALS)
MPIJOB_RESOURCE: Resource = (MPIJOB_GROUP, MPIJOB_VERSION, MPIJOBS)
WORKLOAD_RESOURCE: Resource = (KUEUE_GROUP, KUEUE_VERSION, WORKLOADS)
