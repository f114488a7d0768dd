"""Subject and stream naming, and the deduplication id.

Subject: ``<prefix>.<plan>.<group>.<version>.<resource>.<namespace>.<name>``.

Subject tokens may not contain ``.``, ``*``, ``>`` or whitespace, and Kubernetes names can hold
dots (DNS subdomains) and, for RBAC objects, almost anything but ``/`` and ``%``. Encoding is
reversible: ``.`` becomes ``_`` (DNS names never contain ``_``), and any other character outside
``[A-Za-z0-9-:]`` becomes ``%XX`` (``%`` never occurs in a Kubernetes name). The core group is
``core``; the namespace token of a cluster-scoped object is ``_``.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

CORE_GROUP_TOKEN = "core"
CLUSTER_SCOPED_TOKEN = "_"
DEFAULT_PREFIX = "standby"
_SAFE = re.compile(r"[A-Za-z0-9\-:]")
_PLAIN = re.compile(r"[A-Za-z0-9\-:.]+")  # the usual case: a DNS name, nothing to escape
_ESCAPE = re.compile(r"%([0-9A-F]{2})")


class SubjectError(ValueError):
    pass


def encode_token(value: str) -> str:
    if _PLAIN.fullmatch(value):
        return value.replace(".", "_")
    if not value:
        raise SubjectError("empty subject token")
    out = []
    for ch in value:
        if ch == ".":
            out.append("_")
        elif _SAFE.fullmatch(ch):
            out.append(ch)
        else:
            out.append("".join(f"%{b:02X}" for b in ch.encode()))
    return "".join(out)


def decode_token(token: str) -> str:
    if not token:
        raise SubjectError("empty subject token")
    raw = _ESCAPE.sub(lambda m: "\x00" + m.group(1), token.replace("_", "."))
    if "\x00" not in raw:
        return raw
    parts = raw.split("\x00")
    data = bytearray(parts[0].encode())
    for part in parts[1:]:
        data.append(int(part[:2], 16))
        data.extend(part[2:].encode())
    return data.decode()


@functools.lru_cache(maxsize=1024)
def plan_token(namespace: str, name: str) -> str:
    """Plans are namespaced; ':' never occurs in a namespace or a plan name."""
    return encode_token(f"{namespace}:{name}")


@dataclass(frozen=True, slots=True, order=True)
class ObjectKey:
    """One protected object, whichever API version carries it: the one key of the syncer's
    per-object state (a subject and an API path both map to it)."""

    group: str
    resource: str
    namespace: str
    name: str

    def __str__(self) -> str:
        where = f"{self.namespace}/" if self.namespace else ""
        return f"{self.resource}.{self.group or 'core'}/{where}{self.name}"


@dataclass(frozen=True, slots=True)
class SubjectParts:
    plan_namespace: str
    plan_name: str
    group: str
    version: str
    resource: str
    namespace: str
    name: str

    @property
    def key(self) -> ObjectKey:
        return ObjectKey(self.group, self.resource, self.namespace, self.name)


def object_subject(
    *, prefix: str, plan_namespace: str, plan_name: str, group: str, version: str, resource: str,
    namespace: str, name: str,
) -> str:
    return ".".join(
        (
            prefix,
            plan_token(plan_namespace, plan_name),
            encode_token(group) if group else CORE_GROUP_TOKEN,
            encode_token(version),
            encode_token(resource),
            encode_token(namespace) if namespace else CLUSTER_SCOPED_TOKEN,
            encode_token(name),
        )
    )


def plan_filter(prefix: str, plan_namespace: str, plan_name: str) -> str:
    """Every subject of one plan."""
    return f"{prefix}.{plan_token(plan_namespace, plan_name)}.>"


def resource_filter(*, prefix: str, plan_namespace: str, plan_name: str, group: str, version: str,
                    resource: str, namespace: str = "") -> str:
    """Every subject of one resource of one plan (in one namespace, if given)."""
    tokens = [prefix, plan_token(plan_namespace, plan_name), encode_token(group) if group else CORE_GROUP_TOKEN,
              encode_token(version), encode_token(resource)]
    if namespace:
        tokens.append(encode_token(namespace))
    return ".".join((*tokens, ">"))


def object_filter(prefix: str, plan_namespace: str, plan_name: str, key: ObjectKey) -> str:
    """Every subject of one object, whichever API version carried it."""
    return ".".join((prefix, plan_token(plan_namespace, plan_name),
                     encode_token(key.group) if key.group else CORE_GROUP_TOKEN, "*", encode_token(key.resource),
                     encode_token(key.namespace) if key.namespace else CLUSTER_SCOPED_TOKEN, encode_token(key.name)))


def parse_ref(text: str) -> ObjectKey:
    """An object as the operator commands print it: ``resource.group/namespace/name`` (group
    ``core`` for the core API), ``resource.group/name`` for a cluster-scoped one."""
    kind, _, rest = text.partition("/")
    resource, dot, group = kind.partition(".")
    parts = rest.split("/")
    if not resource or not dot or not group or not all(parts) or len(parts) > 2:
        raise SubjectError(f"{text!r} is not an object (resource.group/namespace/name, e.g. "
                           f"configmaps.core/shop/settings, deployments.apps/shop/web, namespaces.core/shop)")
    namespace, name = (parts[0], parts[1]) if len(parts) == 2 else ("", parts[0])
    return ObjectKey("" if group == CORE_GROUP_TOKEN else group, resource, namespace, name)


def dead_letter_subject(prefix: str, subject: str) -> str:
    """Where a refused change of ``subject`` (one of the plan's subjects) is dead-lettered: a subject
    per object, so the stream's per-subject history keeps the last letters of every object rather
    than the last few of the whole plan."""
    if not subject.startswith(f"{prefix}."):
        raise SubjectError(f"not a Standby subject: {subject!r}")
    return f"{prefix}-dlq{subject[len(prefix):]}"


def dead_letter_filter(prefix: str, plan_namespace: str, plan_name: str) -> str:
    """Every dead letter of one plan."""
    return f"{prefix}-dlq.{plan_token(plan_namespace, plan_name)}.>"


def horizon_subject(prefix: str, plan_namespace: str, plan_name: str) -> str:
    """Where the history keeper records the earliest moment a rebuild of the plan can reach."""
    return f"{prefix}-horizon.{plan_token(plan_namespace, plan_name)}"


def plan_record_subject(prefix: str, plan_namespace: str, plan_name: str) -> str:
    """Where the watcher records the plan itself: the stream then describes itself, and a rebuild
    from it (or from a mirror of it) needs nothing of the cluster the plan lived in."""
    return f"{prefix}-plan.{plan_token(plan_namespace, plan_name)}"


def parse_subject(subject: str, *, prefix: str) -> SubjectParts:
    tokens = subject.split(".")
    if len(tokens) != 7 or tokens[0] != prefix:
        raise SubjectError(f"not a Standby object subject: {subject!r}")
    plan = decode_token(tokens[1])
    if ":" not in plan:
        raise SubjectError(f"bad plan token in {subject!r}")
    plan_ns, plan_name = plan.split(":", 1)
    return SubjectParts(
        plan_namespace=plan_ns,
        plan_name=plan_name,
        group="" if tokens[2] == CORE_GROUP_TOKEN else decode_token(tokens[2]),
        version=decode_token(tokens[3]),
        resource=decode_token(tokens[4]),
        namespace="" if tokens[5] == CLUSTER_SCOPED_TOKEN else decode_token(tokens[5]),
        name=decode_token(tokens[6]),
    )


def stream_name(plan_namespace: str, plan_name: str) -> str:
    """One stream per plan. Namespaces hold no '_' or '.', so the first '_' after the prefix
    separates namespace from name, and '.' in the name becomes '_' (names hold no '_')."""
    return f"STANDBY_{plan_namespace}_{plan_name.replace('.', '_')}"


def message_id(*, source_uid: str, resource_version: str, event_type: str) -> str:
    """Deterministic ``Nats-Msg-Id``: republishing the same source state is deduplicated."""
    return f"{source_uid}:{resource_version}:{event_type}"
