"""Deactivate a sanitized original into the copy the stand-by keeps, and activate it again.

``activate(deactivate(x)) == x`` for every sanitized ``x``: the copy records the exact inverse of
every change (built-in rules and the plan's ``transformation.patch``) in one annotation, next to
the plan, epoch, source uid/resourceVersion and stream sequence."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import jsonpatch
import orjson

from schemas import annotations as ann
from schemas import kinds
from schemas.jsondata import clone

Obj = dict[str, Any]
Op = dict[str, Any]


class PatchError(ValueError):
    """A plan patch cannot be applied to this object (reported as a condition, never a crash)."""


@dataclass(frozen=True, slots=True)
class Provenance:
    plan_namespace: str
    plan_name: str
    epoch: int
    source_uid: str
    source_resource_version: str
    stream_sequence: int = 0
    from_patch: tuple[Op, ...] = ()
    from_original: bool = False


def apply_patch(obj: Obj, operations: Sequence[Op], *, in_place: bool = False, owned_operations: bool = False) -> Obj:
    """RFC 6902. ``in_place`` only for an object the caller owns (a fresh copy); likewise
    ``owned_operations`` for operations whose values may end up inside the object."""
    if not operations:
        return obj
    ops = list(operations) if owned_operations else clone(list(operations))
    try:
        result: Obj = jsonpatch.apply_patch(obj if in_place else clone(obj), ops, in_place=True)
    except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException, TypeError, KeyError) as exc:
        raise PatchError(f"patch does not apply: {exc}") from exc
    return result


def inverse_of(obj: Obj) -> list[Op]:
    raw = ((obj.get("metadata") or {}).get("annotations") or {}).get(ann.INVERSE)
    if not raw:
        return []
    value = orjson.loads(raw)
    if not isinstance(value, list):
        raise ValueError(f"{ann.INVERSE} is not a list of operations")
    return value


def is_copy(obj: Obj) -> bool:
    return ann.is_managed(obj.get("metadata") or {})


def deactivate(
    sanitized: Obj,
    provenance: Provenance,
    *,
    plan_patch: Sequence[Op] = (),
    previous_inverse: list[Op] | None = None,
) -> Obj:
    """The deactivated, stamped copy of a sanitized original. Pure: ``sanitized`` is not changed,
    but the result shares the sub-trees deactivation does not touch with it (treat both as
    immutable, or clone).

    ``previous_inverse`` is what the existing copy remembers (see :func:`kinds.scale_to_zero`)."""
    out = dict(sanitized)
    rules = kinds.rules_for(out)
    inverse: list[Op] = rules.deactivate(out, previous_inverse) if rules.deactivate else []
    inverse += kinds.hold_finalizers(out)
    if plan_patch:
        before = out
        out = apply_patch(before, plan_patch)
        inverse = list(jsonpatch.make_patch(out, before)) + inverse
    plan = ann.plan_key(provenance.plan_namespace, provenance.plan_name)
    labels = kinds.fresh(out, "metadata", "labels")
    labels[ann.MANAGED] = ann.MANAGED_VALUE
    labels[ann.PLAN_LABEL] = ann.plan_label(plan)
    annotations = kinds.fresh(out, "metadata", "annotations")
    annotations[ann.PLAN] = plan
    annotations[ann.EPOCH] = str(provenance.epoch)
    annotations[ann.SOURCE_UID] = provenance.source_uid
    annotations[ann.SOURCE_RESOURCE_VERSION] = provenance.source_resource_version
    annotations[ann.STREAM_SEQUENCE] = str(provenance.stream_sequence)
    annotations[ann.INVERSE] = orjson.dumps(inverse).decode()  # compact, as json.dumps(separators=(",", ":"))
    if provenance.from_patch:
        annotations[ann.FROM_PATCH] = orjson.dumps(list(provenance.from_patch)).decode()
    if provenance.from_original:
        annotations[ann.FROM_ORIGINAL] = "true"
    return out


def stamped_from_patch(obj: Obj) -> list[Op]:
    raw = ((obj.get("metadata") or {}).get("annotations") or {}).get(ann.FROM_PATCH)
    return list(orjson.loads(raw)) if raw else []


def wants_original(obj: Obj) -> bool:
    return ((obj.get("metadata") or {}).get("annotations") or {}).get(ann.FROM_ORIGINAL) == "true"


def strip_bookkeeping(obj: Obj) -> Obj:
    out = clone(obj)
    meta = out.get("metadata") or {}
    for key in ("labels", "annotations"):
        values = meta.get(key)
        if isinstance(values, dict):
            for k in [k for k in values if ann.is_bookkeeping(k)]:
                del values[k]
    return out


def _drop_empty_maps(obj: Obj) -> None:
    meta = obj.get("metadata") or {}
    for key in ("labels", "annotations"):
        if key in meta and not meta[key]:
            del meta[key]


def activate(copy_obj: Obj, *, from_patch: Sequence[Op] | None = None) -> Obj:
    """Undo deactivation exactly, then apply the plan's ``recoveryProcess.fromPatch`` (by default
    the one stamped on the copy). Pure."""
    fresh = from_patch is None
    if from_patch is None:
        from_patch = stamped_from_patch(copy_obj)
    inverse = inverse_of(copy_obj)  # parsed from JSON: ours to hand over
    out = strip_bookkeeping(copy_obj)
    out = apply_patch(out, inverse, in_place=True, owned_operations=True)
    out = apply_patch(out, from_patch, in_place=True, owned_operations=fresh)
    _drop_empty_maps(out)
    return out


def activation_patch(copy_obj: Obj, *, from_patch: Sequence[Op] | None = None) -> list[Op]:
    """:func:`activate` as RFC 6902 operations against the live copy: drop the bookkeeping, apply
    the recorded inverse, then ``fromPatch``. Sent as one JSON patch, it touches only those paths
    (much cheaper for the API server than re-applying the whole object)."""
    from schemas.pointers import path

    meta = copy_obj.get("metadata") or {}
    ops: list[Op] = [
        {"op": "remove", "path": path("metadata", key, name)}
        for key in ("annotations", "labels")
        for name in (meta.get(key) or {})
        if ann.is_bookkeeping(name)
    ]
    ops += inverse_of(copy_obj)
    ops += list(from_patch) if from_patch is not None else stamped_from_patch(copy_obj)
    return ops
