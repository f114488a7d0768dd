"""A rebuild: a plan's objects as of a moment, from its stream into a target cluster.

0. **Refuse** what would do harm, before anything is written: a deactivated rebuild into the
   plan's source (the same cluster by its kube-system namespace's uid, whatever the ManagedCluster
   is called), or into a stand-by where the plan has failed over (its copies run: deactivating
   them would take the application down).

1. **Read**: every object's state as of the moment (:func:`services.common.history.as_of`), after
   checking the moment is within reach; a sealed Secret whose key is not held, or a moment out of
   reach, stops the rebuild before anything is written.
2. **Compare**: the target's objects of the rebuilt resources against the objects to write
   (:mod:`schemas.restoring`, deactivated as the syncer writes copies or active as a restore
   writes them), giving the steps (:func:`schemas.rebuilds.steps`).
3. **Write**, unless a dry run: in activation's order, one rank at a time (a CRD is Established
   before the custom resources of the next ranks are resolved), ``concurrency`` objects at once; a
   missing namespace is created. Each step has its result; a failed one does not stop the others.

Rebuilding the live stand-by pauses the plan (``spec.suspend``) meanwhile, so the syncer does not
write the same copies; the caller (the command, or the operator for a Rebuild) decides when to
resume it, and what to report."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from nats.js import JetStreamContext

from schemas import API_VERSION, api, codec, comparing, rebuilds, restoring, sealing, subjects, transforms
from schemas import annotations as ann
from schemas.envelope import Envelope
from schemas.subjects import ObjectKey
from services.common import access, history, plans, settings
from services.common.keys import StreamKeys
from services.common.kube import ApiError, KubeClient, NotServedError, ResourceInfo, UnreachableError

log = logging.getLogger(__name__)
Obj = dict[str, Any]
# Deactivated: as the syncer writes copies (a stand-by); Active: running, with the plan's fromPatch
# (a restore into a cluster that takes the source's place); Original: exactly as the source had it
# (``standby restore``, into the source itself).
Mode = Literal["Deactivated", "Active", "Original"]
CRDS = ("apiextensions.k8s.io", "customresourcedefinitions")


class RebuildError(Exception):
    """The rebuild cannot start: nothing was written."""


@dataclass(frozen=True)
class Request:
    plan: plans.Plan
    at: float | None = None  # unix time; None: now
    mode: Mode = "Deactivated"
    selection: rebuilds.Selection = field(default_factory=rebuilds.Selection)
    prune: bool = False
    prefix: str = "standby"
    plan_in_cluster: bool = True  # False: read from the stream's record (its cluster is gone): nothing to pause


@dataclass(frozen=True)
class Change:
    """One object of the rebuilt state: the change that set it, where it is in the stream."""

    key: ObjectKey
    version: str
    env: Envelope
    sequence: int


@dataclass(frozen=True)
class State:
    at: float
    earliest: float | None
    changes: dict[ObjectKey, Change]


@dataclass(frozen=True)
class Outcome:
    step: rebuilds.Step
    ok: bool
    message: str = ""


@dataclass
class Plan:
    """What a rebuild will do: its steps, and the objects to write."""

    state: State
    steps: list[rebuilds.Step]
    bodies: dict[ObjectKey, Obj]
    infos: dict[ObjectKey, ResourceInfo | None]  # None: not served in the target yet (its CRD is rebuilt)


async def read_state(js: JetStreamContext, keys: StreamKeys, req: Request, *,
                     clock: Callable[[], float] = time.time) -> State:
    plan = req.plan
    stream = subjects.stream_name(plan.namespace, plan.name)
    everything = subjects.plan_filter(req.prefix, plan.namespace, plan.name)
    now = clock()
    at = now if req.at is None else req.at
    if at > now + 1:
        raise RebuildError(f"{history.rfc3339(at)} is in the future (now: {history.rfc3339(now)})")
    reach = await history.reach(js, stream, prefix=req.prefix, plan_namespace=plan.namespace, plan_name=plan.name)
    earliest = await history.earliest_moment(js, stream, reach, everything)
    state = await history.as_of(js, stream, everything, at)
    if (why := reach.missing(at, state.first_at)) is not None:
        since = f"; the earliest moment available is {history.rfc3339(earliest)}" if earliest is not None else ""
        raise RebuildError(f"{plan.key} cannot be rebuilt as of {history.rfc3339(at)}: {why}{since}")
    changes: dict[ObjectKey, Change] = {}
    for subject, msg in state.present().items():
        try:
            parts = subjects.parse_subject(subject, prefix=req.prefix)
        except subjects.SubjectError:
            continue
        try:
            env = await keys.decode(msg.data)
        except sealing.UnknownKeyError as exc:
            raise RebuildError(f"{parts.key} is sealed under a key not held ({exc}); apply the stream keys "
                               f"Secret first") from exc
        except codec.DecodeError as exc:
            raise RebuildError(f"{parts.key} (stream sequence {msg.sequence}) cannot be read: {exc}") from exc
        if env.body is not None and req.selection.admits(parts.key, env.body):
            changes[parts.key] = Change(parts.key, parts.version, env, msg.sequence)
    return State(at, earliest, changes)


async def _info(target: KubeClient, group: str, version: str, resource: str) -> ResourceInfo | None:
    try:
        return await target.resolve(group, version, resource)
    except NotServedError:
        return None


async def _present(target: KubeClient, info: ResourceInfo, namespaces: frozenset[str]) -> dict[ObjectKey, Obj]:
    scopes = sorted(namespaces) if info.namespaced and namespaces else [""]
    out: dict[ObjectKey, Obj] = {}
    for scope in scopes:
        try:
            items, _ = await target.list_all(info.collection(scope))
        except ApiError as exc:
            if exc.not_found:
                continue
            raise
        for obj in items:
            meta = obj["metadata"]
            obj.setdefault("apiVersion", info.api_version)
            obj.setdefault("kind", info.kind)
            out[ObjectKey(info.group, info.resource, meta.get("namespace", ""), meta["name"])] = obj
    return out


async def prepare(target: KubeClient, state: State, req: Request) -> Plan:
    """The steps from what ``target`` holds to the rebuilt state (reads only)."""
    resources = {(c.key.group, c.version, c.key.resource) for c in state.changes.values()}
    if req.prune:  # the plan's own resources, so that a copy of a resource now empty is found too
        resources |= {(r.group, r.version, r.resource) for r in req.plan.spec.resources}
    infos = {r: await _info(target, *r) for r in sorted(resources)}
    present: dict[ObjectKey, Obj] = {}
    by_key: dict[ObjectKey, ResourceInfo | None] = {}
    for info in infos.values():
        if info is not None:
            found = await _present(target, info, req.selection.namespaces)
            present |= {k: v for k, v in found.items() if req.selection.admits(k, v)}
            by_key |= dict.fromkeys(found, info)
    writing = restoring.writing(req.plan.spec)
    bodies: dict[ObjectKey, Obj] = {}
    for key, change in state.changes.items():
        info = infos.get((key.group, change.version, key.resource))
        by_key[key] = info
        api_version = f"{key.group}/{change.version}" if key.group else change.version
        how: restoring.Deactivated | restoring.Active
        rules = writing.get((key.group, key.resource), restoring.ResourceWriting())
        if req.mode == "Deactivated":
            existing = present.get(key)
            same = existing is not None and rebuilds.is_plans_copy(existing, req.plan.key) and (
                (existing["metadata"].get("annotations") or {}).get(ann.SOURCE_UID) == change.env.source_uid)
            how = restoring.deactivated(change.env, change.sequence, rules, plan_namespace=req.plan.namespace,
                                        plan_name=req.plan.name,
                                        previous_inverse=transforms.inverse_of(existing) if same and existing else None)
        else:
            how = restoring.Active(rules.from_patch if req.mode == "Active" else ())
        try:
            bodies[key] = restoring.object_to_write(change.env, api_version, change.env.ref.kind, how)
        except transforms.PatchError as exc:
            raise RebuildError(f"{key}: the plan's patch does not apply: {exc}") from exc
    steps = rebuilds.steps(bodies, present, prune=req.prune, plan_key=req.plan.key)
    steps = await _confirmed(target, steps, bodies, present, by_key)
    return Plan(state, steps, bodies, by_key)


async def _confirmed(target: KubeClient, steps: list[rebuilds.Step], bodies: Mapping[ObjectKey, Obj],
                     present: Mapping[ObjectKey, Obj], infos: Mapping[ObjectKey, ResourceInfo | None],
                     concurrency: int = 32) -> list[rebuilds.Step]:
    """An update the plain comparison suspects is asked of the server (a dry-run apply, as ``kubectl
    diff`` does): fields the target's API server defaults (a body written elsewhere, or by an older
    server, may lack them) are no change, and the fields reported are those the write would change."""
    gate = asyncio.Semaphore(concurrency)

    async def confirm(step: rebuilds.Step) -> rebuilds.Step:
        info = infos.get(step.key)
        if step.action != "update" or info is None:
            return step
        async with gate:
            try:
                after = await target.apply(info.item(step.key.namespace, step.key.name), bodies[step.key],
                                           field_manager=ann.FIELD_MANAGER, dry_run=True)
            except (ApiError, UnreachableError):
                return step  # the write itself will say why
        fields = tuple(comparing.changed_paths(comparing.comparable(present[step.key]), comparing.comparable(after)))
        return dataclasses.replace(step, action="update" if fields else "unchanged", fields=fields)

    return list(await asyncio.gather(*(confirm(s) for s in steps)))


# What each step asks of the target's RBAC: an apply that creates is authorized as patch and create.
WRITE_VERBS = {"create": ("create", "patch"), "update": ("patch",), "delete": ("delete",)}


async def refuse_unwritable(target: KubeClient, prepared: Plan, target_name: str) -> None:
    """Before anything is written: every resource to write is served by the target or has its
    CustomResourceDefinition among the rebuilt objects, and the target's credentials may take every
    step (asked as ``kubectl auth can-i`` asks). A rebuild that could only half succeed does not start."""
    crds = {s.key.name for s in prepared.steps if (s.key.group, s.key.resource) == CRDS and s.action != "delete"}
    unserved: set[str] = set()
    needed: set[access.Access] = set()
    for step in prepared.steps:
        key = step.key
        if step.action == "unchanged":
            continue
        if prepared.infos.get(key) is None and f"{key.resource}.{key.group}" not in crds:
            unserved.add(f"{key.resource}.{key.group or 'core'}")
        needed.update(access.Access(verb, key.group, key.resource, key.namespace) for verb in WRITE_VERBS[step.action])
    writes_into = {s.key.namespace for s in prepared.steps if s.key.namespace and s.action in ("create", "update")}
    if writes_into:
        try:
            listed, _ = await target.list_all("/api/v1/namespaces")
        except ApiError as exc:
            if exc.status != 403:
                raise
            listed = None  # cannot tell which namespaces are missing: their creation will say
        if listed is not None and writes_into - {n["metadata"]["name"] for n in listed}:
            needed.add(access.Access("create", "", "namespaces"))
    problems = [f"{r} is not served there and its CustomResourceDefinition is not among the objects rebuilt"
                for r in sorted(unserved)]
    refused = await access.refused(target, needed)
    if refused:
        problems.append("its credentials may not " + ", ".join(map(str, refused)))
    if problems:
        raise RebuildError(f"{target_name} cannot take this rebuild, so nothing was written: " + "; ".join(problems))


async def execute(target: KubeClient, prepared: Plan, *, concurrency: int = 32,
                  progress: Callable[[Outcome], Awaitable[None]] | None = None) -> list[Outcome]:
    """Take the steps, one rank at a time. Returns every step's outcome (``unchanged`` ones too), in
    the order they were taken; ``progress`` hears of each as soon as it is taken."""
    outcomes: list[Outcome] = []
    gate = asyncio.Semaphore(concurrency)
    made: dict[str, asyncio.Task[None]] = {}

    async def one(step: rebuilds.Step) -> None:
        async with gate:
            outcome = await take(step)
        outcomes.append(outcome)
        if progress is not None:
            await progress(outcome)

    async def take(step: rebuilds.Step) -> Outcome:
        try:
            if step.action == "unchanged":
                return Outcome(step, True)
            info = prepared.infos.get(step.key)
            if info is None:
                info = await _resolve_again(target, prepared, step)
            path = info.item(step.key.namespace, step.key.name)
            if step.action == "delete":
                await target.request("DELETE", path, parse=False)
                return Outcome(step, True)
            await _apply(target, path, prepared.bodies[step.key], step, made)
            if (step.key.group, step.key.resource) == CRDS:
                await _established(target, path)
            return Outcome(step, True)
        except (ApiError, UnreachableError, RebuildError, TimeoutError) as exc:
            return Outcome(step, False, str(exc)[:500])

    needed = sorted({s.key.namespace for s in prepared.steps if s.key.namespace and s.action in ("create", "update")})
    await asyncio.gather(*(_namespace_exists(target, ns, made) for ns in needed))
    ranks: dict[int, list[rebuilds.Step]] = {}
    for step in prepared.steps:
        ranks.setdefault(step.rank if step.action != "delete" else 1_000 - step.rank, []).append(step)
    for rank in sorted(ranks):
        await asyncio.gather(*(one(s) for s in ranks[rank]))
    return outcomes


async def _resolve_again(target: KubeClient, prepared: Plan, step: rebuilds.Step) -> ResourceInfo:
    change = prepared.state.changes.get(step.key)
    version = change.version if change else ""
    info = await _info(target, step.key.group, version, step.key.resource)
    if info is None:
        raise RebuildError(f"{step.key.resource}.{step.key.group or 'core'} is not served by the target "
                           f"(its CustomResourceDefinition is neither there nor in the rebuilt state)")
    prepared.infos[step.key] = info
    return info


async def _apply(target: KubeClient, path: str, body: Obj, step: rebuilds.Step,
                 made: dict[str, asyncio.Task[None]]) -> None:
    """Server-side apply; into a namespace the target lacks, once it has been created (one creation
    per namespace, however many objects wait for it)."""
    try:
        await target.apply(path, body, field_manager=ann.FIELD_MANAGER, force=True, parse=False)
    except ApiError as exc:
        namespace = step.key.namespace
        if not (exc.status == 404 and namespace and "namespaces" in exc.message):
            raise
        if namespace not in made:
            made[namespace] = asyncio.ensure_future(_create_namespace(target, namespace))
        await asyncio.shield(made[namespace])
        await target.apply(path, body, field_manager=ann.FIELD_MANAGER, force=True, parse=False)


async def _namespace_exists(target: KubeClient, name: str, made: dict[str, asyncio.Task[None]]) -> None:
    """Before the writes: a namespace the target lacks is created once, up front, instead of each of
    its objects meeting a 404 first (the Namespace object itself, if rebuilt, is applied in its rank)."""
    try:
        await target.get(f"/api/v1/namespaces/{name}")
    except ApiError as exc:
        if not exc.not_found:
            return  # the writes will say what is wrong
        made[name] = asyncio.ensure_future(_create_namespace(target, name))
        with contextlib.suppress(ApiError):
            await made[name]


async def _create_namespace(target: KubeClient, name: str) -> None:
    try:
        await target.request("POST", "/api/v1/namespaces", body={
            "apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
    except ApiError as exc:
        if exc.status != 409:
            raise


async def _established(target: KubeClient, path: str, timeout: float = 30.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        crd = await target.get(path)
        conditions = {c.get("type"): c.get("status") for c in (crd.get("status") or {}).get("conditions") or []}
        if conditions.get("Established") == "True":
            return
        if loop.time() > deadline:
            raise TimeoutError(f"{path} not Established after {timeout:.0f}s")
        await asyncio.sleep(0.2)


# -- around a rebuild: where it writes, what is refused, pausing the plan ---------------------------


def plan_path(namespace: str, name: str) -> str:
    return f"/apis/{API_VERSION}/namespaces/{namespace}/recoveryplans/{name}"


@dataclass(frozen=True)
class Target:
    client: KubeClient
    name: str  # what the output calls it
    live_standby: bool  # the plan's own destination


async def cluster_uid(client: KubeClient) -> str:
    return str((await client.get("/api/v1/namespaces/kube-system"))["metadata"]["uid"])


async def target(own: KubeClient, plan: plans.Plan, cluster: str | None) -> Target:
    if cluster is None:
        if plan.spec.destination_cluster_ref is None:
            return Target(own, "the stand-by (this cluster)", True)
        ref = plan.spec.destination_cluster_ref
        live = True
    else:
        ref = api.ObjectRef(name=cluster, namespace=plan.namespace)
        destination = plan.spec.destination_cluster_ref
        live = destination is not None and destination.name == cluster
    try:
        client = await plans.cluster_client(own, ref, plan.namespace, user_agent="standby-cli")
    except plans.PlanError as exc:
        raise RebuildError(f"{exc.reason}: {exc.message}") from exc
    return Target(client, f"managedcluster {ref.name}", live)


async def refuse_unsafe(own: KubeClient, plan: plans.Plan, where: Target, mode: str) -> None:
    if mode != "Deactivated":
        return
    if await is_source(own, plan, where.client):  # None: the source is gone, so it cannot be the target either
        raise RebuildError(f"{where.name} is the plan's source cluster: a deactivated rebuild there "
                           f"would switch the application off (--active restores into a source)")
    fence = f"/api/v1/namespaces/{settings.NAMESPACE}/configmaps/{ann.fence_name(plan.namespace, plan.name)}"
    try:
        await where.client.get(fence)
    except ApiError as exc:
        if exc.not_found:
            return
        raise
    raise RebuildError(f"{plan.key} has failed over in {where.name} (its copies run): a deactivated rebuild "
                              f"would switch them off; rebuild into another cluster, or --active")


async def is_source(own: KubeClient, plan: plans.Plan, client: KubeClient) -> bool | None:
    """Whether ``client`` reaches the plan's source cluster (the same kube-system namespace uid,
    whatever the ManagedCluster is called); None when the source cannot be reached to tell."""
    try:
        source = await plans.cluster_client(own, plan.spec.source_cluster_ref, plan.namespace, user_agent="standby-cli")
    except plans.PlanError:
        return None
    try:
        return await cluster_uid(source) == await cluster_uid(client)
    except (ApiError, UnreachableError):
        return None
    finally:
        await source.close()


async def refuse_foreign_source(own: KubeClient, plan: plans.Plan, client: KubeClient) -> None:
    """A restore writes into the plan's source and nowhere else: the cluster ``client`` reaches (the
    caller's own write credentials) must be the one the plan's source ManagedCluster names. Written
    into the stand-by, the originals would run beside the copies (a failover does that, in order);
    into any other cluster, ``rebuild --active``."""
    same = await is_source(own, plan, client)
    ref = plan.spec.source_cluster_ref.name
    if same is None:
        raise RebuildError(f"the source of {plan.key} cannot be confirmed: a restore writes only into the plan's "
                           f"source, reachable through managedcluster {ref} (and by the given kubeconfig)")
    if not same:
        raise RebuildError(f"the given kubeconfig reaches another cluster than the source of {plan.key} "
                           f"(managedcluster {ref}); into another cluster: "
                           f"standby rebuild {plan.name} --active --target-cluster NAME")


async def set_suspended(own: KubeClient, plan: plans.Plan, suspend: bool) -> None:
    await own.request("PATCH", plan_path(plan.namespace, plan.name),
                      body={"spec": {"suspend": suspend}}, content_type="application/merge-patch+json")


async def wait_suspended(own: KubeClient, plan: plans.Plan, timeout: float = 30.0) -> None:
    """Until the plan's status says Suspended (the watcher's answer), and a moment for the syncer,
    which reads the same change of the plan."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        obj = await own.get(plan_path(plan.namespace, plan.name))
        if (obj.get("status") or {}).get("phase") == "Suspended":
            await asyncio.sleep(1.0)
            return
        await asyncio.sleep(0.5)
    raise RebuildError(f"{plan.key} did not report Suspended within {timeout:.0f}s; nothing was written")


def counts(outcomes: list[Outcome]) -> Mapping[str, int]:
    done = rebuilds.summary(o.step for o in outcomes if o.ok)
    return {**done, "failed": sum(1 for o in outcomes if not o.ok)}


@dataclass
class Done:
    """What a rebuild did (or, for a dry run, would do)."""

    state: State
    prepared: Plan
    target: str
    outcomes: list[Outcome] | None = None  # None: a dry run
    left_suspended: bool = False  # the plan was paused and stays so (a rebuild of the live stand-by as of the past)


async def rebuild(own: KubeClient, js: JetStreamContext, keys: StreamKeys, req: Request, *,
                  target_cluster: str | None = None, dry_run: bool = False,
                  say: Callable[[str], Awaitable[None]] | None = None,
                  step_done: Callable[[Outcome, int, int], Awaitable[None]] | None = None,
                  was_paused: bool = False) -> Done:
    """A whole rebuild, as the command (``--direct``) and the operator (a Rebuild) run it.
    ``was_paused``: an earlier, interrupted run of the same rebuild paused the plan."""

    async def told(text: str) -> None:
        if say is not None:
            await say(text)

    where = await target(own, req.plan, target_cluster)
    try:
        await refuse_unsafe(own, req.plan, where, req.mode)
        state = await read_state(js, keys, req)
        prepared = await prepare(where.client, state, req)
        await refuse_unwritable(where.client, prepared, where.name)
        earliest = history.rfc3339(state.earliest) if state.earliest is not None else "-"
        await told(f"{req.plan.key} as of {history.rfc3339(state.at)} (earliest available {earliest}): "
                   f"{len(state.changes)} objects into {where.name}, {req.mode.lower()}")
        if dry_run:
            return Done(state, prepared, where.name)
        pause = (where.live_standby and req.plan_in_cluster and req.mode == "Deactivated"
                 and (was_paused or not req.plan.spec.suspend))
        if pause and not req.plan.spec.suspend:
            await set_suspended(own, req.plan, True)
            await wait_suspended(own, req.plan)
            await told(f"{req.plan.key} paused")
        total, count = len(prepared.steps), 0

        async def progress(outcome: Outcome) -> None:
            nonlocal count
            count += 1
            if step_done is not None:
                await step_done(outcome, count, total)
        outcomes: list[Outcome] = []
        try:
            outcomes = await execute(where.client, prepared, progress=progress)
        finally:
            if pause and req.at is None:
                await set_suspended(own, req.plan, False)
                await told(f"{req.plan.key} resumed")
            elif pause:
                await told(f"{req.plan.key} left suspended at the rebuilt moment: resumed, the syncer would bring "
                           f"the stream's latest state back; fail over, or resume it to follow the source again "
                           f"(kubectl patch rp {req.plan.name} -n {req.plan.namespace} --type merge "
                           f"""-p '{{"spec":{{"suspend":false}}}}')""")
        return Done(state, prepared, where.name, outcomes, left_suspended=pause and req.at is not None)
    finally:
        if where.client is not own:
            await where.client.close()
