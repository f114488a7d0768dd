"""Turn one stream message into the destination's state for one object.

UPSERT: fence check, staleness check against what the copy records, deactivate (with what the
copy remembers), server-side apply under one field manager. DELETE: only copies Standby made, 404
is done, and a circuit breaker refuses mass deletion. Errors are classified into
:class:`TemporaryError` and :class:`PermanentError`; :mod:`services.syncer.consuming` settles them.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from schemas import annotations as ann
from schemas import restoring, transforms
from schemas.api import ResourceSelector
from schemas.envelope import Envelope, EventType
from schemas.subjects import ObjectKey
from services.common import fencing
from services.common.copies import list_copies
from services.common.fencing import FenceCache
from services.common.kube import METADATA_LIST, METADATA_ONLY, ApiError, KubeClient, ResourceInfo, UnreachableError
from services.common.plans import Plan
from services.syncer import metrics
from services.syncer.breaker import BreakerOpen, DeleteBreaker
from services.syncer.outcomes import Done, PermanentError, TemporaryError
from services.syncer.progress import Copy, PlanProgress
from services.syncer.settings import SyncerSettings

log = logging.getLogger(__name__)
Op = dict[str, Any]
CRDS = ("apiextensions.k8s.io", "customresourcedefinitions")


def _rv(value: str | None) -> int | None:
    try:
        return int(value) if value else None
    except ValueError:
        return None


def copy_record(obj: dict[str, Any]) -> Copy | None:
    meta = obj.get("metadata") or {}
    if not ann.is_managed(meta):
        return None
    annotations = meta.get("annotations") or {}
    try:
        inverse = transforms.inverse_of(obj)
    except ValueError:
        inverse = None
    return Copy(_rv(annotations.get(ann.SOURCE_RESOURCE_VERSION)), inverse, annotations.get(ann.SOURCE_UID))


class RateLimiter:
    def __init__(self, per_minute: int) -> None:
        self.per_minute = per_minute
        self.times: collections.deque[float] = collections.deque()

    def allow(self) -> bool:
        now = time.monotonic()
        while self.times and now - self.times[0] > 60:
            self.times.popleft()
        if len(self.times) >= self.per_minute:
            return False
        self.times.append(now)
        return True


class Fenced(Exception):
    """The plan was fenced (activated) while this message was handled: nothing more is written."""


def _immutable(exc: ApiError) -> bool:
    return exc.status == 422 and "immutable" in exc.message


def classify(exc: ApiError | UnreachableError, ref: str) -> TemporaryError | PermanentError | Fenced:
    if isinstance(exc, UnreachableError):
        return TemporaryError(f"destination unreachable: {exc}")
    if fencing.refused_by_fence(exc):  # the API server enforces a fence the view has not shown yet
        return Fenced(exc.message)
    if exc.status == 429:
        return TemporaryError("throttled (429)", delay=exc.retry_after or 1.0)
    if exc.status >= 500 or exc.status in (408, 409):
        return TemporaryError(f"{exc.status} {exc.reason}")
    if exc.status in (401, 403):  # credentials or rights: fixed outside, never the message's fault
        return TemporaryError(f"{'unauthorized' if exc.status == 401 else 'forbidden'}: {exc.message}", delay=10.0)
    if exc.status == 404:
        return TemporaryError(f"not served yet: {exc.message}")
    return PermanentError("Invalid" if exc.status == 422 else f"Http{exc.status}", f"{ref}: {exc.message}")


@dataclass
class PlanApplier:
    plan: Plan
    dest: KubeClient
    fences: FenceCache
    settings: SyncerSettings
    progress: PlanProgress = field(default_factory=PlanProgress)
    warmed: set[tuple[str, str]] = field(default_factory=set)
    namespaces_made: dict[str, float] = field(default_factory=dict)  # name -> when created
    namespaces_seen: set[str] = field(default_factory=set)  # known to exist in the destination
    namespace_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    serving: Callable[[], bool] = lambda: True  # this replica holds the plan's Lease (services.common.leasing)

    def __post_init__(self) -> None:
        self.writing = restoring.writing(self.plan.spec)
        self.recreates = RateLimiter(self.settings.deletes.recreates_per_minute)
        d = self.settings.deletes
        self.breaker = DeleteBreaker.restored(
            self.plan.delete_breaker, window_seconds=d.breaker_window_seconds, min_deletes=d.breaker_min_deletes,
            share=d.breaker_share, reset_token=self.plan.annotations.get(ann.DELETE_BREAKER_RESET))
        metrics.breaker(self.plan.key, self.breaker.open)

    # -- warm-up: one LIST per resource (per named namespace) instead of one GET per object ------
    async def warm(self) -> None:
        await asyncio.gather(*(self._warm(r) for r in self.plan.spec.resources))

    async def _warm(self, r: ResourceSelector) -> None:
        try:
            info = await self.dest.resolve(r.group, r.version, r.resource)
            copies = await self.copies(info, r.filters.namespaces)
        except (ApiError, UnreachableError):
            return  # not served yet: objects of this resource are read one by one
        for key, obj in copies.items():
            record = copy_record(obj)
            if record is not None:
                self.progress.copies[key] = record
        self.warmed.add((r.group, r.resource))

    async def copies(self, info: ResourceInfo, namespaces: list[str]) -> dict[ObjectKey, dict[str, Any]]:
        """This plan's copies of one resource in the destination, metadata only (what a copy
        records: source version, uid, inverse, and who set which field), one LIST per scope."""
        scopes = namespaces if info.namespaced and namespaces else [""]
        lists = await asyncio.gather(*(list_copies(self.dest, info.collection(scope), {self.plan.key},
                                                          accept=METADATA_LIST) for scope in scopes))
        return {ObjectKey(info.group, info.resource, obj["metadata"].get("namespace", ""), obj["metadata"]["name"]): obj
                for items in lists for obj in items}

    async def existing(self, info: ResourceInfo, env: Envelope, path: str) -> Copy | None:
        known = self.progress.copies.get(env.ref.key)
        if known is not None:
            return known
        if (info.group, info.resource) in self.warmed:
            return None
        try:
            return copy_record(await self.dest.request("GET", path, accept=METADATA_ONLY))
        except ApiError as exc:
            if exc.not_found:
                return None
            raise classify(exc, str(env.ref)) from exc
        except UnreachableError as exc:
            raise classify(exc, str(env.ref)) from exc

    # -- one message ----------------------------------------------------------------------------
    async def handle(self, env: Envelope, sequence: int) -> Done:
        if env.plan_namespace != self.plan.namespace or env.plan_name != self.plan.name:
            raise PermanentError("WrongPlan", f"message for {env.plan_namespace}/{env.plan_name} in {self.plan.key}")
        if self.fences.fenced(self.plan.key) is not None:
            return Done("skipped_fenced")
        r = env.ref
        info = ResourceInfo(r.group, r.version, r.resource, r.kind, bool(r.namespace))
        path = info.item(r.namespace, r.name)
        current = await self.existing(info, env, path)
        incoming = _rv(env.source_resource_version)
        if current is not None and current.resource_version is not None and incoming is not None \
                and incoming <= current.resource_version and env.type is EventType.UPSERT:
            return Done("skipped_stale")
        try:
            if env.type is EventType.DELETE:
                return await self._delete(env, info, path, current, incoming)
            return await self._upsert(env, info, path, current, sequence)
        except Fenced:
            return Done("skipped_fenced")

    async def rewrite(self, env: Envelope, sequence: int) -> Done:
        """Write the copy again from ``env``, whatever the copy records (drift repair: it was
        deleted or edited by someone else). Fenced plans are left alone, as always."""
        r = env.ref
        info = ResourceInfo(r.group, r.version, r.resource, r.kind, bool(r.namespace))
        try:
            return await self._upsert(env, info, info.item(r.namespace, r.name), self.progress.copies.get(r.key),
                                      sequence)
        except Fenced:
            return Done("skipped_fenced")

    async def _writable(self) -> None:
        """Right before every write: the fences must be known (read within ``max_age_seconds``) and
        not fence this plan. Fail closed: while they cannot be read, nothing is written (the write
        waits for the next read, at most twice the bound, then the message is retried later)."""
        if not await self.fences.fresh_view(timeout=2 * self.fences.max_age_seconds):
            metrics.fence_unknown(self.plan.key)
            raise TemporaryError("the fences in the destination cannot be read; waiting",
                                 delay=2 * self.fences.refresh_seconds)
        if self.fences.fenced(self.plan.key) is not None:
            raise Fenced
        if not self.serving():  # another replica may take the plan over: it writes from now on
            raise TemporaryError("this replica no longer holds the plan's lease", delay=1.0)

    async def _upsert(self, env: Envelope, info: ResourceInfo, path: str, current: Copy | None,
                      sequence: int) -> Done:
        if env.body is None:
            raise PermanentError("EmptyBody", f"{env.ref}: UPSERT without a body")
        # What the copy remembers belongs to the object it was made from; a re-created source object
        # (new uid) starts afresh.
        same_object = current is not None and current.source_uid in (None, env.source_uid)
        how = restoring.deactivated(env, sequence, self.writing.get((info.group, info.resource),
                                                                    restoring.ResourceWriting()),
                                    plan_namespace=self.plan.namespace, plan_name=self.plan.name,
                                    previous_inverse=current.inverse if current and same_object else None)
        try:
            body = restoring.object_to_write(env, info.api_version, info.kind, how)
        except transforms.PatchError as exc:
            raise PermanentError("PlanPatchDoesNotApply", f"{env.ref}: {exc}") from exc
        started = time.monotonic()
        try:
            await self._writable()
            await self._apply(env, info, path, body)
        except ApiError as exc:
            if _immutable(exc):
                await self._recreate(env, info, path, body, current, exc)
            else:
                raise classify(exc, str(env.ref)) from exc
        except UnreachableError as exc:
            raise classify(exc, str(env.ref)) from exc
        if (info.group, info.resource) == CRDS:
            await self._established(env, path)
        metrics.wrote(time.monotonic() - started)
        self._wrote(env, Copy(_rv(env.source_resource_version), transforms.inverse_of(body), env.source_uid))
        return Done("applied")

    async def _apply(self, env: Envelope, info: ResourceInfo, path: str, body: dict[str, Any]) -> None:
        if info.namespaced and self.plan.spec.force_namespace_creation:
            await self._namespace_ready(env.ref.namespace)
        try:
            await self.dest.apply(path, body, field_manager=ann.FIELD_MANAGER, parse=False)
        except ApiError as exc:
            missing_ns = exc.status == 404 and info.namespaced and "namespaces" in exc.message
            if not missing_ns:
                raise
            if not self.plan.spec.force_namespace_creation:
                raise TemporaryError(f"namespace {env.ref.namespace} does not exist in the destination",
                                     delay=5.0) from exc
            await self._ensure_namespace(env.ref.namespace)
            await self.dest.apply(path, body, field_manager=ann.FIELD_MANAGER)

    async def _established(self, env: Envelope, path: str, timeout: float = 30.0) -> None:
        """A CRD counts as applied once it is Established with its names accepted, so its custom
        resources (retried meanwhile as "not served yet") are written to a kind that is served."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                crd = await self.dest.get(path)
            except (ApiError, UnreachableError) as exc:
                raise classify(exc, str(env.ref)) from exc
            conditions = {c.get("type"): c for c in (crd.get("status") or {}).get("conditions") or []}
            names = conditions.get("NamesAccepted") or {}
            if names.get("status") == "False":
                raise PermanentError("NamesNotAccepted", f"{env.ref}: {names.get('message', '')}")
            if (conditions.get("Established") or {}).get("status") == "True" and names.get("status") == "True":
                return
            if time.monotonic() > deadline:
                raise TemporaryError(f"{env.ref}: CRD not Established after {timeout:.0f}s", delay=5.0)
            await asyncio.sleep(0.1)

    async def _namespace_ready(self, name: str) -> None:
        """Before the first write into a namespace: create it if it is missing, once. Otherwise
        every write in flight into a new namespace failed first (20 plans: ~450 refused writes
        and as many again, docs/benchmarks.md "Scale"). A namespace that exists is left as it is."""
        if name in self.namespaces_seen:
            return
        async with self.namespace_lock:
            if name in self.namespaces_seen:
                return
            try:
                await self.dest.request("GET", f"/api/v1/namespaces/{name}", accept=METADATA_ONLY)
            except ApiError as exc:
                if not exc.not_found:
                    raise
                await self._create_namespace(name)
                self.namespaces_made[name] = time.monotonic()
            self.namespaces_seen.add(name)

    async def _ensure_namespace(self, name: str) -> None:
        """Create a missing namespace once for the burst of writes that found it missing (and again
        if it has been deleted since)."""
        async with self.namespace_lock:
            made = self.namespaces_made.get(name)
            if made is None or time.monotonic() - made > 5.0:
                await self._create_namespace(name)
                self.namespaces_made[name] = time.monotonic()

    async def _create_namespace(self, name: str) -> None:
        await self.dest.apply(f"/api/v1/namespaces/{name}", {
            "apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": name, "labels": {ann.MANAGED: ann.MANAGED_VALUE},
                         "annotations": {ann.PLAN: self.plan.key}}}, field_manager=ann.FIELD_MANAGER)

    async def _recreate(self, env: Envelope, info: ResourceInfo, path: str, body: dict[str, Any],
                        current: Copy | None, cause: ApiError) -> None:
        """The destination refused an immutable-field change: delete Standby's copy (uid
        precondition), wait until it is gone, and write it again. Never touches an object Standby did
        not make; a second refusal is permanent."""
        ref = str(env.ref)
        if current is None:
            raise PermanentError("ImmutableFieldConflict",
                                 f"{ref}: {cause.message} (the object was not made by Standby; not deleting it)")
        if not self.recreates.allow():
            raise TemporaryError("immutable-field change: recreate rate limit reached", delay=10.0) from cause
        log.info("immutable field changed; deleting and recreating the copy", extra={"plan": self.plan.key, "ref": ref})
        try:
            old = await self.dest.get(path)
            await self._writable()
            await self.dest.delete(path, uid=old["metadata"]["uid"])
            await self._gone(path, old["metadata"]["uid"])
            await self._writable()
            await self.dest.apply(path, body, field_manager=ann.FIELD_MANAGER, parse=False)
        except ApiError as exc:
            if _immutable(exc):
                raise PermanentError("ImmutableFieldConflict", f"{ref}: {exc.message} (even after recreate)") from exc
            if exc.not_found or exc.status == 409:  # changed under us (uid precondition): start over
                raise TemporaryError(f"recreate: {exc.status} {exc.reason}", delay=1.0) from exc
            raise classify(exc, ref) from exc
        except UnreachableError as exc:
            raise classify(exc, ref) from exc
        metrics.recreated(self.plan.key, info.resource)

    async def _gone(self, path: str, uid: str, timeout: float = 10.0) -> None:
        """Wait until the object with ``uid`` no longer exists (finalizers may hold it a while)."""
        deadline = time.monotonic() + timeout
        delay = 0.05
        while time.monotonic() < deadline:
            try:
                obj = await self.dest.get(path)
            except ApiError as exc:
                if exc.not_found:
                    return
                raise
            if obj["metadata"].get("uid") != uid:
                return
            await asyncio.sleep(delay)
            delay = min(delay * 2, 1.0)
        raise TemporaryError(f"recreate: {path} is still terminating", delay=2.0)

    async def _delete(self, env: Envelope, info: ResourceInfo, path: str, current: Copy | None,
                      incoming: int | None) -> Done:
        try:
            obj = await self.dest.get(path)
        except ApiError as exc:
            if exc.not_found:
                self._wrote(env, None)
                return Done("absent")
            raise classify(exc, str(env.ref)) from exc
        except UnreachableError as exc:
            raise classify(exc, str(env.ref)) from exc
        record = copy_record(obj)
        if record is None:
            return Done("skipped_unmanaged")  # not made by Standby: never ours to delete
        if record.resource_version is not None and incoming is not None and incoming < record.resource_version:
            return Done("skipped_stale")
        self._check_breaker()
        try:
            await self._writable()
            await self.dest.delete(path, uid=obj["metadata"].get("uid"))
        except ApiError as exc:
            if not exc.not_found:
                raise classify(exc, str(env.ref)) from exc
        except UnreachableError as exc:
            raise classify(exc, str(env.ref)) from exc
        self._wrote(env, None)
        return Done("deleted")

    def acknowledge(self, reset_token: str | None) -> None:
        """The plan's reset annotation as last read: a new value closes an open breaker."""
        if self.breaker.acknowledge(reset_token):
            metrics.breaker(self.plan.key, False)
            log.warning("delete circuit breaker reset by the operator (%s=%s); held deletions go through",
                        ann.DELETE_BREAKER_RESET, reset_token, extra={"plan": self.plan.key})

    def _check_breaker(self) -> None:
        try:
            self.breaker.admit(len(self.progress.copies))
        except BreakerOpen as exc:
            if exc.opened_now:
                metrics.breaker(self.plan.key, True)
                log.warning("delete circuit breaker OPEN (%s); no copy is deleted until an operator sets %s on the "
                            "plan to a new value", exc, ann.DELETE_BREAKER_RESET, extra={"plan": self.plan.key})
            raise TemporaryError(f"{exc} by the delete circuit breaker (reset: annotate the plan "
                                 f"{ann.DELETE_BREAKER_RESET}=<new value>)",
                                 delay=self.breaker.window_seconds / 4) from exc

    def _wrote(self, env: Envelope, copy: Copy | None) -> None:
        now = time.time()
        self.progress.wrote(env.ref.key, copy, observed_at=env.observed_at, now=now)
        metrics.lag(self.plan.key, max(0.0, now - env.observed_at))
