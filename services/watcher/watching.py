"""List and watch one resource of one plan in the source; publish what changed.

The loop, and why:

1. a consistent LIST (``resourceVersion`` unset, paginated): never stale, never back in time;
2. compare with the stream's last message per subject: publish what differs, and tombstones for
   objects the stream holds but the source no longer has (deleted while nobody watched). A list
   that failed, was forbidden or came back empty never produces tombstones;
3. WATCH from the list's resourceVersion with bookmarks; ``410 Gone`` means LIST again (never
   resume from an expired version); a broken connection resumes from the last version seen;
4. capped exponential backoff between failures.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from nats.js import JetStreamContext

from schemas import api, kinds, sanitizing, sealing, selection, subjects
from schemas.envelope import Envelope, EventType, ObjectReference
from services.common import kube, streams
from services.common.kube import ApiError, KubeClient, NotServedError, ResourceInfo, UnreachableError
from services.common.plans import Plan
from services.watcher import metrics
from services.watcher.publishing import KeysUnavailableError, Publisher
from services.watcher.settings import WatcherSettings

log = logging.getLogger(__name__)
Obj = dict[str, Any]


class RelistNeeded(Exception):
    def __init__(self, reason: str, *, kind: str = "publish_failed") -> None:
        super().__init__(reason)
        self.reason = reason
        self.kind = kind  # the metric's low-cardinality reason


class NamespaceLabels:
    """Labels of the source's namespaces, for ``namespaceSelector``, kept current by a LIST and a
    WATCH (:meth:`follow`). When a namespace's labels change, every listener is told its name: the
    objects already in it may have entered or left a plan (their watches re-list)."""

    def __init__(self, client: KubeClient, *, backoff_seconds: float = 1.0) -> None:
        self.client = client
        self.labels: dict[str, dict[str, str]] = {}
        self.listeners: list[Callable[[str], None]] = []
        self.listed = asyncio.Event()
        self.backoff_seconds = backoff_seconds

    async def of(self, namespace: str) -> dict[str, str]:
        if namespace not in self.labels:  # newer than the last event seen
            try:
                ns = await self.client.get(f"/api/v1/namespaces/{namespace}")
            except ApiError:
                return {}
            self._seen(namespace, ns["metadata"].get("labels") or {})
        return self.labels[namespace]

    def _seen(self, namespace: str, labels: dict[str, str]) -> None:
        before = self.labels.get(namespace)
        self.labels[namespace] = labels
        if before is not None and before != labels:
            log.info("namespace %s labels changed; re-evaluating namespaceSelector", namespace)
            for listener in self.listeners:
                listener(namespace)

    async def follow(self) -> None:
        """LIST, then WATCH namespaces until cancelled; LIST again after 410 or a failure."""
        def listed(items: list[Obj]) -> None:
            for item in items:
                self._seen(item["metadata"]["name"], item["metadata"].get("labels") or {})
            self.listed.set()

        def changed(type_: str, obj: Obj) -> None:
            meta = obj.get("metadata") or {}
            if type_ in ("ADDED", "MODIFIED"):
                self._seen(meta["name"], meta.get("labels") or {})
            elif type_ == "DELETED":
                self.labels.pop(meta["name"], None)

        await kube.follow(self.client, "/api/v1/namespaces", listed=listed, changed=changed,
                          retry_seconds=self.backoff_seconds, what="namespace labels")


@dataclass
class ResourceWatch:
    plan: Plan
    selector: api.ResourceSelector
    source: KubeClient
    js: JetStreamContext
    publisher: Publisher
    settings: WatcherSettings
    namespaces: NamespaceLabels
    # List and watch only this namespace ("" for all): a plan that names its namespaces is served
    # by one scoped watch per namespace, not by filtering the whole cluster.
    scope: str = ""
    # Set on one scoped watch per resource: the namespaces the plan names. Objects the stream holds
    # in any other namespace have left protection and get tombstones, as if a filter stopped matching.
    sweep_outside: tuple[str, ...] = ()
    epoch: int = 0
    info: ResourceInfo | None = None
    # subject -> (type, resourceVersion) of the last message this watch knows the stream holds
    known: dict[str, tuple[str, str]] = field(default_factory=dict)
    listed: asyncio.Event = field(default_factory=asyncio.Event)
    relist_wanted: asyncio.Event = field(default_factory=asyncio.Event)
    # Sealed kinds: the stream key the last LIST sealed with; a rotation re-lists (see relist).
    sealed_with: str | None = None
    # Why this resource cannot be watched right now ((reason, message); None: it is watched).
    problem: tuple[str, str] | None = None
    # Set to cut a retry pause short: the source is back, or a CRD changed in it.
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    _publish_failed: BaseException | None = None
    # Set with _publish_failed: a watch with no more events to come must not wait for one to notice.
    publish_failure: asyncio.Event = field(default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        self.filters = selection.compile_filters(self.selector.filters)
        self.label_query = selection.to_query(self.selector.filters.selector)
        if self.filters.needs_namespace_labels:
            self.namespaces.listeners.append(self._namespace_relabelled)

    def _namespace_relabelled(self, namespace: str) -> None:
        if self.scope in ("", namespace):
            self.relist_wanted.set()

    @property
    def name(self) -> str:
        scope = f" in {self.scope}" if self.scope else ""
        return f"{self.plan.key}/{self.selector.resource}.{self.selector.group or 'core'}{scope}"

    def subject_of(self, namespace: str, name: str) -> str:
        assert self.info is not None
        return subjects.object_subject(
            prefix=self.settings.nats.subject_prefix, plan_namespace=self.plan.namespace,
            plan_name=self.plan.name, group=self.info.group, version=self.info.version,
            resource=self.info.resource, namespace=namespace, name=name)

    def resource_filter(self, *, scoped: bool = True) -> str:
        assert self.info is not None
        return subjects.resource_filter(prefix=self.settings.nats.subject_prefix, plan_namespace=self.plan.namespace,
                                        plan_name=self.plan.name, group=self.info.group, version=self.info.version,
                                        resource=self.info.resource, namespace=self.scope if scoped else "")

    async def selected(self, obj: Obj) -> bool:
        if kinds.skip_reason(obj, own_namespace=self.settings.kube.namespace) is not None:
            return False
        namespace = (obj.get("metadata") or {}).get("namespace", "")
        ns_labels = await self.namespaces.of(namespace) if self.filters.needs_namespace_labels and namespace else None
        return self.filters.matches(obj, ns_labels)

    # -- publishing -------------------------------------------------------------------------
    def _failed(self, exc: BaseException) -> None:
        self._publish_failed = exc
        self.publish_failure.set()

    async def _publish(self, type_: EventType, obj: Obj, *, resource_version: str | None = None,
                       uid: str | None = None, subject: str | None = None) -> None:
        """Publish one change. ``obj`` is handed over: it is sanitized in place, not copied."""
        assert self.info is not None
        meta = obj.get("metadata") or {}
        namespace, name = meta.get("namespace", ""), meta["name"]
        subject = subject or self.subject_of(namespace, name)
        rv = resource_version or str(meta.get("resourceVersion", ""))
        env = Envelope(
            type=type_,
            ref=ObjectReference(group=self.info.group, version=self.info.version, resource=self.info.resource,
                                kind=self.info.kind, namespace=namespace, name=name),
            source_uid=uid or str(meta.get("uid", "")),
            source_resource_version=rv,
            observed_at=time.time(),
            plan_namespace=self.plan.namespace,
            plan_name=self.plan.name,
            epoch=self.epoch,
            body=sanitizing.sanitize(obj, owned=True) if type_ is EventType.UPSERT else None,
        )
        if await self.publisher.publish(env, subject=subject, on_failure=self._failed):
            self.known[subject] = (type_.value, rv)

    async def _tombstone(self, subject: str, uid: str, resource_version: str) -> None:
        parts = subjects.parse_subject(subject, prefix=self.settings.nats.subject_prefix)
        await self._publish(EventType.DELETE, {"metadata": {"name": parts.name, "namespace": parts.namespace}},
                            resource_version=resource_version, uid=uid, subject=subject)

    # -- list ---------------------------------------------------------------------------------
    async def relist(self, reason: str) -> str:
        """LIST, publishing page by page what differs from the stream, then the tombstones."""
        assert self.info is not None
        # The watch that sweeps reads the whole resource once; its own states are the scoped part.
        everything = await streams.last_states(self.js, self.publisher.stream,
                                               self.resource_filter(scoped=not self.sweep_outside))
        mine = self.resource_filter()[:-1]
        states = {s: st for s, st in everything.items() if s.startswith(mine)}
        self.known = {s: (st.type, st.resource_version) for s, st in states.items()}
        # Sealed kinds: a state in clear (published before sealing) or under an older key is
        # published again, sealed under the active key.
        if self.sealed:
            keyring = await self.publisher.keys.keyring()
            self.sealed_with = keyring.active if keyring is not None else None
        if self.filters.needs_namespace_labels:
            await self.namespaces.listed.wait()
        present: set[str] = set()
        listed, list_rv = 0, ""
        async for items, page_rv in self.source.list_pages(self.info.collection(self.scope),
                                                           label_selector=self.label_query,
                                                           page_size=self.settings.page_size):
            listed, list_rv = listed + len(items), page_rv
            for obj in items:
                obj.setdefault("apiVersion", self.info.api_version)
                obj.setdefault("kind", self.info.kind)
                if not await self.selected(obj):
                    continue
                meta = obj["metadata"]
                subject = self.subject_of(meta.get("namespace", ""), meta["name"])
                present.add(subject)
                stored = states.get(subject)
                if self.known.get(subject) != (EventType.UPSERT.value, str(meta.get("resourceVersion"))) or (
                        self.sealed_with is not None and stored is not None and stored.key != self.sealed_with):
                    await self._publish(EventType.UPSERT, obj, subject=subject)
        stale = [s for s, (t, _) in self.known.items() if t == EventType.UPSERT.value and s not in present]
        if stale and not listed:
            # An empty list is never a reason to delete: a misconfigured or half-restored source
            # must not wipe the stand-by.
            metrics.refused(self.plan.key, self.info.resource, "empty_list_no_tombstones")
            log.warning("source list is empty; refusing to publish %d tombstones", len(stale),
                        extra={"plan": self.plan.key, "resource": self.info.resource})
        else:
            for subject in stale:
                await self._tombstone(subject, states[subject].uid if subject in states else "", list_rv)
        if self.sweep_outside:
            for subject, state in everything.items():
                parts = subjects.parse_subject(subject, prefix=self.settings.nats.subject_prefix)
                if state.type == EventType.UPSERT.value and parts.namespace not in self.sweep_outside:
                    await self._tombstone(subject, state.uid, list_rv)
        await self.publisher.flush()
        metrics.relisted(self.plan.key, self.info.resource, reason, len(present))
        log.info("listed %d objects (%d selected, %d tombstones)", listed, len(present),
                 0 if not listed else len(stale), extra={"plan": self.plan.key, "resource": self.info.resource,
                                                        "reason": reason, "rv": list_rv})
        self.listed.set()
        return list_rv

    @property
    def sealed(self) -> bool:
        return self.info is not None and sealing.sealed_resource(self.info.group, self.info.resource)

    async def _active_key_changed(self) -> str:
        """Returns the active stream key once it is not the one the last LIST sealed with."""
        keys = self.publisher.keys
        while True:
            await asyncio.sleep(keys.max_age)
            keyring = await keys.keyring()
            if keyring is not None and keyring.active != self.sealed_with:
                return keyring.active

    # -- watch --------------------------------------------------------------------------------
    async def watch_until_relist(self, resource_version: str) -> None:
        """:meth:`watch_from`, ended by :class:`RelistNeeded` when a namespace relabelling may have
        changed what this watch selects, (sealed kinds) when the active stream key changed: the
        LIST seals again, under the new key, what the stream holds under the old one, or every
        ``relist_seconds``: an event the watch missed is found by the LIST. A publish that failed
        (its acknowledgement lost or refused, after the call returned) re-lists at once: the LIST
        publishes that object again (the stream drops what it already holds by message id)."""
        watching = asyncio.create_task(self.watch_from(resource_version), name=f"watch {self.name}")
        wanted = asyncio.create_task(self.relist_wanted.wait(), name=f"relist wanted {self.name}")
        failed = asyncio.create_task(self.publish_failure.wait(), name=f"publish failed {self.name}")
        waits: list[asyncio.Task[Any]] = [watching, wanted, failed]
        if self.sealed:
            rotated = asyncio.create_task(self._active_key_changed(), name=f"key rotation {self.name}")
            waits.append(rotated)
        if self.settings.relist_seconds:
            scheduled = asyncio.create_task(asyncio.sleep(self.settings.relist_seconds), name=f"relist {self.name}")
            waits.append(scheduled)
        try:
            done, _ = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in waits:
                task.cancel()
            await asyncio.wait(waits)
        failure = None if watching.cancelled() else watching.exception()
        if failure is not None:
            raise failure
        if failed in done:
            exc, self._publish_failed = self._publish_failed, None
            self.publish_failure.clear()
            raise RelistNeeded(f"publish failed: {exc!r}")
        if wanted in done:
            raise RelistNeeded("namespace labels changed", kind="namespace_labels")
        if self.settings.relist_seconds and scheduled in done:
            raise RelistNeeded(f"scheduled, every {self.settings.relist_seconds:.0f}s", kind="scheduled")
        raise RelistNeeded(f"the active stream key is now {rotated.result()}", kind="stream_key_rotated")

    async def watch_from(self, resource_version: str) -> None:
        """Watch until 410 (raises RelistNeeded) or a failed publish; returns to re-watch on timeout."""
        assert self.info is not None
        rv = resource_version
        while True:
            async for event in self.source.watch(self.info.collection(self.scope), resource_version=rv,
                                                 label_selector=self.label_query,
                                                 timeout_seconds=self.settings.watch_timeout_seconds):
                if self._publish_failed is not None:
                    exc, self._publish_failed = self._publish_failed, None
                    self.publish_failure.clear()
                    raise RelistNeeded(f"publish failed: {exc!r}")
                type_, obj = event["type"], event["object"]
                rv = str(obj.get("metadata", {}).get("resourceVersion", rv))
                if type_ == "BOOKMARK":
                    continue
                metrics.observed(self.plan.key, self.info.resource, type_)
                await self.handle(type_, obj)

    async def handle(self, type_: str, obj: Obj) -> None:
        assert self.info is not None
        meta = obj.get("metadata") or {}
        subject = self.subject_of(meta.get("namespace", ""), meta["name"])
        previously = self.known.get(subject, ("", ""))[0] == EventType.UPSERT.value
        if type_ in ("ADDED", "MODIFIED"):
            obj.setdefault("apiVersion", self.info.api_version)
            obj.setdefault("kind", self.info.kind)
            if await self.selected(obj):
                await self._publish(EventType.UPSERT, obj, subject=subject)
                return
        if previously:  # deleted, or no longer selected
            await self._publish(EventType.DELETE, obj, subject=subject)

    # -- the loop ---------------------------------------------------------------------------
    async def run(self) -> None:
        delay = self.settings.backoff_initial_seconds
        reason = "start"
        where = {"plan": self.plan.key, "resource": self.name}
        while True:
            try:
                if self.info is None:
                    self.info = await self.source.resolve(self.selector.group, self.selector.version,
                                                          self.selector.resource)
                self.relist_wanted.clear()  # a relabelling from now on is seen by this LIST or re-lists
                rv = await self.relist(reason)
                self._watching()
                delay = self.settings.backoff_initial_seconds
                await self.watch_until_relist(rv)
            except RelistNeeded as exc:
                reason = exc.kind
                (log.info if exc.kind == "scheduled" else log.warning)("re-listing %s: %s", self.name, exc.reason,
                                                                       extra=where)
                if exc.kind in ("namespace_labels", "stream_key_rotated", "scheduled"):
                    continue  # no backoff: nothing failed
            except NotServedError as exc:
                reason = "not_served"
                if self._cannot_watch("NotServed", str(exc.message)):  # said once, not at every look
                    log.warning("%s cannot be watched: %s; looking again every %.0fs and when a CRD changes",
                                self.name, exc.message, self.settings.not_served_retry_seconds, extra=where)
                await self._pause(self.settings.not_served_retry_seconds)
                continue  # discovery is read again at once: no growing backoff
            except ApiError as exc:
                if exc.gone:
                    reason = "gone"
                    log.info("watch of %s expired (410 Gone); re-listing", self.name, extra=where)
                    continue
                reason = f"error_{exc.status}"
                metrics.error(self.plan.key, f"api_{exc.status}")
                if exc.status == 403:
                    self._cannot_watch("Forbidden", exc.message)
                log.warning("source answered %s for %s; retrying in %.1fs", exc, self.name, delay, extra=where)
            except UnreachableError as exc:
                reason = "unreachable"
                metrics.error(self.plan.key, "unreachable")
                log.info("source unreachable for %s (%s); retrying in %.1fs", self.name, exc, delay, extra=where)
            except KeysUnavailableError as exc:
                reason = "no_stream_keys"
                metrics.error(self.plan.key, "stream_keys")
                log.error("Secrets are not published until the stream keys can be read (%s); retrying in %.1fs",
                          exc, delay, extra=where)
            except TimeoutError as exc:
                reason = "stream_timeout"
                metrics.error(self.plan.key, "stream")
                log.warning("stream not answering for %s (%s); retrying in %.1fs", self.name, exc, delay, extra=where)
            await self._pause(delay)
            delay = min(delay * 2, self.settings.backoff_max_seconds)

    async def _pause(self, seconds: float) -> None:
        """Sleep before a retry, cut short by :attr:`wake` (the source is back, or a CRD changed)."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self.wake.wait()
        self.wake.clear()

    def _cannot_watch(self, reason: str, message: str) -> bool:
        """Record why this resource is not watched; True when that is news."""
        if self.problem is None:
            metrics.unwatched(self.plan.key, self.selector.resource, True)
        news, self.problem = self.problem != (reason, message), (reason, message)
        return news

    def _watching(self) -> None:
        if self.problem is not None:
            metrics.unwatched(self.plan.key, self.selector.resource, False)
            log.info("%s is watched again", self.name, extra={"plan": self.plan.key})
        self.problem = None
