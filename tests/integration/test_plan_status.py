"""A plan's status as the watcher and the syncer both write it, on a real API server: each merges its
conditions with the other's, and a write whose conditions did not change since the writer's last
one (sent as a merge patch of its own fields alone, the plan not read first) leaves every
condition as it is, the other service's latest included."""

from __future__ import annotations

import uuid

from schemas import API_VERSION, api
from services.common import plans
from services.common.kube import KubeClient
from services.devenv.clusters import LocalCluster
from tests.support import env as h


async def test_unchanged_conditions_are_not_read_or_written_again(destination: LocalCluster) -> None:
    name = f"status-{uuid.uuid4().hex[:6]}"
    path = f"/apis/{API_VERSION}/namespaces/{h.SYSTEM}/recoveryplans/{name}"
    async with KubeClient.from_kubeconfig(destination.kubeconfig) as client:
        await h.apply_plan(client, h.plan_body(name, [{"version": "v1", "resource": "configmaps"}]))
        plan = plans.parse_plan(await client.get(path))
        watcher = plans.condition("SourceReachable", True, "Reachable")
        assert await plans.set_plan_conditions(client, plan, [watcher])
        syncing = api.RecoveryPlanStatus(conditions=[api.Condition(type="Synced", status="False", reason="Syncing")],
                                         objects_in_sync=10)
        assert await plans.write_plan_status(client, plan, syncing)
        first = (await client.get(path))["status"]
        assert {c["type"] for c in first["conditions"]} == {"SourceReachable", "Synced"}

        later = syncing.model_copy(update={"objects_in_sync": 20})
        await plans.set_plan_conditions(client, plan, [plans.condition("SourceReachable", False, "Unreachable")])
        assert await plans.write_plan_status(client, plan, later, conditions_written=True)
        status = (await client.get(path))["status"]
        assert status["objectsInSync"] == 20
        by_type = {c["type"]: c for c in status["conditions"]}
        assert by_type["SourceReachable"]["status"] == "False"  # the watcher's own write since, kept
        assert by_type["Synced"] == next(c for c in first["conditions"] if c["type"] == "Synced")
