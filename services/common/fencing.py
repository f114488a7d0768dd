"""The epoch fence: which plans' copies were activated in a destination.

Recovery writes a fence ConfigMap in the destination before it changes anything. Two guards keep a
late message from ever deactivating an activated workload again:

- the syncer's own (:class:`FenceCache`): it keeps a view of the fences fresh (a LIST every
  ``refresh_seconds``), checks it before every write and writes nothing while it is stale, and
  recovery waits longer than the staleness bound before activating;
- the API server's (``k8s/base/fence/policy.yaml``, a ValidatingAdmissionPolicy the syncer binds
  to each plan's copies with the plan's fence as parameter, :func:`bind`, recovery again): no
  copy of a fenced plan is written or deleted, and no object turned back into one, whoever writes
  and however late. Where it is installed, recovery proves it in force for each fenced plan
  (:func:`enforced`) and activates at once instead of waiting."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from schemas import annotations as ann
from services.common.kube import ApiError, KubeClient, UnreachableError

POLICY = "standby-fence"  # the ValidatingAdmissionPolicy
FIELD_MANAGER = "standby-recovery"  # of the fences
BINDING_MANAGER = "standby-fence"  # of the fence policy's bindings (the syncer's and recovery's)
ADMISSION = "/apis/admissionregistration.k8s.io/v1"
POLICY_PATH = f"{ADMISSION}/validatingadmissionpolicies/{POLICY}"

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Fence:
    plan: str
    epoch: int
    job: str


def parse(cm: dict[str, Any]) -> Fence | None:
    data = cm.get("data") or {}
    try:
        return Fence(data["plan"], int(data.get("epoch", "0")), data.get("job", ""))
    except (KeyError, ValueError):
        return None


def binding_path(plan_namespace: str, plan_name: str) -> str:
    return f"{ADMISSION}/validatingadmissionpolicybindings/{ann.fence_name(plan_namespace, plan_name)}"


def binding_body(namespace: str, plan_namespace: str, plan_name: str) -> dict[str, Any]:
    """The fence policy bound to one plan: its copies, selected by their plan label (the API server
    matches labels without CEL: a write of another plan's copy is never evaluated against this
    fence), checked against its fence (``namespace``), the only parameter. Named like the fence;
    without the fence it allows everything."""
    name = ann.fence_name(plan_namespace, plan_name)
    return {
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicyBinding",
        "metadata": {"name": name, "labels": {ann.FENCE_LABEL: "true", "app.kubernetes.io/part-of": "standby"}},
        "spec": {"policyName": POLICY, "validationActions": ["Deny"],
                 "paramRef": {"name": name, "namespace": namespace, "parameterNotFoundAction": "Allow"},
                 "matchResources": {"objectSelector": {"matchLabels": {
                     ann.PLAN_LABEL: ann.plan_label(ann.plan_key(plan_namespace, plan_name))}}}},
    }


def fence_body(namespace: str, plan_namespace: str, plan_name: str, *, epoch: int, job: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": ann.fence_name(plan_namespace, plan_name), "namespace": namespace,
                     "labels": {ann.FENCE_LABEL: "true"}},
        "data": {"plan": ann.plan_key(plan_namespace, plan_name), "epoch": str(epoch), "job": job,
                 "activated": "true"},
    }


async def bind(client: KubeClient, namespace: str, plan: str) -> bool:
    """Bind the fence policy to the copies of ``plan`` ("<namespace>/<name>"), its fence in
    ``namespace`` the parameter. The syncer does it when it starts a plan: the API server takes a
    new binding into account at its next refresh of the policies (every second), a new fence at
    once, so a failover that finds the binding there proves its fence in force in milliseconds.
    False when it cannot be written (no policy API before Kubernetes 1.30, no right to bind it):
    logged; only the syncers' own fence check guards the copies then."""
    plan_namespace, plan_name = plan.split("/", 1)
    try:
        await client.apply(binding_path(plan_namespace, plan_name), binding_body(namespace, plan_namespace, plan_name),
                           field_manager=BINDING_MANAGER)
    except ApiError as exc:
        log.warning("cannot bind the fence policy to the copies of %s (%s): only the syncers' own fence check "
                    "guards them", plan, exc)
        return False
    return True


async def write(client: KubeClient, namespace: str, plan: str, *, epoch: int, job: str) -> bool:
    """Fence ``plan`` ("<namespace>/<name>"): its fence ConfigMap in ``namespace``, and the fence
    policy bound to its copies (:func:`bind`, normally there already; False if it cannot be)."""
    plan_namespace, plan_name = plan.split("/", 1)
    await client.apply(f"/api/v1/namespaces/{namespace}/configmaps/{ann.fence_name(plan_namespace, plan_name)}",
                       fence_body(namespace, plan_namespace, plan_name, epoch=epoch, job=job),
                       field_manager=FIELD_MANAGER)
    return await bind(client, namespace, plan)


@dataclass
class FenceCache:
    """The syncer's view of the fences in one destination. It fails closed: :meth:`fresh` is False
    unless the view was read within ``max_age_seconds``, and then no copy may be written.

    The invariant (docs/architecture.md, "Fence"): a write that did not see a new fence checked a
    view read before the fence was written, so it started less than ``max_age_seconds`` after it;
    recovery waits ``fence_settle_seconds`` (longer) before it activates anything."""

    client: KubeClient
    namespace: str
    refresh_seconds: float = 0.25
    max_age_seconds: float = 0.75
    clock: Callable[[], float] = time.monotonic
    fences: dict[str, Fence] = field(default_factory=dict)
    read_at: float | None = None  # when the LIST the view came from was sent
    unreadable_since: float | None = None
    _refreshed: asyncio.Event = field(default_factory=asyncio.Event)  # set (and replaced) by each refresh

    async def refresh(self) -> None:
        sent = self.clock()
        items, _ = await self.client.list_all(f"/api/v1/namespaces/{self.namespace}/configmaps",
                                              label_selector=f"{ann.FENCE_LABEL}=true")
        fences = {}
        for cm in items:
            fence = parse(cm)
            if fence is not None:
                fences[fence.plan] = fence
        self.fences, self.read_at = fences, sent
        refreshed, self._refreshed = self._refreshed, asyncio.Event()
        refreshed.set()

    def fresh(self) -> bool:
        return self.read_at is not None and self.clock() - self.read_at <= self.max_age_seconds

    async def fresh_view(self, timeout: float) -> bool:
        """Wait until the view is fresh, at most ``timeout`` seconds; False if it is not by then.
        Under load a LIST can take longer than the view's age allows: writes then wait for the
        next one (back pressure) instead of going on blind or being redelivered."""
        if self.fresh():  # nearly always: no timer for every write
            return True
        try:
            async with asyncio.timeout(timeout):
                while not self.fresh():
                    await self._refreshed.wait()
        except TimeoutError:
            return False
        return True

    def fenced(self, plan: str) -> Fence | None:
        return self.fences.get(plan)

    async def run(self) -> None:
        """Refresh until cancelled; one warning when the fences become unreadable, one when they
        can be read again (with how long it lasted)."""
        while True:
            started = self.clock()
            try:
                await self.refresh()
            except (ApiError, UnreachableError) as exc:
                if self.unreadable_since is None:
                    self.unreadable_since = self.clock()
                    log.warning("cannot read the fences in %s (no copy is written until they can be): %s",
                                self.client.creds.server, exc)
            else:
                if self.unreadable_since is not None:
                    log.warning("the fences in %s can be read again after %.1fs", self.client.creds.server,
                                self.clock() - self.unreadable_since)
                    self.unreadable_since = None
            # At once when the LIST itself took the interval (a loaded API server): the view ages from
            # when the LIST was sent.
            await asyncio.sleep(max(0.0, self.refresh_seconds - (self.clock() - started)))


def refused_by_fence(exc: ApiError) -> bool:
    """Whether the API server refused a write because the fence policy forbids it."""
    return exc.status in (403, 422) and f"ValidatingAdmissionPolicy '{POLICY}'" in exc.message


async def enforced(client: KubeClient, namespace: str, plans: set[str], *, timeout: float,
                   poll_seconds: float = 0.02) -> bool:
    """Whether the API server refuses copies of every plan in ``plans`` within ``timeout``: the fence
    policy is bound, and a dry-run copy of each plan (a ConfigMap labelled as a copy, annotated with
    the plan) is refused by it. False at once where the policy is not installed (it needs Kubernetes
    1.30 and the shipped manifests); False at ``timeout`` if it does not see a fence yet."""
    try:
        await client.get(POLICY_PATH)
    except (ApiError, UnreachableError):
        return False
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    pending = set(plans)
    while pending:
        refused = await asyncio.gather(*(_refused(client, namespace, plan) for plan in sorted(pending)))
        pending -= {plan for plan, no in zip(sorted(pending), refused, strict=True) if no}
        if not pending:
            return True
        if loop.time() + poll_seconds > deadline:
            return False
        await asyncio.sleep(poll_seconds)
    return True


async def _refused(client: KubeClient, namespace: str, plan: str) -> bool:
    probe = {"apiVersion": "v1", "kind": "ConfigMap",
             "metadata": {"generateName": "standby-fence-probe-", "namespace": namespace,
                          "labels": {ann.MANAGED: ann.MANAGED_VALUE, ann.PLAN_LABEL: ann.plan_label(plan)},
                          "annotations": {ann.PLAN: plan}}}
    try:
        await client.request("POST", f"/api/v1/namespaces/{namespace}/configmaps", params={"dryRun": "All"},
                             body=probe, parse=False)
    except ApiError as exc:
        return refused_by_fence(exc)
    except UnreachableError:
        return False
    return False
