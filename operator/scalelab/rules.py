"""Validity rules stated once and enforced twice: in Python (`scalelab validate`, `scalelab run`,
the operator) and by the API server at `kubectl apply` (CEL in the generated CRD).

Two kinds of rule, both declared on the API models (scalelab.api) and nowhere else:

- `Format`: what a Kubernetes-facing string must look like where it ends up (a label key or
  value, a DNS name, an image reference). Used as `Annotated[str, LABEL_KEY]` on a field or on a
  map's keys. The model checks it in Python; its JSON Schema carries `maxLength` and a CEL rule
  with the same regular expressions, which kube/crd.py copies into the CRD.
- `Rule`: a check across the fields of one model, written as an `Expr`, a small expression
  language that prints as CEL and evaluates in Python. A model lists its rules in its `rules`
  class variable; the JSON Schema carries them as `x-kubernetes-validations`.

The regular expressions use only what Python's `re` (ASCII) and RE2 read alike: explicit
character classes, no `\\d`/`\\w`, anchored by `fullmatch` here and `^(?:...)$` in CEL.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import GetCoreSchemaHandler, GetJsonSchemaHandler
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import PydanticCustomError, core_schema

Env = Mapping[str, Any]

# ------------------------------------------------------------------------------ expressions


def _cel_literal(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_cel_literal(v) for v in value) + "]"
    raise TypeError(f"no CEL literal for {value!r}")


def _cel_mod(a: int, b: int) -> int:
    """CEL's (and Go's) remainder truncates toward zero; Python's % floors."""
    r = abs(a) % abs(b)
    return -r if a < 0 else r


@dataclass(frozen=True, eq=False)
class Expr:
    """An expression over a model's wire form: `cel` is its CEL text (`self` is the object the
    rule sits on), `fn` evaluates it in Python on the same data (`model_dump(by_alias=True,
    mode="json", exclude_none=True)`, i.e. what the API server holds after defaulting)."""

    cel: str
    fn: Callable[[Env], Any]

    def __call__(self, env: Env) -> Any:
        return self.fn(env)

    def _op(self, other: object, cel_op: str, py_op: Callable[[Any, Any], Any]) -> Expr:
        o = lift(other)
        return Expr(f"({self.cel} {cel_op} {o.cel})", lambda env: py_op(self.fn(env), o.fn(env)))

    def __add__(self, other: object) -> Expr:
        return self._op(other, "+", operator.add)

    def __mul__(self, other: object) -> Expr:
        return self._op(other, "*", operator.mul)

    def __mod__(self, other: object) -> Expr:
        return self._op(other, "%", _cel_mod)

    def __lt__(self, other: object) -> Expr:
        return self._op(other, "<", operator.lt)

    def __le__(self, other: object) -> Expr:
        return self._op(other, "<=", operator.le)

    def __gt__(self, other: object) -> Expr:
        return self._op(other, ">", operator.gt)

    def __ge__(self, other: object) -> Expr:
        return self._op(other, ">=", operator.ge)

    def eq(self, other: object) -> Expr:
        """`==` (Python's `==` stays identity, so expressions can be dict keys)."""
        return self._op(other, "==", operator.eq)

    def ne(self, other: object) -> Expr:
        """`!=`."""
        return self._op(other, "!=", operator.ne)

    def __and__(self, other: object) -> Expr:
        o = lift(other)  # lazy, so `has(x) && x...` guards as in CEL
        return Expr(f"({self.cel} && {o.cel})", lambda env: bool(self.fn(env)) and bool(o.fn(env)))

    def __or__(self, other: object) -> Expr:
        o = lift(other)
        return Expr(f"({self.cel} || {o.cel})", lambda env: bool(self.fn(env)) or bool(o.fn(env)))

    def __invert__(self) -> Expr:
        return Expr(f"!{self.cel}", lambda env: not self.fn(env))

    def attr(self, name: str) -> Expr:
        """A field of an object, e.g. of a list element bound by `all`/`exists`: `v.name`. Only
        for fields that always exist (required or defaulted), as with `at`."""
        return Expr(f"{self.cel}.{name}", lambda env: self.fn(env)[name])

    def size(self) -> Expr:
        """Length of a list, map or string."""
        return Expr(f"size({self.cel})", lambda env: len(self.fn(env)))

    def is_in(self, values: Sequence[Any]) -> Expr:
        """Membership in a literal list."""
        items = list(values)
        return Expr(f"({self.cel} in {_cel_literal(items)})", lambda env: self.fn(env) in items)

    def _macro(
        self, name: str, var: str, body: Expr, reduce: Callable[[Iterable[bool]], bool]
    ) -> Expr:
        def run(env: Env) -> bool:
            return reduce(bool(body.fn({**env, var: item})) for item in self.fn(env))

        return Expr(f"{self.cel}.{name}({var}, {body.cel})", run)

    def exists(self, var: str, body: Expr) -> Expr:
        """Some element (list) or key (map) bound to `var` makes `body` true."""
        return self._macro("exists", var, body, any)

    def all(self, var: str, body: Expr) -> Expr:
        """Every element (list) or key (map) bound to `var` makes `body` true."""
        return self._macro("all", var, body, all)

    def exists_one(self, var: str, body: Expr) -> Expr:
        """Exactly one element makes `body` true."""
        return self._macro("exists_one", var, body, lambda found: sum(found) == 1)


def lift(value: object) -> Expr:
    """An expression as is, a literal (int, str, bool, list) as a constant."""
    if isinstance(value, Expr):
        return value
    text = _cel_literal(value)
    return Expr(text, lambda env: value)


def var(name: str) -> Expr:
    """A variable bound by `exists`/`all` (or given by the caller: the planner's `g`, `b`)."""
    return Expr(name, lambda env: env[name])


def _walk(data: Any, path: Sequence[str]) -> Any:
    for part in path:
        data = data[part]
    return data


def at(path: str = "") -> Expr:
    """A field of the object the rule sits on, by wire name: `at("sweep.gpus")` is
    `self.sweep.gpus`. Only for fields that always exist (required or defaulted)."""
    parts = [p for p in path.split(".") if p]
    return Expr(".".join(["self", *parts]), lambda env: _walk(env["self"], parts))


def has(path: str) -> Expr:
    """The optional field at `path` is set (not absent, not null)."""
    parts = path.split(".")

    def present(env: Env) -> bool:
        node = _walk(env["self"], parts[:-1])
        return isinstance(node, Mapping) and node.get(parts[-1]) is not None

    return Expr(f"has(self.{path})", present)


def if_(condition: Expr, then: object, otherwise: object) -> Expr:
    """`condition ? then : otherwise`."""
    a, b = lift(then), lift(otherwise)
    return Expr(
        f"({condition.cel} ? {a.cel} : {b.cel})",
        lambda env: a.fn(env) if condition.fn(env) else b.fn(env),
    )


def any_of(exprs: Iterable[Expr]) -> Expr:
    """`a || b || ...`."""
    items = list(exprs)
    return Expr(" || ".join(e.cel for e in items), lambda env: any(e.fn(env) for e in items))


def all_of(exprs: Iterable[Expr]) -> Expr:
    """`a && b && ...`."""
    items = list(exprs)
    return Expr(" && ".join(e.cel for e in items), lambda env: all(e.fn(env) for e in items))


def unique(path: str) -> Expr:
    """No value of the list at `path` repeats."""
    items = at(path)
    return items.all("x", items.exists_one("y", var("y").eq(var("x"))))


def unique_by(path: str, key: str) -> Expr:
    """No two objects of the list at `path` have the same `key` (e.g. volumes by name)."""
    items = at(path)
    return items.all("x", items.exists_one("y", var("y").attr(key).eq(var("x").attr(key))))


def count_set(paths: Iterable[str]) -> Expr:
    """How many of the optional fields at `paths` are set (for "exactly one of")."""
    items = [if_(has(p), 1, 0) for p in paths]
    total = items[0]
    for item in items[1:]:
        total = total + item
    return total


@dataclass(frozen=True)
class Rule:
    """A check of one model: `check` is true for a valid object. `field` is the wire path (from
    the model) the message is about; `got` is what the CLI quotes after the message."""

    check: Expr
    message: str
    field: str = ""
    got: Expr | None = None

    def openapi(self) -> dict[str, str]:
        """The rule as an `x-kubernetes-validations` entry."""
        out = {"rule": self.check.cel, "message": self.message}
        if self.field:
            out["fieldPath"] = "." + self.field
        return out

    def broken(self, wire: Mapping[str, Any]) -> bool:
        """True when the object (in wire form) breaks the rule."""
        return not self.check.fn({"self": wire})


# ---------------------------------------------------------------------------------- formats


@dataclass(frozen=True)
class Format:
    """A string format Kubernetes enforces where the value ends up: every pattern must match the
    whole string, no `excluded` pattern may match anywhere in it (RE2 has no lookahead: "no '..'
    path element" is said this way), and it may be at most `max_length` characters. `message`
    says what is expected."""

    name: str
    patterns: tuple[str, ...]
    max_length: int
    message: str
    excluded: tuple[str, ...] = ()
    _compiled: tuple[re.Pattern[str], ...] = field(init=False, repr=False, compare=False)
    _excluded: tuple[re.Pattern[str], ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_compiled", tuple(re.compile(p, re.ASCII) for p in self.patterns))
        object.__setattr__(self, "_excluded", tuple(re.compile(p, re.ASCII) for p in self.excluded))

    def valid(self, value: str) -> bool:
        """Whether Kubernetes would accept `value` in this place."""
        return (
            len(value) <= self.max_length
            and all(c.fullmatch(value) for c in self._compiled)
            and not any(e.search(value) for e in self._excluded)
        )

    def cel(self, subject: str) -> str:
        """The CEL test of `subject` (length is left to OpenAPI maxLength where it can be)."""
        return " && ".join(
            [f"{subject}.matches({_cel_literal(f'^(?:{p})$')})" for p in self.patterns]
            + [f"!{subject}.matches({_cel_literal(p)})" for p in self.excluded]
        )

    def openapi(self, subject: str = "self") -> dict[str, str]:
        """The format as an `x-kubernetes-validations` entry on `subject`."""
        return {"rule": self.cel(subject), "message": f"must be {self.message}"}

    def _check(self, value: str) -> str:
        if not self.valid(value):
            raise PydanticCustomError(
                "kubernetes_format", "must be {expected}", {"expected": self.message}
            )
        return value

    def __get_pydantic_core_schema__(
        self, source: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        return core_schema.no_info_after_validator_function(self._check, handler(source))

    def __get_pydantic_json_schema__(
        self, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        out = handler(schema)
        out["maxLength"] = min(out.get("maxLength", self.max_length), self.max_length)
        out.setdefault("x-kubernetes-validations", []).append(self.openapi())
        return out


_DNS_LABEL = "[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_DNS_SUBDOMAIN = f"{_DNS_LABEL}([.]{_DNS_LABEL})*"
_LABEL_NAME = "[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?"

#: RFC 1123 label: namespaces, and the experiment names every child object is derived from.
DNS_LABEL = Format(
    "DNS label",
    (_DNS_LABEL,),
    63,
    "a DNS label: lower-case letters, digits and '-', starting and ending with a letter or "
    "digit, at most 63 characters",
)
#: RFC 1123 subdomain: names of most Kubernetes objects (PriorityClass, ...).
DNS_SUBDOMAIN = Format(
    "DNS subdomain",
    (_DNS_SUBDOMAIN,),
    253,
    "a DNS subdomain: lower-case letters, digits, '-' and '.', starting and ending with a "
    "letter or digit, at most 253 characters",
)
#: A label key (and annotation key, node-selector key, taint key): an optional DNS-subdomain
#: prefix of at most 253 characters and '/', then a name of at most 63.
LABEL_KEY = Format(
    "label key",
    (f"({_DNS_SUBDOMAIN}/)?{_LABEL_NAME}", "([^/]{1,253}/)?[^/]{1,63}"),
    253 + 1 + 63,
    "a Kubernetes label key: an optional DNS-subdomain prefix and '/', then at most 63 "
    "letters, digits, '-', '_' or '.', starting and ending with a letter or digit",
)
#: A label value (and node-selector value, toleration value); may be empty.
LABEL_VALUE = Format(
    "label value",
    (f"({_LABEL_NAME})?",),
    63,
    "a Kubernetes label value: at most 63 letters, digits, '-', '_' or '.', starting and "
    "ending with a letter or digit (or empty)",
)
#: A Kueue LocalQueue name: an object name (DNS subdomain) that is also the value of the
#: kueue.x-k8s.io/queue-name label, so at most 63 characters.
QUEUE_NAME = Format(
    "queue name",
    (_DNS_SUBDOMAIN,),
    63,
    "a Kueue LocalQueue name: lower-case letters, digits, '-' and '.', starting and ending "
    "with a letter or digit, at most 63 characters (it is also a label value)",
)
#: A Kueue topology level: the node label key a Topology object names as one of its levels. Kueue
#: checks it as a label key, and a Workload's podSets[].topologyRequest keeps it in at most 63
#: characters, so a longer key would let the MPIJob in and fail its Workload.
TOPOLOGY_LEVEL = Format(
    "topology level",
    LABEL_KEY.patterns,
    63,
    "a node label key that a Kueue Topology names as a level (e.g. "
    "cloud.google.com/gce-topology-block or kubernetes.io/hostname): an optional DNS-subdomain "
    "prefix and '/', then letters, digits, '-', '_' or '.', at most 63 characters in all (Kueue's "
    "limit)",
)

_PATH_COMPONENT = "[a-z0-9]+((?:[._]|__|[-]+)[a-z0-9]+)*"
_DOMAIN_COMPONENT = "([a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
#: A registry: localhost, a name with a dot, an IPv6 literal, or any of those or a bare name with
#: a port (a first component without one of these is a path, hence lower-case).
_DOMAIN = (
    f"(localhost|{_DOMAIN_COMPONENT}([.]{_DOMAIN_COMPONENT})+|\\[[a-fA-F0-9:]+\\])(:[0-9]+)?"
    f"|{_DOMAIN_COMPONENT}:[0-9]+"
)
_TAG = "[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}"
_DIGEST = "sha256:[a-f0-9]{64}|sha384:[a-f0-9]{96}|sha512:[a-f0-9]{128}"
#: A container image reference as the kubelet parses it (the distribution reference grammar:
#: [registry[:port]/]path[:tag][@digest], lower-case path); a bad one is InvalidImageName only
#: when the pod starts, far from the user.
IMAGE = Format(
    "image reference",
    (f"((?:{_DOMAIN})/)?{_PATH_COMPONENT}(/{_PATH_COMPONENT})*(:{_TAG})?(@({_DIGEST}))?",),
    512,
    "a container image reference: [registry[:port]/]lower-case/path[:tag][@sha256:<64 hex>], "
    "e.g. ghcr.io/example/scalelab-trainer:0.1.0",
)

#: Resource quantities of a pod's requests and limits, in the forms scalelab writes.
CPU_QUANTITY = Format(
    "CPU quantity",
    ("[0-9]+([.][0-9]+)?|[0-9]+m",),
    32,
    'a CPU quantity: cores ("2", "0.5") or millicores ("500m"), as a string',
)
MEMORY_QUANTITY = Format(
    "memory quantity",
    ("[0-9]+([.][0-9]+)?(Ki|Mi|Gi|Ti|k|M|G|T)?",),
    32,
    "a memory quantity: bytes with an optional suffix Ki, Mi, Gi, Ti, k, M, G or T (4Gi, "
    "512Mi), as a string",
)

#: A path element ".." anywhere (Kubernetes refuses it in every path of a pod's volumes).
_BACKSTEP = "(^|/)[.][.](/|$)"
#: Where a volume is mounted in a container, or a hostPath on the node: absolute, no "..".
ABSOLUTE_PATH = Format(
    "absolute path",
    ("/.*",),
    1024,
    "an absolute path: starting with '/', without a '..' element, at most 1024 characters",
    excluded=(_BACKSTEP,),
)
#: A path inside a volume (subPath, a ConfigMap or Secret item's path): relative, no "..".
RELATIVE_PATH = Format(
    "relative path",
    ("[^/].*",),
    1024,
    "a relative path: not starting with '/', without a '..' element, at most 1024 characters",
    excluded=(_BACKSTEP,),
)
#: An environment variable's name (and an envFrom prefix), as Kubernetes has long checked it.
ENV_VAR_NAME = Format(
    "environment variable name",
    ("[-._a-zA-Z][-._a-zA-Z0-9]*",),
    256,
    "an environment variable name: letters, digits, '_', '-' and '.', not starting with a "
    "digit, at most 256 characters",
)
#: A key of a ConfigMap or Secret.
CONFIG_KEY = Format(
    "ConfigMap or Secret key",
    ("[-._a-zA-Z0-9]+",),
    253,
    "a ConfigMap or Secret key: letters, digits, '-', '_' and '.', not '.' and not starting "
    "with '..', at most 253 characters",
    excluded=("^[.]$", "^[.][.]"),
)
#: A CSI driver name: a DNS subdomain of at most 63 characters (upper case allowed).
CSI_DRIVER = Format(
    "CSI driver name",
    ("[A-Za-z0-9]([-A-Za-z0-9]*[A-Za-z0-9])?([.][A-Za-z0-9]([-A-Za-z0-9]*[A-Za-z0-9])?)*",),
    63,
    "a CSI driver name: letters, digits, '-' and '.', starting and ending with a letter or "
    "digit, at most 63 characters (e.g. ebs.csi.aws.com)",
)

FORMATS = (
    DNS_LABEL, DNS_SUBDOMAIN, LABEL_KEY, LABEL_VALUE, QUEUE_NAME, TOPOLOGY_LEVEL, IMAGE,
    CPU_QUANTITY, MEMORY_QUANTITY, ABSOLUTE_PATH, RELATIVE_PATH, ENV_VAR_NAME, CONFIG_KEY,
    CSI_DRIVER,
)  # fmt: skip
