"""A corpus of ScaleExperiment files a new user might write: invalid ones (each wrong in one
place) and boundary-valid ones (each at an edge the rules must let through). Each case is a
whole YAML document, so the YAML reading is part of what `scalelab validate` and `kubectl apply`
must agree on (go-yaml's `1e-3`, `yes`, `4.0`, `.nan`, a repeated key).

`field` is the path the CLI's message must name for an invalid case.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import yaml

HEX64 = "0123456789abcdef" * 4
RAW = "RAWVALUEMARKER"


@dataclass(frozen=True)
class Case:
    """One file of the corpus: its file name, YAML, verdict, the field an invalid one's message
    must name, and its metadata.name (what `kubectl apply` reports)."""

    name: str
    text: str
    valid: bool
    field: str = ""
    obj: str = ""
    #: Refused by the models (the CLI, and the operator on the experiment's Ready=False
    #: InvalidSpec condition) but accepted at apply time: no CRD rule can see it (the values of
    #: workload.parameters, which Kubernetes' CEL does not type; docs/design-changes.md).
    after_apply: bool = False


def document(name: str, path: str, raw: str | None, base: dict[str, Any] | None = None) -> str:
    """A ScaleExperiment named `name` with the YAML text `raw` at `path` (dot-separated), on top
    of `base` (a spec fragment); `raw=None` leaves the path out."""
    doc: dict[str, Any] = {
        "apiVersion": "scalelab.dev/v1alpha1",
        "kind": "ScaleExperiment",
        "metadata": {"name": name},
        "spec": yaml.safe_load(yaml.safe_dump(base or {})),
    }
    if raw is not None:
        *parents, last = path.split(".")
        node = doc
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = RAW
    text = yaml.safe_dump(doc, sort_keys=False, width=10_000)
    return text.replace(RAW, raw if raw is not None else "")


def _long_list(n: int) -> str:
    return "[" + ", ".join(str(i) for i in range(1, n + 1)) + "]"


def _map(n: int) -> str:
    return "{" + ", ".join(f"k{i}: v" for i in range(n)) + "}"


#: field path → YAML texts that must be refused there (one case each).
INVALID: dict[str, list[str]] = {
    "metadata.name": ["Bad_Name", "-lead", "trail-", "UPPER", "dots.in.name", "a" * 64, "'x y'"],
    "metadata.labels": [
        "{'bad key!': v}", "{k: 'bad value!'}", "{k: " + "a" * 64 + "}", "{a/b/c: v}",
        "{" + "a" * 254 + "/k: v}", "{example.com/: v}", "{k: -v}",
    ],
    "metadata.annotations": ["{'bad key!': v}", "{_k: v}"],
    "spec.workload.model": ["transformer", "1", "true"],
    "spec.workload.dataset": ["mnist", "'Digits'"],
    "spec.workload.datasetSize": [
        "0", "-5", "true", "'100'", "1.5", "2147483648", ".inf", ".nan", "[1]", "{a: 1}", "yes",
    ],
    "spec.workload.seed": ["-1", "1073741825", "false", "0.5", "'0'"],
    "spec.sweep.batchSizes": [
        "[]", "[0]", "[-4]", "[true]", "['8']", "[1.5]", "[4, 4]", "100", "[.inf]",
        "[2147483648]", _long_list(65), "[1, null]",
    ],
    "spec.sweep.gpus": ["[]", "[0]", "[1, 1]", "[false]", "1", _long_list(65)],
    "spec.sweep.repeats": ["0", "101", "true", "1.5", "'2'"],
    "spec.sweep.batchScope": ["local", "Global", "true"],
    "spec.training.optimizer": ["sdg", "1"],
    "spec.training.learningRate": [
        "0", "-0.1", ".inf", "-.inf", ".nan", "'0.1'", "true", "1e7", "1.0e400",
    ],
    "spec.training.referenceBatchSize": ["0", "1.5", "true"],
    "spec.training.lrScaling": ["quadratic"],
    "spec.training.warmupEpochs": ["-1", ".nan", "'1'"],
    "spec.training.maxEpochs": ["0", "1000001", "true", "2.5"],
    "spec.training.convergence.relativeTolerance": ["-0.1", ".nan", "'x'", "true"],
    "spec.training.targetLoss": ["0", "-1", ".inf", "true"],
    "spec.training.shuffle": ["1", "'true'"],
    "spec.resources.image": [
        "''", "UPPER/Case:tag", "'has space'", "repo:tag:extra", "a" * 600,
        "ghcr.io/x/y@sha256:abc", "' busybox'", "Example/trainer", "'busybox:'",
    ],
    "spec.resources.gpusPerProcess": ["-1", "9", "true"],
    "spec.resources.processesPerWorker": ["0", "65"],
    "spec.resources.cpu": ["'2 cores'", "'-1'", "''", "'1.5.2'", "2"],
    "spec.resources.memory": ["4GB", "lots", "4096"],
    "spec.resources.nodeSelector": [
        "{'bad key!': v}", "{k: 'bad value!'}", "{k: " + "a" * 64 + "}", "{k: 1}", _map(65),
    ],
    "spec.resources.tolerations": [
        "[{key: 'bad key!'}]", "[{operator: Exists, value: x}]",
        "[{key: k, tolerationSeconds: 5, effect: NoSchedule}]", "[{operator: Equal}]",
        "[{key: k, operator: Maybe}]", "[{key: k, effect: Never}]",
        "[{key: k, tolerationSeconds: -1, effect: NoExecute}]", "[{key: k, value: 'bad value!'}]",
        "[{key: k, extra: 1}]", "[{key: k, tolerationSeconds: 5}]",
    ],
    "spec.resources.priorityClassName": ["High_Priority", "UPPER", "-x", "a" * 254],
    "spec.resources.volumes": [
        "[{name: data}]", "[{name: data, emptyDir: {}, hostPath: {path: /x}}]",
        "[{name: data, emptyDir: null}]", "[{name: Data, emptyDir: {}}]",
        "[{name: ssh-auth, emptyDir: {}}]", "[{name: a, emptyDir: {}}, {name: a, emptyDir: {}}]",
        "[{name: a, hostPath: {path: relative}}]", "[{name: a, hostPath: {path: /a/../b}}]",
        "[{name: a, hostPath: {path: /a, type: Dir}}]", "[{name: a, persistentVolumeClaim: {}}]",
        "[{name: a, persistentVolumeClaim: {claimName: Bad_Claim}}]",
        "[{name: a, configMap: {name: c, defaultMode: 01000}}]",
        "[{name: a, secret: {secretName: s, items: [{key: k, path: /abs}]}}]",
        "[{name: a, secret: {secretName: s, items: [{key: ..k, path: p}]}}]",
        "[{name: a, emptyDir: {medium: Disk}}]", "[{name: a, emptyDir: {sizeLimit: lots}}]",
        "[{name: a, csi: {driver: 'bad driver'}}]", "[{name: a, nfs: {server: x, path: /}}]",
        "[{name: a, emptyDir: {}, extra: 1}]", "{name: a}",
    ],
    "spec.resources.volumeMounts": [
        "[{name: data, mountPath: /data}]", "[{name: data}]", "[{mountPath: /data}]",
    ],
    "spec.resources.env": [
        "[{name: 1A, value: x}]", "[{name: 'A B', value: x}]", "[{value: x}]",
        "[{name: A, value: 1}]",
        "[{name: A, value: x, valueFrom: {secretKeyRef: {name: s, key: k}}}]",
        "[{name: A, valueFrom: {}}]", "[{name: A, valueFrom: {secretKeyRef: {name: s}}}]",
        "[{name: A, valueFrom: {secretKeyRef: {name: s, key: k},"
        " configMapKeyRef: {name: c, key: k}}}]",
        "[{name: A, value: " + "x" * 32769 + "}]",
    ],
    "spec.resources.envFrom": [
        "[{}]", "[{secretRef: {name: s}, configMapRef: {name: c}}]",
        "[{prefix: 1x, secretRef: {name: s}}]", "[{secretRef: {name: Bad_Name}}]",
        "[{secretRef: {}}]",
    ],
    "spec.resources.imagePullSecrets": ["[regcred]", "[{name: Bad_Name}]", "[{}]", "regcred"],
    "spec.resources.serviceAccountName": ["Reader", "a" * 254, "'-sa'", "1"],
    "spec.execution.maxConcurrentTrials": ["0", "1001", "true"],
    "spec.execution.maxGPUs": ["0", "1048577", "'16'"],
    "spec.execution.backoffLimit": ["-1", "101"],
    "spec.execution.activeDeadlineSeconds": ["0", "2147483648"],
    "spec.execution.queueName": ["Team_Queue", "a" * 64, "'team queue'", "-q", "q."],
    "spec.training.learningrate": ["0.1"],
    "spec.sweep.gpu": ["[1]"],
    "spec.extra": ["1"],
}  # fmt: skip

#: Invalid because of how fields combine: (name suffix, spec fragment, field the CLI names).
WORKLOAD, SWEEP = "spec.workload.dataset", "spec.sweep"
PARAMETERS = "spec.workload.parameters"
CUSTOM = {"model": "custom", "dataset": "custom", "entryPoint": "team.models:build"}
ALL_64 = list(range(1, 65))
MOUNTS = "spec.resources.volumeMounts"
DATA_VOLUME = {"name": "data", "persistentVolumeClaim": {"claimName": "imagenet"}}
TOPOLOGY = "spec.execution.topology"
RACK = {"mode": "Required", "level": "topology.example.com/rack"}
INVALID_COMBINATIONS: list[tuple[str, dict[str, Any], str]] = [
    ("dataset-model", {"workload": {"model": "cnn", "dataset": "lab1-line"}}, WORKLOAD),
    ("mlp-images", {"workload": {"model": "mlp", "dataset": "synthetic-images"}}, WORKLOAD),
    ("not-divisible", {"sweep": {"batchSizes": [3], "gpus": [2]}}, SWEEP),
    ("smaller", {"sweep": {"batchSizes": [1], "gpus": [2]}}, SWEEP),
    ("over-budget", {"sweep": {"gpus": [32]}}, SWEEP),
    ("over-dataset", {"sweep": {"batchSizes": [200]}}, SWEEP),
    ("per-process-over",
     {"sweep": {"batchSizes": [60], "gpus": [2], "batchScope": "perProcess"}}, SWEEP),
    ("cpu-over-budget",
     {"sweep": {"gpus": [4]}, "resources": {"gpusPerProcess": 0}, "execution": {"maxGPUs": 2}},
     SWEEP),
    ("cap", {"sweep": {"batchSizes": list(range(1, 21)), "repeats": 51}}, SWEEP),
    ("custom-over-its-size",
     {"workload": {**CUSTOM, "datasetSize": 100}, "sweep": {"batchSizes": [200]}}, SWEEP),
    ("mount-relative",
     {"resources": {"volumes": [DATA_VOLUME],
                    "volumeMounts": [{"name": "data", "mountPath": "d"}]}}, MOUNTS),
    ("mount-twice",
     {"resources": {"volumes": [DATA_VOLUME], "volumeMounts": [
         {"name": "data", "mountPath": "/data"}, {"name": "data", "mountPath": "/data"}]}},
     MOUNTS),
    ("mount-mpi",
     {"resources": {"volumes": [DATA_VOLUME],
                    "volumeMounts": [{"name": "data", "mountPath": "/etc/mpi"}]}}, MOUNTS),
    ("mount-backstep",
     {"resources": {"volumes": [DATA_VOLUME], "volumeMounts": [
         {"name": "data", "mountPath": "/data", "subPath": "a/../.."}]}}, MOUNTS),
    ("mount-undeclared",
     {"resources": {"volumes": [DATA_VOLUME],
                    "volumeMounts": [{"name": "dta", "mountPath": "/data"}]}}, MOUNTS),
    ("cap-huge",
     {"workload": {"datasetSize": 10000}, "execution": {"maxGPUs": 64},
      "sweep": {"batchSizes": ALL_64, "gpus": ALL_64, "repeats": 100}}, SWEEP),
    ("topology-no-queue", {"execution": {"topology": RACK}}, TOPOLOGY),
    ("topology-level-long",
     {"execution": {"queueName": "team", "topology": {**RACK, "level": "a" * 64}}},
     f"{TOPOLOGY}.level"),
    ("topology-level-key",
     {"execution": {"queueName": "team", "topology": {**RACK, "level": "a/b/c"}}},
     f"{TOPOLOGY}.level"),
    ("topology-mode-case",
     {"execution": {"queueName": "team", "topology": {**RACK, "mode": "required"}}},
     f"{TOPOLOGY}.mode"),
    ("topology-no-mode",
     {"execution": {"queueName": "team", "topology": {"level": "kubernetes.io/hostname"}}},
     f"{TOPOLOGY}.mode"),
]  # fmt: skip

#: Refused by the models only, after `kubectl apply` (Case.after_apply): custom-workload
#: parameters whose name is not an identifier or whose value is not a scalar or a list of them.
AFTER_APPLY: list[tuple[str, dict[str, Any]]] = [
    (f"parameters-{suffix}", {"workload": {**CUSTOM, "parameters": parameters}})
    for suffix, parameters in (
        ("digit", {"1x": 1}), ("dash", {"a-b": 1}), ("dot", {"a.b": 1}), ("long", {"a" * 64: 1}),
        ("space", {"a b": 1}), ("map", {"k": {"a": 1}}), ("nested", {"k": [[1]]}),
        ("string", {"k": "x" * 1025}), ("list", {"k": list(range(257))}),
        ("list-of-maps", {"k": [{"a": 1}]}), ("list-string", {"k": ["x" * 1025]}),
        ("list-null", {"k": [1, None]}),
    )
]  # fmt: skip

#: Whole documents wrong at the object level: (name suffix, text, field).
INVALID_DOCUMENTS: list[tuple[str, str, str]] = [
    ("kind", "apiVersion: scalelab.dev/v1alpha1\nkind: ScaleExperimnt\nmetadata: {name: {name}}\n",
     "kind"),
]  # fmt: skip

#: Whole documents valid at the YAML level's edge: a repeated key (kubectl sends the last value;
#: the CLI does the same and warns).
VALID_DOCUMENTS: list[str] = [
    "apiVersion: scalelab.dev/v1alpha1\nkind: ScaleExperiment\nmetadata: {name: {name}}\n"
    "spec:\n  sweep: {batchSizes: [3]}\n  sweep: {gpus: [1]}\n",
]

#: field path → YAML texts that must be accepted there (each at an edge of a rule).
VALID: dict[str, list[str]] = {
    "metadata.labels": [
        "{example.com/key: v, k: ''}", "{k: " + "a" * 63 + "}",
        "{" + "a" * 253 + "/" + "b" * 63 + ": v}", "{A_b.c-D: x_Y.z-9}",
    ],
    "metadata.annotations": ["{example.com/any: 'free text, even spaces'}"],
    "spec.workload.datasetSize": ["2147483647", "1e3", "null"],
    "spec.workload.seed": ["1073741824", "0x10"],
    "spec.sweep.batchSizes": ["[100, 50.0]"],
    "spec.sweep.repeats": ["100"],
    "spec.training.learningRate": ["1e-3", "1000000", "1"],
    "spec.training.maxEpochs": ["4.0", "1000000"],
    "spec.training.shuffle": ["yes", "true"],
    "spec.training.convergence.relativeTolerance": ["0"],
    "spec.training.targetLoss": ["null", "1.0e-9"],
    "spec.resources.image": [
        "busybox", "localhost:5000/scalelab/trainer:0.1", f"ghcr.io/a/b@sha256:{HEX64}",
        "registry.example.com:443/team/trainer_v2:v1.2.3-rc.1", "null", "a__b/c-d---e.f:Latest_1",
    ],
    "spec.resources.priorityClassName": ["a.b-c", "a" * 253],
    "spec.resources.nodeSelector": ["{kubernetes.io/arch: amd64, x: ''}", _map(64)],
    "spec.resources.tolerations": [
        "[{operator: Exists}]", "[{key: nvidia.com/gpu, operator: Exists, effect: NoSchedule}]",
        "[{key: k, value: v, effect: NoExecute, tolerationSeconds: 0}]",
        "[{key: k, operator: Exists, value: ''}]",
    ],
    "spec.resources.cpu": ["'500m'", "'0.5'"],
    "spec.resources.memory": ["512Mi", "'1.5G'"],
    "spec.resources.volumes": [
        "[]", "[{name: data, persistentVolumeClaim: {claimName: imagenet, readOnly: true}}]",
        "[{name: cache, emptyDir: {medium: Memory, sizeLimit: 1Gi}}, {name: tmp, emptyDir: {}}]",
        "[{name: c, configMap: {name: settings, items: [{key: .a-b_c, path: x/y..json,"
        " mode: 0644}], defaultMode: 0777, optional: true}}]",
        "[{name: s, secret: {secretName: creds, defaultMode: 0}}]",
        "[{name: b, csi: {driver: S3.csi.example.com, readOnly: true, fsType: fuse,"
        " volumeAttributes: {bucketName: data, a.b/c: ''}, nodePublishSecretRef: {name: creds}}}]",
        "[{name: h, hostPath: {path: /mnt/data/..cache, type: Directory}}]",
        "[{name: one, emptyDir: {}, secret: null, hostPath: null}]",
        "[{name: " + "a" * 63 + ", emptyDir: {}}]",
    ],
    "spec.resources.env": [
        "[{name: A, value: ''}, {name: B}, {name: _c.d-E, value: 'with spaces = and :'}]",
        "[{name: T, value: '', valueFrom: {secretKeyRef: {name: s, key: k, optional: true}}}]",
        "[{name: C, valueFrom: {configMapKeyRef: {name: c, key: k}}}, {name: C, value: again}]",
        "[{name: A, value: " + "x" * 32768 + "}]",
    ],
    "spec.resources.envFrom": [
        "[{prefix: S3_, secretRef: {name: s3-credentials}},"
        " {configMapRef: {name: c, optional: true}}]",
    ],
    "spec.resources.imagePullSecrets": ["[{name: regcred}, {name: a.b}]", "[]"],
    "spec.resources.serviceAccountName": ["dataset-reader", "null", "a" * 253],
    "spec.execution.maxGPUs": ["1048576"],
    "spec.execution.queueName": ["team-a.gpu", "q" * 63],
    "spec": ["null", "{}"],
}  # fmt: skip

VALID_COMBINATIONS: list[tuple[str, dict[str, Any]]] = [
    ("at-cap", {"sweep": {"batchSizes": list(range(1, 11)), "repeats": 100}}),
    ("one-runnable", {"sweep": {"batchSizes": [3, 4], "gpus": [2, 64]}}),
    ("cpu-budget",
     {"sweep": {"batchSizes": [96], "gpus": [16]}, "resources": {"gpusPerProcess": 0}}),
    ("per-process", {"sweep": {"batchSizes": [50], "gpus": [2], "batchScope": "perProcess"}}),
    ("batch-equals-data", {"workload": {"datasetSize": 1}, "sweep": {"batchSizes": [1]}}),
    ("many-batches", {"workload": {"datasetSize": 10000}, "sweep": {"batchSizes": ALL_64}}),
    ("mlp-regression", {"workload": {"model": "mlp", "dataset": "regression"}}),
    ("name", {}),
    ("custom-all-data", {"workload": CUSTOM, "sweep": {"batchSizes": [200]}}),
    ("data-mounted", {"resources": {
        "volumes": [DATA_VOLUME, {"name": "scratch", "emptyDir": {}}],
        "volumeMounts": [{"name": "data", "mountPath": "/data", "readOnly": True},
                         {"name": "data", "mountPath": "/labels", "subPath": "labels/v2"},
                         {"name": "scratch", "mountPath": "/home/mpiuser/.cache"}],
        "envFrom": [{"secretRef": {"name": "s3-credentials"}}],
        "imagePullSecrets": [{"name": "regcred"}]}}),
    ("topology", {"execution": {"queueName": "team", "topology": RACK}}),
    ("topology-preferred-63", {"execution": {"queueName": "team", "topology": {
        "mode": "Preferred", "level": "t.example/" + "a" * 53}}}),
    ("parameters", {"workload": {**CUSTOM, "parameters": {
        "a" * 63: "x" * 1024, "_k": [1, 2.5, "s", True], "n": -1e300, "off": False, "e": [],
        "many": list(range(256)), "Mixed_Case9": "", "big": 9007199254740993}}}),
]  # fmt: skip


def _slug(path: str) -> str:
    return path.rsplit(".", maxsplit=1)[-1].lower()


def cases() -> list[Case]:
    """The whole corpus, names unique (the names of valid cases are valid object names)."""
    out: list[Case] = []
    for path, values in INVALID.items():
        for i, raw in enumerate(values):
            name = f"bad-{len(out):03d}"
            obj = name
            if path == "metadata.name":
                text = document(name, "spec", None).replace(f"name: {name}", f"name: {raw}")
                obj = raw.strip("'")
            else:
                text = document(name, path, raw)
            field = "spec" if path in ("spec.extra",) else path
            out.append(Case(f"{name}-{_slug(path)}-{i}", text, False, field, obj))
    for suffix, spec, field in INVALID_COMBINATIONS:
        name = f"bad-{len(out):03d}"
        text = document(name, "spec", None, spec)
        out.append(Case(f"{name}-{suffix}", text, False, field, name))
    for suffix, spec in AFTER_APPLY:
        name = f"bad-{len(out):03d}"
        text = document(name, "spec", None, spec)
        out.append(Case(f"{name}-{suffix}", text, False, PARAMETERS, name, after_apply=True))
    for suffix, text, field in INVALID_DOCUMENTS:
        name = f"bad-{len(out):03d}"
        out.append(Case(f"{name}-{suffix}", text.replace("{name}", name), False, field, name))
    for path, values in VALID.items():
        for raw in values:
            name = f"ok-{len(out):03d}"
            out.append(Case(name, document(name, path, raw), True, obj=name))
    for text in VALID_DOCUMENTS:
        name = f"ok-{len(out):03d}"
        out.append(Case(name, text.replace("{name}", name), True, obj=name))
    for suffix, spec in VALID_COMBINATIONS:
        name = f"ok-{len(out):03d}-{suffix}"
        out.append(Case(name, document(name, "spec", None, spec), True, obj=name))
    for name in ("a" * 63, "0a"):
        out.append(Case(name, document(name, "spec", None), True, obj=name))
    return out
