"""``standby diff PLAN``: the source against the stand-by, object by object.

Each object the plan selects in the source is made into the copy it should be (sanitized and
deactivated exactly as the pipeline does it, with the plan's patches) and compared with the copy
in the stand-by, both without the server-set fields and Standby's own bookkeeping (provenance
annotations, the managed label): what is left to differ is a real difference. Objects:

- ``missing``: selected in the source, no copy in the stand-by;
- ``extra``: a copy of this plan whose source object is gone or no longer selected;
- ``different``: both, and the fields (JSON pointers) that differ.

With the source gone (``--against stream``), the stand-by is compared with the plan's stream
instead: each object's latest state there, made into the copy the syncer writes, exactly as a
rebuild of the live stand-by would compare them (:mod:`services.common.rebuilding`, dry run, no
pause): ``missing`` has no copy, ``extra`` is a copy of the plan the stream holds no state of,
``different`` differs in the fields named.

Exit ``OK`` when nothing differs, ``NOT_MET`` otherwise. The comparison is a snapshot: a change
made a moment ago may still be on its way (``standby status`` shows how far behind)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from nats.js import JetStreamContext

from schemas import api, comparing, kinds, rebuilds, sanitizing, selection, transforms
from schemas.jsondata import clone
from services.common import plans, rebuilding, settings
from services.common.copies import list_copies
from services.common.keys import StreamKeys
from services.common.kube import ApiError, KubeClient, ResourceInfo, UnreachableError
from services.operate import output, requests

COLUMNS = ("state", "object", "fields")
Obj = dict[str, Any]


@dataclass(frozen=True)
class Difference:
    state: str  # missing | extra | different
    ref: str
    fields: tuple[str, ...] = ()


def _ref(group: str, resource: str, meta: Mapping[str, Any]) -> str:
    where = f"{meta['namespace']}/" if meta.get("namespace") else ""
    return f"{resource}.{group or 'core'}/{where}{meta['name']}"


def expected_copy(source: Obj, plan: plans.Plan, selector: api.ResourceSelector, existing: Obj | None) -> Obj:
    """The copy ``source`` should have in the stand-by (as the syncer writes it)."""
    provenance = transforms.Provenance(plan.namespace, plan.name, 0, "", "")
    previous = transforms.inverse_of(existing) if existing is not None and transforms.is_copy(existing) else None
    return transforms.deactivate(sanitizing.sanitize(clone(source)), provenance,
                                 plan_patch=[op.as_operation() for op in selector.transformation.patch],
                                 previous_inverse=previous)


def compare(group: str, resource: str, selected: Sequence[Obj], copies: Sequence[Obj], plan: plans.Plan,
            selector: api.ResourceSelector) -> list[Difference]:
    """Pure: the differences between the selected source objects and this plan's copies."""
    by_name = {(c["metadata"].get("namespace", ""), c["metadata"]["name"]): c for c in copies}
    out = []
    for obj in selected:
        meta = obj["metadata"]
        key = (meta.get("namespace", ""), meta["name"])
        copy = by_name.pop(key, None)
        if copy is None:
            out.append(Difference("missing", _ref(group, resource, meta)))
            continue
        fields = tuple(comparing.changed_paths(comparing.comparable(copy),
                                                comparing.comparable(expected_copy(obj, plan, selector, copy))))
        if fields:
            out.append(Difference("different", _ref(group, resource, meta), fields))
    out += [Difference("extra", _ref(group, resource, c["metadata"])) for c in by_name.values()]
    return out


async def gather(own: KubeClient, namespace: str, plan_name: str) -> list[Difference]:
    plan = await requests.parsed_plan(own, namespace, plan_name)
    try:
        source = await plans.cluster_client(own, plan.spec.source_cluster_ref, plan.namespace,
                                            user_agent="standby-cli")
        destination = own if plan.spec.destination_cluster_ref is None else await plans.cluster_client(
            own, plan.spec.destination_cluster_ref, plan.namespace, user_agent="standby-cli")
    except plans.PlanError as exc:
        raise output.CommandError(f"{exc.reason}: {exc.message}") from exc
    try:
        return await _compare_all(source, destination, plan)
    except UnreachableError as exc:
        raise output.CommandError(f"a cluster of {plan.key} cannot be reached ({exc}); `standby status {plan.name}`; "
                                  f"with the source gone, `standby diff {plan.name} --against stream`") from exc
    finally:
        await source.close()
        if destination is not own:
            await destination.close()


@dataclass(frozen=True)
class Selected:
    """What one resource selector of a plan selects in the source, as listed."""

    selector: api.ResourceSelector
    info: ResourceInfo
    scopes: tuple[str, ...]  # the namespaces listed ("": all)
    objects: list[Obj]


async def select(source: KubeClient, plan: plans.Plan) -> list[Selected]:
    """The source's objects the plan selects, resource by resource (as the watcher selects them)."""
    namespace_labels: dict[str, dict[str, str]] | None = None
    out: list[Selected] = []
    for selector in plan.spec.resources:
        filters = selection.compile_filters(selector.filters)
        if filters.needs_namespace_labels and namespace_labels is None:
            listed, _ = await source.list_all("/api/v1/namespaces")
            namespace_labels = {n["metadata"]["name"]: n["metadata"].get("labels") or {} for n in listed}
        try:
            info = await source.resolve(selector.group, selector.version, selector.resource)
        except ApiError as exc:
            raise output.CommandError(f"{selector.resource}: {exc.message}") from exc
        scopes = tuple(selector.filters.namespaces) if info.namespaced and selector.filters.namespaces else ("",)
        selected: list[Obj] = []
        for scope in scopes:
            items, _ = await source.list_all(info.collection(scope))
            for obj in items:
                obj.setdefault("apiVersion", info.api_version)
                obj.setdefault("kind", info.kind)
                ns = obj["metadata"].get("namespace", "")
                if kinds.skip_reason(obj, own_namespace=settings.NAMESPACE) is None and filters.matches(
                        obj, (namespace_labels or {}).get(ns)):
                    selected.append(obj)
        out.append(Selected(selector, info, scopes, selected))
    return out


async def copies(destination: KubeClient, chosen: Selected, plan_key: str) -> list[Obj]:
    """The plan's copies in ``destination`` of one selected resource."""
    info = chosen.info
    out: list[Obj] = []
    for scope in chosen.scopes:
        try:
            theirs = await list_copies(destination, info.collection(scope), {plan_key})
        except ApiError as exc:
            if exc.not_found:  # the kind is not served there yet: every object is missing
                continue
            raise
        for copy in theirs:
            copy.setdefault("apiVersion", info.api_version)
            copy.setdefault("kind", info.kind)
            out.append(copy)
    return out


async def _compare_all(source: KubeClient, destination: KubeClient, plan: plans.Plan) -> list[Difference]:
    out: list[Difference] = []
    for chosen in await select(source, plan):
        out += compare(chosen.info.group, chosen.info.resource, chosen.objects,
                       await copies(destination, chosen, plan.key), plan, chosen.selector)
    return out


STEP_STATES = {"create": "missing", "update": "different", "delete": "extra"}


def from_steps(steps: Sequence[rebuilds.Step]) -> list[Difference]:
    """Pure: a rebuild's steps as differences (what it would create is missing, and so on)."""
    return [Difference(STEP_STATES[s.action], str(s.key), s.fields) for s in steps if s.action in STEP_STATES]


async def against_stream(own: KubeClient, js: JetStreamContext, keys: StreamKeys, plan: plans.Plan,
                         prefix: str = "standby") -> list[Difference]:
    """The stand-by against the stream's latest states (the plan's copies only)."""
    req = rebuilding.Request(plan, prune=True, prefix=prefix)
    where = await rebuilding.target(own, plan, None)
    try:
        state = await rebuilding.read_state(js, keys, req)
        prepared = await rebuilding.prepare(where.client, state, req)
    except UnreachableError as exc:
        raise output.CommandError(f"the stand-by of {plan.key} cannot be reached ({exc})") from exc
    finally:
        if where.client is not own:
            await where.client.close()
    return from_steps(prepared.steps)


HELD = {"source": "the source", "stream": "the stream's latest states"}


def render(differences: Sequence[Difference], fmt: str, against: str = "source") -> str:
    if fmt != "table":
        return output.data([{"state": d.state, "object": d.ref, "fields": list(d.fields)} for d in differences], fmt)
    if not differences:
        return f"No differences: the stand-by holds {HELD[against]}, deactivated.\n"
    rows = [{"state": d.state, "object": d.ref,
             "fields": output.listed(d.fields)}
            for d in sorted(differences, key=lambda d: (d.state, d.ref))]
    return output.table(rows, COLUMNS)
