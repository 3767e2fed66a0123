"""What a trial's pods may reach besides the trainer image: volumes, environment, pull secrets.

The Kubernetes types of `spec.resources.volumes`, `volumeMounts`, `env`, `envFrom` and
`imagePullSecrets`, cut to the sources a training job needs (a PersistentVolumeClaim, a
ConfigMap, a Secret, an emptyDir, a CSI volume, a hostPath) and checked as the API server checks
a pod (names, paths, exactly one source), so these fields of a spec `scalelab validate` accepts
do not fail at pod creation, far from the user. Every field has its Kubernetes name, so a
model's wire form (`model_dump(by_alias=True, mode="json", exclude_none=True)`) is the
Kubernetes object; `Resources.pod_fields` and `Resources.container_fields` give the pods' share.
The operator never reads the Secrets and ConfigMaps named here; the kubelet does.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

from pydantic import Field

from scalelab.api.base import SpecModel
from scalelab.rules import (
    ABSOLUTE_PATH,
    CONFIG_KEY,
    CSI_DRIVER,
    DNS_LABEL,
    DNS_SUBDOMAIN,
    ENV_VAR_NAME,
    MEMORY_QUANTITY,
    RELATIVE_PATH,
    Rule,
    at,
    count_set,
    has,
    unique_by,
    var,
)

#: Most volumes, mounts, env entries, envFrom sources or attributes in one list or map.
MAX_ITEMS = 64
#: Most keys a ConfigMap or Secret volume projects one by one: each item's path rule is checked
#: for every item of every volume, and the API server's CEL cost budget (per CRD) refused 64 × 64.
MAX_KEY_ITEMS = 16
#: Most characters of an environment variable's value and of a CSI volume attribute's value.
MAX_ENV_VALUE, MAX_ATTRIBUTE_VALUE = 32_768, 4096
#: The file mode bits a volume file may get: 0 to 0777 (octal), i.e. 0 to 511.
MAX_MODE = 0o777

ObjectName = Annotated[str, DNS_SUBDOMAIN]
FileMode = Annotated[int, Field(ge=0, le=MAX_MODE)]


class LocalObjectReference(SpecModel):
    """An object in the trial's namespace, by name (a Secret, a ConfigMap)."""

    name: ObjectName = Field(..., description="Object name (a DNS subdomain). Required.")


class KeyToPath(SpecModel):
    """One key of a ConfigMap or Secret projected as a file of the volume."""

    key: Annotated[str, CONFIG_KEY] = Field(..., description="The key. Required.")
    path: Annotated[str, RELATIVE_PATH] = Field(
        ..., description="File path inside the volume: relative, no '..'. Required."
    )
    mode: FileMode | None = Field(
        default=None,
        description="File mode bits, 0 to 0777 (octal; 511 decimal). Default: null (the "
        "volume's defaultMode).",
    )


class PersistentVolumeClaimVolumeSource(SpecModel):
    """A PersistentVolumeClaim in the trial's namespace (e.g. a shared dataset)."""

    claim_name: ObjectName = Field(
        ..., description="Name of the PersistentVolumeClaim (a DNS subdomain). Required."
    )
    read_only: bool = Field(default=False, description="Mount the claim read-only. Default: false.")


class ConfigMapVolumeSource(SpecModel):
    """A ConfigMap's keys as files."""

    name: ObjectName = Field(..., description="Name of the ConfigMap. Required.")
    items: list[KeyToPath] = Field(
        default_factory=list,
        max_length=MAX_KEY_ITEMS,
        description="Keys to project, and where; empty = every key as a file named after it. "
        "Default: [].",
    )
    default_mode: FileMode | None = Field(
        default=None,
        description="Mode bits of the files, 0 to 0777 (octal). Default: null (0644).",
    )
    optional: bool | None = Field(
        default=None,
        description="true: the pod starts without the ConfigMap. Default: null (required).",
    )


class SecretVolumeSource(SpecModel):
    """A Secret's keys as files (e.g. a credentials file)."""

    secret_name: ObjectName = Field(..., description="Name of the Secret. Required.")
    items: list[KeyToPath] = Field(
        default_factory=list,
        max_length=MAX_KEY_ITEMS,
        description="Keys to project, and where; empty = every key as a file named after it. "
        "Default: [].",
    )
    default_mode: FileMode | None = Field(
        default=None,
        description="Mode bits of the files, 0 to 0777 (octal). Default: null (0644).",
    )
    optional: bool | None = Field(
        default=None,
        description="true: the pod starts without the Secret. Default: null (required).",
    )


class StorageMedium(StrEnum):
    """Backing of an emptyDir besides the node's disk."""

    MEMORY = "Memory"


class EmptyDirVolumeSource(SpecModel):
    """Scratch space that lives as long as the pod (e.g. a dataset cache)."""

    medium: StorageMedium | None = Field(
        default=None,
        description="Memory: a tmpfs, counted against the worker's memory. Default: null "
        "(the node's disk).",
    )
    size_limit: Annotated[str, MEMORY_QUANTITY] | None = Field(
        default=None,
        description="Most bytes the volume may hold, a Kubernetes quantity. Default: null "
        "(no limit).",
    )


class CSIVolumeSource(SpecModel):
    """A volume of a CSI driver, inline (e.g. an object-storage bucket mounted by its driver)."""

    driver: Annotated[str, CSI_DRIVER] = Field(
        ..., description="The CSI driver's name (e.g. ebs.csi.aws.com). Required."
    )
    read_only: bool | None = Field(
        default=None, description="Mount read-only. Default: null (read-write)."
    )
    fs_type: str | None = Field(
        default=None,
        max_length=63,
        description="Filesystem type, e.g. ext4; passed to the driver. Default: null (the "
        "driver's).",
    )
    volume_attributes: dict[
        Annotated[str, Field(max_length=253)], Annotated[str, Field(max_length=MAX_ATTRIBUTE_VALUE)]
    ] = Field(
        default_factory=dict,
        max_length=MAX_ITEMS,
        description="Driver-specific attributes (e.g. a bucket name). Default: {}.",
    )
    node_publish_secret_ref: LocalObjectReference | None = Field(
        default=None,
        description="Secret with what the driver needs to mount (e.g. credentials). Default: null.",
    )


class HostPathType(StrEnum):
    """What must be at a hostPath before the pod starts."""

    DIRECTORY_OR_CREATE = "DirectoryOrCreate"
    DIRECTORY = "Directory"
    FILE_OR_CREATE = "FileOrCreate"
    FILE = "File"
    SOCKET = "Socket"
    CHAR_DEVICE = "CharDevice"
    BLOCK_DEVICE = "BlockDevice"


class HostPathVolumeSource(SpecModel):
    """A file or directory of the node (e.g. a local dataset copy on every GPU node)."""

    path: Annotated[str, ABSOLUTE_PATH] = Field(
        ..., description="Path on the node: absolute, no '..'. Required."
    )
    type: HostPathType | None = Field(
        default=None,
        description="Directory, File, DirectoryOrCreate, ...: checked before the pod starts. "
        "Default: null (no check).",
    )


#: The sources a volume may have, by wire name: exactly one per volume.
VOLUME_SOURCES = ("persistentVolumeClaim", "configMap", "secret", "emptyDir", "csi", "hostPath")
#: Volume names and mount paths the MPI operator gives its own volumes in every trial pod (the
#: hostfile; the SSH keys at the trainer image's ~/.ssh): a second one would fail pod creation.
RESERVED_VOLUME_NAMES = ("mpi-job-config", "ssh-auth")
RESERVED_MOUNT_PATHS = ("/etc/mpi", "/home/mpiuser/.ssh")


class Volume(SpecModel):
    """A volume of every trial pod: a name and exactly one source."""

    rules = (
        Rule(
            count_set(VOLUME_SOURCES).eq(1),
            "must have exactly one source: persistentVolumeClaim, configMap, secret, emptyDir, "
            "csi or hostPath",
            got=count_set(VOLUME_SOURCES),
        ),
    )

    name: Annotated[str, DNS_LABEL] = Field(
        ...,
        description="Volume name (a DNS label), what volumeMounts refer to; not mpi-job-config "
        "or ssh-auth (the MPI operator's). Required.",
    )
    persistent_volume_claim: PersistentVolumeClaimVolumeSource | None = Field(
        default=None, description="A PersistentVolumeClaim. Default: null."
    )
    config_map: ConfigMapVolumeSource | None = Field(
        default=None, description="A ConfigMap's keys as files. Default: null."
    )
    secret: SecretVolumeSource | None = Field(
        default=None, description="A Secret's keys as files. Default: null."
    )
    empty_dir: EmptyDirVolumeSource | None = Field(
        default=None, description="Scratch space for the pod's life. Default: null."
    )
    csi: CSIVolumeSource | None = Field(
        default=None, description="An inline CSI volume. Default: null."
    )
    host_path: HostPathVolumeSource | None = Field(
        default=None,
        description="A path on the node; refused in namespaces that enforce the baseline or "
        "restricted Pod Security level. Default: null.",
    )


class VolumeMount(SpecModel):
    """Where a volume appears in the trainer container."""

    name: Annotated[str, DNS_LABEL] = Field(
        ..., description="Name of a volume in resources.volumes. Required."
    )
    mount_path: Annotated[str, ABSOLUTE_PATH] = Field(
        ...,
        description="Where in the container: absolute, no '..', unique among the mounts, not "
        "/etc/mpi or /home/mpiuser/.ssh (the MPI operator's). Required.",
    )
    read_only: bool = Field(default=False, description="Mount read-only. Default: false.")
    sub_path: Annotated[str, RELATIVE_PATH] | None = Field(
        default=None,
        description="A path inside the volume to mount instead of its root: relative, no '..'. "
        "Default: null (the root).",
    )


class SecretKeySelector(SpecModel):
    """One key of a Secret."""

    name: ObjectName = Field(..., description="Name of the Secret. Required.")
    key: Annotated[str, CONFIG_KEY] = Field(..., description="The key. Required.")
    optional: bool | None = Field(
        default=None,
        description="true: the variable is left unset when the Secret or key is missing. "
        "Default: null (required).",
    )


class ConfigMapKeySelector(SpecModel):
    """One key of a ConfigMap."""

    name: ObjectName = Field(..., description="Name of the ConfigMap. Required.")
    key: Annotated[str, CONFIG_KEY] = Field(..., description="The key. Required.")
    optional: bool | None = Field(
        default=None,
        description="true: the variable is left unset when the ConfigMap or key is missing. "
        "Default: null (required).",
    )


class EnvVarSource(SpecModel):
    """Where a variable's value comes from: exactly one of a Secret's key or a ConfigMap's."""

    rules = (
        Rule(
            count_set(("secretKeyRef", "configMapKeyRef")).eq(1),
            "must have exactly one of secretKeyRef and configMapKeyRef",
        ),
    )

    secret_key_ref: SecretKeySelector | None = Field(
        default=None, description="A Secret's key (e.g. an access key). Default: null."
    )
    config_map_key_ref: ConfigMapKeySelector | None = Field(
        default=None, description="A ConfigMap's key. Default: null."
    )


class EnvVar(SpecModel):
    """An environment variable of the trainer: a value, or one read from a Secret or ConfigMap."""

    rules = (
        Rule(
            ~(has("value") & (at("value").size() > 0) & has("valueFrom")),
            "valueFrom cannot go with a non-empty value",
            "valueFrom",
        ),
    )

    name: Annotated[str, ENV_VAR_NAME] = Field(..., description="Variable name. Required.")
    value: str | None = Field(
        default=None,
        max_length=MAX_ENV_VALUE,
        description='The value (at most 32768 characters). Default: null ("" unless valueFrom).',
    )
    value_from: EnvVarSource | None = Field(
        default=None,
        description="Read the value from a Secret or ConfigMap key instead (on a cluster). "
        "Default: null.",
    )


class ConfigMapEnvSource(SpecModel):
    """Every key of a ConfigMap as a variable."""

    name: ObjectName = Field(..., description="Name of the ConfigMap. Required.")
    optional: bool | None = Field(
        default=None,
        description="true: the pod starts without the ConfigMap. Default: null (required).",
    )


class SecretEnvSource(SpecModel):
    """Every key of a Secret as a variable (e.g. object-storage credentials)."""

    name: ObjectName = Field(..., description="Name of the Secret. Required.")
    optional: bool | None = Field(
        default=None,
        description="true: the pod starts without the Secret. Default: null (required).",
    )


class EnvFromSource(SpecModel):
    """A whole ConfigMap or Secret as environment variables: exactly one of the two."""

    rules = (
        Rule(
            count_set(("configMapRef", "secretRef")).eq(1),
            "must have exactly one of configMapRef and secretRef",
        ),
    )

    prefix: Annotated[str, ENV_VAR_NAME] | None = Field(
        default=None,
        description="Prepended to every key to make the variable's name. Default: null (none).",
    )
    config_map_ref: ConfigMapEnvSource | None = Field(
        default=None, description="The ConfigMap. Default: null."
    )
    secret_ref: SecretEnvSource | None = Field(
        default=None, description="The Secret. Default: null."
    )


_NAME, _PATH = var("v").attr("name"), var("m").attr("mountPath")

#: The checks across `volumes` and `volumeMounts` (rules of Resources, which has both): names
#: unique and not the MPI operator's, every mount naming a declared volume, mount paths unique
#: and not the MPI operator's. As the API server checks a pod, plus the reserved names it would
#: refuse only once the MPI operator adds its own volumes to the pods.
VOLUME_RULES = (
    Rule(unique_by("volumes", "name"), "volume names must be unique", "volumes"),
    Rule(
        at("volumes").all("v", ~_NAME.is_in(list(RESERVED_VOLUME_NAMES))),
        f"volume names {' and '.join(RESERVED_VOLUME_NAMES)} are the MPI operator's own "
        "volumes: choose another name",
        "volumes",
    ),
    Rule(
        at("volumeMounts").all("m", at("volumes").exists("v", _NAME.eq(var("m").attr("name")))),
        "every volumeMount must name a volume declared in resources.volumes",
        "volumeMounts",
        got=at("volumeMounts"),
    ),
    Rule(unique_by("volumeMounts", "mountPath"), "mountPath must be unique", "volumeMounts"),
    Rule(
        at("volumeMounts").all("m", ~_PATH.is_in(list(RESERVED_MOUNT_PATHS))),
        f"mountPath {' and '.join(RESERVED_MOUNT_PATHS)} are where the MPI operator mounts "
        "its own volumes: choose another path",
        "volumeMounts",
    ),
)
