"""What a rebuild writes and removes, decided without I/O from the plan's state as of a moment and
what the target holds.

Each selected object of the rebuilt state that the target lacks is created, one it holds otherwise
(compared as ``standby diff`` compares: no server-set fields, no Standby bookkeeping, no status) is
updated, the rest is left alone, in activation's order (CRDs and namespaces first). An object in the
target that the rebuilt state does not hold is removed only when asked (``prune``) and only if it
is one of the plan's copies; removals go last, in the reverse order (custom resources before their
CRD, namespaced objects before their namespace)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from schemas import annotations as ann
from schemas import api, comparing, ordering, selection
from schemas.subjects import ObjectKey

Obj = dict[str, Any]
Action = Literal["create", "update", "unchanged", "delete"]


class SelectionError(ValueError):
    """A part of a plan that names nothing a rebuild could select."""


@dataclass(frozen=True)
class Selection:
    """The part of a plan to rebuild; every given part must match (empty: all)."""

    namespaces: frozenset[str] = frozenset()
    resources: frozenset[str] = frozenset()  # "deployments.apps", "configmaps" (the core group)
    names: frozenset[str] = frozenset()
    labels: api.LabelSelector | None = None

    @classmethod
    def of(cls, *, namespaces: Iterable[str] = (), resources: Iterable[str] = (), names: Iterable[str] = (),
           labels: api.LabelSelector | None = None) -> Selection:
        normal = set()
        for r in resources:
            resource, _, group = r.partition(".")
            if not resource:
                raise SelectionError(f"{r!r} is not a resource (e.g. deployments.apps, configmaps)")
            normal.add(f"{resource}.{group or 'core'}")
        return cls(frozenset(namespaces), frozenset(normal), frozenset(names), labels)

    def admits(self, key: ObjectKey, obj: Mapping[str, Any]) -> bool:
        if self.resources and f"{key.resource}.{key.group or 'core'}" not in self.resources:
            return False
        if self.namespaces:
            # a namespace is selected with its objects
            where = key.name if (key.group, key.resource) == ("", "namespaces") else key.namespace
            if where not in self.namespaces:
                return False
        if self.names and key.name not in self.names:
            return False
        labels = (obj.get("metadata") or {}).get("labels") or {}
        return self.labels is None or selection.selector_matches(self.labels, labels)


@dataclass(frozen=True)
class Step:
    action: Action
    key: ObjectKey
    kind: str
    fields: tuple[str, ...] = ()  # update: what differs

    @property
    def rank(self) -> int:
        return ordering.rank(self.key.group, self.kind)


def is_plans_copy(obj: Mapping[str, Any], plan_key: str) -> bool:
    meta = obj.get("metadata") or {}
    return ann.is_managed(meta) and (meta.get("annotations") or {}).get(ann.PLAN) == plan_key


def steps(wanted: Mapping[ObjectKey, Obj], present: Mapping[ObjectKey, Obj], *, prune: bool,
          plan_key: str) -> list[Step]:
    """Pure: the steps from ``present`` (the target's objects of the rebuilt resources) to ``wanted``
    (each object as it is to be written), in the order to take them."""
    out = []
    for key, want in wanted.items():
        have = present.get(key)
        if have is None:
            out.append(Step("create", key, str(want.get("kind", ""))))
            continue
        fields = tuple(comparing.changed_paths(comparing.comparable(have), comparing.comparable(want)))
        out.append(Step("update" if fields else "unchanged", key, str(want.get("kind", "")), fields))
    writes = sorted(out, key=lambda s: (s.rank, str(s.key)))
    gone = [Step("delete", key, str(have.get("kind", ""))) for key, have in present.items()
            if key not in wanted and prune and is_plans_copy(have, plan_key)]
    return writes + sorted(gone, key=lambda s: (-s.rank, str(s.key)))


def summary(done: Iterable[Step]) -> dict[str, int]:
    counts = {"create": 0, "update": 0, "unchanged": 0, "delete": 0}
    for step in done:
        counts[step.action] += 1
    return counts
