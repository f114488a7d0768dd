"""Asking a cluster what the caller may do, as ``kubectl auth can-i`` does: one
SelfSubjectAccessReview per access. Used before work that needs the rights (a probe of a
ManagedCluster for what its plans need, a rebuild before it writes anything)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass

from services.common.kube import KubeClient

ACCESS_REVIEWS = "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews"


@dataclass(frozen=True, order=True)
class Access:
    """One thing to be allowed in a cluster."""

    verb: str
    group: str
    resource: str
    namespace: str = ""  # "": in every namespace (or cluster-scoped)

    def __str__(self) -> str:
        name = f"{self.resource}.{self.group}" if self.group else self.resource
        return f"{self.verb} {name}" + (f" in {self.namespace}" if self.namespace else "")


async def allowed(client: KubeClient, access: Access) -> bool:
    attributes = {"verb": access.verb, "group": access.group, "resource": access.resource}
    if access.namespace:
        attributes["namespace"] = access.namespace
    review = await client.request("POST", ACCESS_REVIEWS, body={
        "apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview",
        "spec": {"resourceAttributes": attributes}})
    return bool((review.get("status") or {}).get("allowed"))


async def refused(client: KubeClient, accesses: Iterable[Access], concurrency: int = 16) -> list[Access]:
    """The accesses of ``accesses`` the caller is not allowed, in order."""
    gate = asyncio.Semaphore(concurrency)

    async def ask(access: Access) -> bool:
        async with gate:
            return await allowed(client, access)
    wanted = sorted(set(accesses))
    answers = await asyncio.gather(*(ask(a) for a in wanted))
    return [a for a, ok in zip(wanted, answers, strict=True) if not ok]
