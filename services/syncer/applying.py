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
from dataclasses import dataclass, field
from typing import Any

from schemas import annotations as ann
from schemas import transforms
from schemas.api import ResourceSelector
from schemas.envelope import Envelope, EventType
from services.common import plans
from services.common.fencing import FenceCache
from services.common.kube import METADATA_LIST, METADATA_ONLY, ApiError, KubeClient, ResourceInfo, UnreachableError
from services.common.plans import Plan
from services.syncer import metrics
from services.syncer.outcomes import Done, PermanentError, TemporaryError
from services.syncer.settings import SyncerSettings

log = logging.getLogger(__name__)
Op = dict[str, Any]
CRDS = ("apiextensions.k8s.io", "customresourcedefinitions")


@dataclass(frozen=True, slots=True)
class Copy:
    """What the destination copy records (kept in memory after the first read or write)."""

    resource_version: int | None
    inverse: list[Op] | None
    source_uid: str | None = None


def _rv(value: str | None) -> int | None:
    try:
        return int(value) if value else None
    except ValueError:
        return None


def copy_record(obj: dict[str, Any]) -> Copy | None:
    meta = obj.get("metadata") or {}
    if (meta.get("labels") or {}).get(ann.MANAGED) != ann.MANAGED_VALUE:
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


def _immutable(exc: ApiError) -> bool:
    return exc.status == 422 and "immutable" in exc.message


def classify(exc: ApiError | UnreachableError, ref: str) -> TemporaryError | PermanentError:
    if isinstance(exc, UnreachableError):
        return TemporaryError(f"destination unreachable: {exc}")
    if exc.status == 429:
        return TemporaryError("throttled (429)", delay=exc.retry_after or 1.0)
    if exc.status >= 500 or exc.status in (408, 409):
        return TemporaryError(f"{exc.status} {exc.reason}")
    if exc.status == 403:
        return TemporaryError(f"forbidden: {exc.message}", delay=10.0)
    if exc.status == 404:
        return TemporaryError(f"not served yet: {exc.message}")
    return PermanentError("Invalid" if exc.status == 422 else f"Http{exc.status}", f"{ref}: {exc.message}")


@dataclass
class PlanApplier:
    plan: Plan
    dest: KubeClient
    fences: FenceCache
    settings: SyncerSettings
    cache: dict[str, Copy] = field(default_factory=dict)
    warmed: set[tuple[str, str]] = field(default_factory=set)
    namespaces_made: dict[str, float] = field(default_factory=dict)  # name -> when created
    namespace_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    deletes: collections.deque[float] = field(default_factory=collections.deque)
    breaker_open: bool = False
    breaker_opened_at: str | None = None
    breaker_reset_seen: str | None = None  # the reset annotation when it opened; a new value closes it
    breaker_quiet_until: float = 0.0  # after a reset: the held deletions go through
    last_applied_at: float = 0.0
    last_lag_seconds: float | None = None
    failed: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.patches = {(r.group, r.resource): [op.as_operation() for op in r.transformation.patch]
                        for r in self.plan.spec.resources}
        self.recovery = {(r.group, r.resource): (tuple(op.as_operation() for op in r.recovery_process.from_patch),
                                                 r.recovery_process.from_original.enabled)
                         for r in self.plan.spec.resources}
        self.recreates = RateLimiter(self.settings.deletes.recreates_per_minute)
        self.reset_token = self.plan.annotations.get(ann.DELETE_BREAKER_RESET)
        recorded = self.plan.delete_breaker
        if recorded is not None and recorded.open:  # opened before this syncer (re)started
            self.breaker_open, self.breaker_opened_at = True, recorded.opened_at
            self.breaker_reset_seen = recorded.reset_seen
            metrics.breaker(self.plan.key, True)
            self.acknowledge(self.reset_token)

    # -- warm-up: one LIST per resource (per named namespace) instead of one GET per object ------
    async def warm(self) -> None:
        await asyncio.gather(*(self._warm(r) for r in self.plan.spec.resources))

    async def _warm(self, r: ResourceSelector) -> None:
        try:
            info = await self.dest.resolve(r.group, r.version, r.resource)
            scopes = r.filters.namespaces if info.namespaced and r.filters.namespaces else [""]
            # What a copy records (source version, uid, inverse) is all in its metadata.
            lists = await asyncio.gather(*(self.dest.list_all(info.collection(scope),
                                                              label_selector=f"{ann.MANAGED}=true",
                                                              accept=METADATA_LIST)
                                           for scope in scopes))
        except (ApiError, UnreachableError):
            return  # not served yet: objects of this resource are read one by one
        for items, _ in lists:
            for obj in items:
                meta = obj["metadata"]
                if (meta.get("annotations") or {}).get(ann.PLAN) != self.plan.key:
                    continue
                record = copy_record(obj)
                if record is not None:
                    self.cache[info.item(meta.get("namespace", ""), meta["name"])] = record
        self.warmed.add((r.group, r.resource))

    async def existing(self, info: ResourceInfo, env: Envelope, path: str) -> Copy | None:
        if path in self.cache:
            return self.cache[path]
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
        if env.type is EventType.DELETE:
            return await self._delete(env, info, path, current, incoming)
        return await self._upsert(env, info, path, current, sequence)

    async def _upsert(self, env: Envelope, info: ResourceInfo, path: str, current: Copy | None,
                      sequence: int) -> Done:
        if env.body is None:
            raise PermanentError("EmptyBody", f"{env.ref}: UPSERT without a body")
        from_patch, from_original = self.recovery.get((info.group, info.resource), ((), False))
        provenance = transforms.Provenance(self.plan.namespace, self.plan.name, env.epoch, env.source_uid,
                                           env.source_resource_version, sequence, from_patch, from_original)
        # What the copy remembers belongs to the object it was made from; a re-created source object
        # (new uid) starts afresh.
        same_object = current is not None and current.source_uid in (None, env.source_uid)
        try:
            body = transforms.deactivate(env.body, provenance,
                                         plan_patch=self.patches.get((info.group, info.resource), ()),
                                         previous_inverse=current.inverse if current and same_object else None)
        except transforms.PatchError as exc:
            raise PermanentError("PlanPatchDoesNotApply", f"{env.ref}: {exc}") from exc
        body["apiVersion"], body["kind"] = info.api_version, info.kind
        started = time.monotonic()
        try:
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
        self.cache[path] = Copy(_rv(env.source_resource_version), transforms.inverse_of(body), env.source_uid)
        self.failed.discard(path)
        self._applied(env)
        return Done("applied")

    async def _apply(self, env: Envelope, info: ResourceInfo, path: str, body: dict[str, Any]) -> None:
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
            await self.dest.delete(path, uid=old["metadata"]["uid"])
            await self._gone(path, old["metadata"]["uid"])
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
                self.cache.pop(path, None)
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
            await self.dest.delete(path, uid=obj["metadata"].get("uid"))
        except ApiError as exc:
            if not exc.not_found:
                raise classify(exc, str(env.ref)) from exc
        except UnreachableError as exc:
            raise classify(exc, str(env.ref)) from exc
        self.cache.pop(path, None)
        self.failed.discard(path)
        self._applied(env)
        return Done("deleted")

    def acknowledge(self, reset_token: str | None) -> None:
        """The plan's reset annotation as last read: a value other than the one the breaker opened
        under closes it, and it stays quiet for one window so the deletions it held go through."""
        self.reset_token = reset_token
        if self.breaker_open and reset_token != self.breaker_reset_seen:
            self.breaker_open, self.breaker_opened_at, self.breaker_reset_seen = False, None, None
            self.deletes.clear()
            self.breaker_quiet_until = time.monotonic() + self.settings.deletes.breaker_window_seconds
            metrics.breaker(self.plan.key, False)
            log.warning("delete circuit breaker reset by the operator (%s=%s); held deletions go through",
                        ann.DELETE_BREAKER_RESET, reset_token, extra={"plan": self.plan.key})

    def _check_breaker(self) -> None:
        """Open once deletions in the window reach the limit, and stay open (across restarts: it is
        recorded in the plan's status) until an operator resets it."""
        window = self.settings.deletes.breaker_window_seconds
        if self.breaker_open:
            raise TemporaryError(f"mass deletion refused by the circuit breaker (reset: annotate the plan "
                                 f"{ann.DELETE_BREAKER_RESET}=<new value>)", delay=window / 4)
        now = time.monotonic()
        while self.deletes and now - self.deletes[0] > window:
            self.deletes.popleft()
        limit = max(self.settings.deletes.breaker_min_deletes,
                    int(self.settings.deletes.breaker_share * max(len(self.cache), 1)))
        if len(self.deletes) >= limit and now >= self.breaker_quiet_until:
            self.breaker_open, self.breaker_opened_at = True, plans.now_iso()
            self.breaker_reset_seen = self.reset_token
            metrics.breaker(self.plan.key, True)
            log.warning("delete circuit breaker OPEN (%d deletes in %.0fs, limit %d); no copy is deleted until "
                        "an operator sets %s on the plan to a new value", len(self.deletes), window, limit,
                        ann.DELETE_BREAKER_RESET, extra={"plan": self.plan.key})
            raise TemporaryError("mass deletion refused by the circuit breaker", delay=window / 4)
        # Counted now, not when the delete returns: workers deleting in parallel must not all pass
        # the check before any of them is counted.
        self.deletes.append(now)

    def _applied(self, env: Envelope) -> None:
        self.last_applied_at = time.time()
        self.last_lag_seconds = max(0.0, self.last_applied_at - env.observed_at)
        metrics.lag(self.plan.key, self.last_lag_seconds)
