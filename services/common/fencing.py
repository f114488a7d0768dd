"""The epoch fence, as the syncer sees it: which plans' copies were activated in a destination.

Recovery writes a fence ConfigMap in the destination before it changes anything; the syncer
keeps this cache fresh (a LIST every ``refresh_seconds``) and checks it before every write, and
recovery waits longer than one refresh before activating, so a late message can never
deactivate an activated workload again."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Any

from schemas import annotations as ann
from services.common.kube import ApiError, KubeClient, UnreachableError

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


def fence_body(namespace: str, plan_namespace: str, plan_name: str, *, epoch: int, job: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": ann.fence_name(plan_namespace, plan_name), "namespace": namespace,
                     "labels": {ann.FENCE_LABEL: "true"}},
        "data": {"plan": ann.plan_key(plan_namespace, plan_name), "epoch": str(epoch), "job": job,
                 "activated": "true"},
    }


@dataclass
class FenceCache:
    client: KubeClient
    namespace: str
    refresh_seconds: float = 0.5
    fences: dict[str, Fence] = field(default_factory=dict)

    async def refresh(self) -> None:
        items, _ = await self.client.list_all(f"/api/v1/namespaces/{self.namespace}/configmaps",
                                              label_selector=f"{ann.FENCE_LABEL}=true")
        fences = {}
        for cm in items:
            fence = parse(cm)
            if fence is not None:
                fences[fence.plan] = fence
        self.fences = fences

    def fenced(self, plan: str) -> Fence | None:
        return self.fences.get(plan)

    async def run(self) -> None:
        while True:
            try:
                await self.refresh()
            except (ApiError, UnreachableError) as exc:
                log.warning("cannot read fences: %s", exc)
            await asyncio.sleep(self.refresh_seconds)
