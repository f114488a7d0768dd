"""From a change in the stream to the object to write: the one pure path shared by the syncer's
copies, a rebuild (deactivated: a stand-by; active: a restore) and activation's ``fromOriginal``.

The stream holds the *sanitized original* of each object. Written **deactivated**, it becomes the
copy the syncer would write (deactivated, the plan's patches applied, stamped with provenance);
written **active**, it is the original again, with the ``fromPatch`` of the plan's recovery
process applied and the fields no API server accepts from a client stripped."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from schemas import api, kinds, sanitizing, transforms
from schemas.envelope import Envelope

Obj = dict[str, Any]
Op = dict[str, Any]


class NothingToWrite(LookupError):
    """The change is a deletion: the object did not exist in that state."""


@dataclass(frozen=True)
class Deactivated:
    """As the syncer writes a copy."""

    provenance: transforms.Provenance
    plan_patch: Sequence[Op] = ()
    previous_inverse: list[Op] | None = None  # what the copy being replaced remembers


@dataclass(frozen=True)
class Active:
    """As the object runs: activation's ``fromOriginal``, or a restore into a source."""

    from_patch: Sequence[Op] = field(default_factory=tuple)


@dataclass(frozen=True)
class ResourceWriting:
    """How a plan writes one resource: its patch on the copies, and how activation undoes it."""

    plan_patch: tuple[Op, ...] = ()
    from_patch: tuple[Op, ...] = ()
    from_original: bool = False


def writing(spec: api.RecoveryPlanSpec) -> dict[tuple[str, str], ResourceWriting]:
    """Per (group, resource) of a plan."""
    return {(r.group, r.resource): ResourceWriting(
        tuple(op.as_operation() for op in r.transformation.patch),
        tuple(op.as_operation() for op in r.recovery_process.from_patch),
        r.recovery_process.from_original.enabled) for r in spec.resources}


def deactivated(env: Envelope, sequence: int, rules: ResourceWriting, *, plan_namespace: str, plan_name: str,
                previous_inverse: list[Op] | None = None) -> Deactivated:
    """How the change at stream ``sequence`` is written as a copy of the plan."""
    return Deactivated(transforms.Provenance(plan_namespace, plan_name, env.epoch, env.source_uid,
                                             env.source_resource_version, sequence, rules.from_patch,
                                             rules.from_original),
                       plan_patch=rules.plan_patch, previous_inverse=previous_inverse)


def original(env: Envelope) -> Obj:
    if env.body is None:
        raise NothingToWrite(f"{env.ref}: the change is a deletion")
    return env.body


def object_to_write(env: Envelope, api_version: str, kind: str, how: Deactivated | Active) -> Obj:
    """The object to apply for ``env`` (pure; the envelope's body is not changed). Raises
    :class:`NothingToWrite` for a deletion and :class:`transforms.PatchError` when a patch does not
    apply."""
    body = original(env)
    if isinstance(how, Deactivated):
        out = transforms.deactivate(body, how.provenance, plan_patch=how.plan_patch,
                                    previous_inverse=how.previous_inverse)
    else:
        out = sanitizing.strip_server_fields(transforms.apply_patch(body, how.from_patch))
        rules = kinds.rules_for(out)
        if rules.sanitize is not None:
            rules.sanitize(out)
    out["apiVersion"], out["kind"] = api_version, kind
    return out
