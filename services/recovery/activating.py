"""Find a plan's copies in the destination and switch each one on.

Everything needed is on the copies themselves: the plan name, the exact inverse of deactivation,
the plan's ``fromPatch`` and whether to restore the original from the stream. Activation is one
JSON patch per copy that undoes the deactivation, removes the bookkeeping and hands the object
over (:data:`HAND_OVER`); for ``fromOriginal``, a server-side apply of the original under the
syncer's field manager, so the bookkeeping it owned disappears in the same write, and then the
hand-over. Activated objects no longer carry the managed label: a re-run finds nothing left to do."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import jsonpatch

from schemas import annotations as ann
from schemas import api, codec, kinds, ordering, restoring, sanitizing, sealing, subjects, transforms
from schemas.envelope import Envelope
from services.common.copies import copy_pages
from services.common.keys import StreamKeys
from services.common.kube import METADATA_LIST, METADATA_ONLY, ApiError, KubeClient, ResourceInfo, UnreachableError

log = logging.getLogger(__name__)
Obj = dict[str, Any]
# Copies are listed in pages of 500 (1,000 Deployments' metadata, managedFields included, are
# 2.5 MB), the first of 100: it arrives sooner, keeps every activation slot busy at once, and the
# next page is there before it is switched on.
LIST_PAGE_SIZE = 500
FIRST_PAGE_SIZE = 100


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


class Listing:
    """The copies of some plans among ``resources`` (see :func:`listable_resources`), listed in the
    background, every kind at once (the lowest ranks asked first), page by page: a failover switches
    on the first page of the lowest-ranked kinds while the others are still being listed
    (:meth:`pages`), instead of waiting for every LIST (in a stand-by of 1,000 Deployments, the LIST
    of their copies alone took as long as a tenth of their activation). A kind the API server
    refuses to list is skipped and logged (its copies stay off); any other failure (an unreachable
    API server) ends the listing with that error.

    ``metadata_only``: the copies' metadata, which is all an activation reads (the inverse, the
    plan's fromPatch and fromOriginal are annotations): less for the server to encode and for us
    to decode than whole objects (a dry run compares whole objects)."""

    def __init__(self, client: KubeClient, plans: set[str], resources: list[ResourceInfo], *,
                 metadata_only: bool = False, page_size: int = LIST_PAGE_SIZE,
                 first_page_size: int = FIRST_PAGE_SIZE) -> None:
        self._client = client
        self._plans = plans
        self._resources = sorted(resources, key=_rank)
        self._accept = METADATA_LIST if metadata_only else None
        self._page_size, self._first_page_size = page_size, first_page_size
        self._pages: dict[int, list[list[Target]]] = {}
        self._open: dict[int, int] = {}  # LISTs still running, per rank
        self._error: Exception | None = None
        self._changed = asyncio.Condition()
        self._tasks: list[asyncio.Task[None]] = []
        self.found: collections.Counter[str] = collections.Counter()  # copies so far, per plan
        self.seconds = 0.0  # from the start until every LIST had ended
        self.first_seconds: float | None = None  # from the start until the first copies were found
        self._started = 0.0

    @property
    def ranks(self) -> list[int]:
        """The ranks of every kind listed, lowest first: each is switched on before the next."""
        return sorted({_rank(r) for r in self._resources})

    async def __aenter__(self) -> Listing:
        self._started = time.monotonic()
        selectors = ann.copies_selectors(self._plans) if self._plans else ()
        for info in self._resources:
            for selector in selectors:
                rank = _rank(info)
                self._open[rank] = self._open.get(rank, 0) + 1
                self._tasks.append(asyncio.create_task(self._list(info, selector, rank)))
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _list(self, info: ResourceInfo, selector: str, rank: int) -> None:
        try:
            async for page in copy_pages(self._client, info.collection(), selector, self._plans,
                                         accept=self._accept, page_size=self._page_size,
                                         first_page_size=self._first_page_size):
                if page:
                    targets = [Target(info, {**obj, "apiVersion": info.api_version, "kind": info.kind}) for obj in page]
                    self.found.update(t.plan for t in targets)
                    await self._publish(rank, targets)
        except ApiError as exc:
            log.warning("cannot list the copies of %s (%s): none of them is activated", info.collection(), exc)
        except Exception as exc:  # unreachable, or unforeseen: every pages() raises it, and the job fails with it
            self._error = exc
        finally:
            await self._publish(rank, None)

    async def _publish(self, rank: int, targets: list[Target] | None) -> None:
        async with self._changed:
            if targets is None:
                self._open[rank] -= 1
                if not any(self._open.values()):
                    self.seconds = time.monotonic() - self._started
            else:
                self._pages.setdefault(rank, []).append(targets)
                if self.first_seconds is None:
                    self.first_seconds = time.monotonic() - self._started
            self._changed.notify_all()

    async def pages(self, rank: int) -> AsyncIterator[list[Target]]:
        """The copies of the kinds of ``rank``, a page at a time as they arrive, until every LIST of
        those kinds has ended; again from the first page on each call (a job's waves each take theirs)."""
        seen = 0
        while arrived := await self._after(rank, seen):
            for page in arrived:
                yield page
            seen += len(arrived)

    async def _after(self, rank: int, seen: int) -> list[list[Target]]:
        """The pages of ``rank`` after the first ``seen``, once there are any; none once its LISTs ended."""
        async with self._changed:
            await self._changed.wait_for(lambda: self._error is not None or seen < len(self._pages.get(rank, ()))
                                         or not self._open.get(rank))
            if self._error is not None:
                raise self._error
            return self._pages.get(rank, [])[seen:]


def _rank(info: ResourceInfo) -> int:
    return ordering.rank(info.group, info.kind)


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


# Activation hands the object over, and with the bookkeeping goes the syncer's record of owning
# every field it wrote (managedFields): the syncer never writes the object again (the fence, and no
# managed label), and its original in the source carried no such record (sanitized). ``[{}]`` is
# Kubernetes' documented way to strip them ("Clearing managedFields", server-side apply). They are
# also most of the API server's work on the write: tracking the fields it changes, and converting
# the object for the fence policy; without them 1,000 activations cost it 0.52-0.87x the CPU
# (docs/benchmarks.md, "Patches").
HAND_OVER: transforms.Op = {"op": "add", "path": "/metadata/managedFields", "value": [{}]}


def operations(copy_obj: Obj) -> list[transforms.Op]:
    """The JSON patch that switches ``copy_obj`` on and hands it over."""
    return [*transforms.activation_patch(copy_obj), HAND_OVER]


async def _hand_over(client: KubeClient, path: str, params: dict[str, str]) -> str:
    """:data:`HAND_OVER` on its own, after a ``fromOriginal``'s apply (an apply cannot strip
    managedFields). The object is on either way: a failure here is a note, not a failed activation."""
    try:
        await client.request("PATCH", path, params=params, body=[HAND_OVER], content_type="application/json-patch+json",
                             parse=False, accept=METADATA_ONLY)
    except (ApiError, UnreachableError) as exc:
        log.warning("activated %s, but could not hand it over: %s", path, exc)
        return f"not handed over: the syncer's field manager still owns its fields ({exc})"
    return f"{HAND_OVER['op']} {HAND_OVER['path']}"


async def activate_one(client: KubeClient, target: Target, *, dry_run: bool, stream: StreamReader) -> Result:
    """Switch one copy on: a JSON patch of exactly what deactivation recorded, handing the object
    over (:data:`HAND_OVER`), or, for ``fromOriginal``, a server-side apply of the original from
    the stream, then the hand-over. ``dry_run`` asks the server what would change and changes nothing."""
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
            if not dry_run:
                changes += (await _hand_over(client, path, params),)
        else:
            ops = operations(obj)
            result = await client.request("PATCH", path, params=params, body=ops,
                                          content_type="application/json-patch+json", parse=dry_run,
                                          accept=None if dry_run else METADATA_ONLY)
            changes = tuple(f"{op['op']} {op['path']}" for op in ops)
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
