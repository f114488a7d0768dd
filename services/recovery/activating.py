"""Find a plan's copies in the destination and switch each one on.

Everything needed is on the copies themselves: the plan name, the exact inverse of deactivation,
the plan's ``fromPatch`` and whether to restore the original from the stream. Activation is a
server-side apply under the syncer's field manager, so the bookkeeping annotations the syncer
owned disappear in the same write. Activated objects no longer carry the managed label: a re-run
finds nothing left to do."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from typing import Any

import jsonpatch

from schemas import annotations as ann
from schemas import api, codec, kinds, ordering, restoring, sanitizing, sealing, subjects, transforms
from schemas.envelope import Envelope
from services.common.copies import list_copies
from services.common.keys import StreamKeys
from services.common.kube import METADATA_LIST, METADATA_ONLY, ApiError, KubeClient, ResourceInfo, UnreachableError

log = logging.getLogger(__name__)
Obj = dict[str, Any]
# Copies are listed in few large pages: the first page of a LIST is served from the API server's
# watch cache, continuations may be read from etcd, and in a failover every second counts.
LIST_PAGE_SIZE = 5000


@dataclass(frozen=True)
class Target:
    info: ResourceInfo
    obj: Obj

    @property
    def plan(self) -> str:
        return str(self.obj["metadata"]["annotations"][ann.PLAN])

    @property
    def ref(self) -> str:
        meta = self.obj["metadata"]
        where = f"{meta['namespace']}/" if meta.get("namespace") else ""
        return f"{self.info.resource}.{self.info.group or 'core'}/{where}{meta['name']}"

    @property
    def rank(self) -> int:
        return ordering.rank(self.info.group, self.info.kind)


@dataclass(frozen=True)
class Result:
    outcome: api.ObjectOutcome
    reason: str = ""
    changes: tuple[str, ...] = ()


async def listable_resources(client: KubeClient) -> list[ResourceInfo]:
    """Every resource the destination serves that can be listed and patched (preferred versions),
    but the kinds never copied (Pods, Events, Leases...: often the most numerous objects there)."""
    out: list[ResourceInfo] = []
    core = await client.get("/api/v1")
    groups = (await client.get("/apis")).get("groups") or []
    docs: list[tuple[str, str, Obj]] = [("", "v1", core)]
    fetched = await asyncio.gather(*(client.get(f"/apis/{g['preferredVersion']['groupVersion']}") for g in groups),
                                   return_exceptions=True)
    for g, doc in zip(groups, fetched, strict=True):
        if isinstance(doc, dict):
            docs.append((g["name"], g["preferredVersion"]["version"], doc))
    for group, version, doc in docs:
        for r in doc.get("resources") or []:
            verbs = set(r.get("verbs") or [])
            if "/" in r["name"] or not {"list", "patch"} <= verbs or kinds.never_copied(group, r["kind"]):
                continue
            out.append(ResourceInfo(group, version, r["name"], r["kind"], bool(r.get("namespaced"))))
    return out


async def find_copies(client: KubeClient, plans: set[str], resources: list[ResourceInfo], *,
                      metadata_only: bool = False) -> list[Target]:
    """Every copy of ``plans`` among ``resources`` (see :func:`listable_resources`), in priority order.
    ``metadata_only``: the copies' metadata, which is all an activation reads (the inverse, the
    plan's fromPatch and fromOriginal are annotations): less for the server to encode and for us
    to decode than whole objects (a dry run compares whole objects)."""
    async def one(info: ResourceInfo) -> list[Target]:
        try:
            items = await list_copies(client, info.collection(), plans, page_size=LIST_PAGE_SIZE,
                                      accept=METADATA_LIST if metadata_only else None)
        except ApiError:
            return []
        return [Target(info, {**obj, "apiVersion": info.api_version, "kind": info.kind}) for obj in items]

    found = await asyncio.gather(*(one(r) for r in resources))
    targets = [t for batch in found for t in batch]
    return sorted(targets, key=lambda t: (t.rank, t.ref))


def _changes(before: Obj, after: Obj) -> tuple[str, ...]:
    ops = jsonpatch.make_patch(sanitizing.strip_server_fields(before), sanitizing.strip_server_fields(after))
    return tuple(f"{op['op']} {op['path']}" for op in ops)[:20]


class StreamReader:
    """Reads originals for ``fromOriginal``; says clearly when the stream cannot be reached.
    ``configured``: a broker is configured, whose connection :meth:`use` gives once it is made (a
    read waits up to ``connect_wait_seconds`` for it)."""

    def __init__(self, js: Any | None, prefix: str, keys: StreamKeys, *, configured: bool = False,
                 connect_wait_seconds: float = 5.0) -> None:
        self.js = js
        self.prefix = prefix
        self.keys = keys
        self.configured = configured
        self.connect_wait_seconds = connect_wait_seconds
        self._connected = asyncio.Event()
        if js is not None:
            self._connected.set()

    def use(self, js: Any | None) -> None:
        """The broker connection from now on (None: lost)."""
        self.js = js
        if js is None:
            self._connected.clear()
        else:
            self._connected.set()

    async def last_change(self, target: Target) -> Envelope:
        if self.js is None and self.configured:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._connected.wait(), self.connect_wait_seconds)
        if self.js is None:
            raise LookupError("fromOriginal needs the stream, and recovery has no broker connection ("
                              + ("it cannot be reached" if self.configured else "none is configured") + ")")
        plan_ns, plan_name = target.plan.split("/", 1)
        meta = target.obj["metadata"]
        subject = subjects.object_subject(prefix=self.prefix, plan_namespace=plan_ns, plan_name=plan_name,
                                          group=target.info.group, version=target.info.version,
                                          resource=target.info.resource, namespace=meta.get("namespace", ""),
                                          name=meta["name"])
        try:
            msg = await asyncio.wait_for(self.js.get_last_msg(subjects.stream_name(plan_ns, plan_name), subject), 5)
        except Exception as exc:
            raise LookupError(f"the stream is unreachable for fromOriginal: {exc!r}") from exc
        try:
            env = await self.keys.decode(msg.data)
        except sealing.UnknownKeyError as exc:
            raise LookupError(f"the original in the stream is sealed with a key recovery cannot read: {exc}") from exc
        except codec.DecodeError as exc:
            raise LookupError(f"the stream's last state of this object cannot be read: {exc}") from exc
        return env


async def activate_one(client: KubeClient, target: Target, *, dry_run: bool, stream: StreamReader) -> Result:
    """Switch one copy on: a JSON patch of exactly what deactivation recorded (or, for
    ``fromOriginal``, a server-side apply of the original from the stream). ``dry_run`` asks the
    server what would change and changes nothing."""
    obj = target.obj
    meta = obj["metadata"]
    path = target.info.item(meta.get("namespace", ""), meta["name"])
    params = {"fieldManager": "standby-recovery"} | ({"dryRun": "All"} if dry_run else {})
    try:
        if transforms.wants_original(obj):
            body = restoring.object_to_write(await stream.last_change(target), target.info.api_version,
                                             target.info.kind, restoring.Active(transforms.stamped_from_patch(obj)))
            result = await client.apply(path, body, field_manager=ann.FIELD_MANAGER, dry_run=dry_run, parse=dry_run)
            changes: tuple[str, ...] = ("restored the original from the stream",)
        else:
            operations = transforms.activation_patch(obj)
            result = await client.request("PATCH", path, params=params, body=operations,
                                          content_type="application/json-patch+json", parse=dry_run,
                                          accept=None if dry_run else METADATA_ONLY)
            changes = tuple(f"{op['op']} {op['path']}" for op in operations)
    except (transforms.PatchError, ValueError, LookupError, ApiError, UnreachableError) as exc:
        return Result("Failed", str(exc))
    if dry_run:  # exactly what the server says would change
        would = _changes(obj, result)
        return Result("WouldChange" if would else "Unchanged", changes=would)
    return Result("Activated", changes=changes[:20])


async def wait_ready(client: KubeClient, targets: list[Target], *, timeout: float, poll: float) -> list[str]:
    """Wait until every gated workload is ready; returns the refs still not ready at the deadline."""
    readiness = {t.ref: rules.ready for t in targets
                 if (rules := kinds.RULES.get((t.info.group, t.info.kind), kinds.GENERIC)).ready is not None}
    gated = [t for t in targets if t.ref in readiness]
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    pending = {t.ref: t for t in gated}
    while pending:
        for ref, t in list(pending.items()):
            meta = t.obj["metadata"]
            try:
                current = await client.get(t.info.item(meta.get("namespace", ""), meta["name"]))
            except (ApiError, UnreachableError):
                continue
            if readiness[ref](current):
                del pending[ref]
        if not pending or loop.time() > deadline:
            break
        await asyncio.sleep(poll)
    return sorted(pending)
