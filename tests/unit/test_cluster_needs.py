"""What a plan needs to be allowed in each cluster it names (the ManagedCluster probe asks each)."""

from __future__ import annotations

from services.common import plans
from services.common.access import Access
from services.watcher.clusters import needs
from tests.support.env import plan_body


def test_a_source_is_read_and_a_destination_written_where_the_plan_selects() -> None:
    plan = plans.parse_plan(plan_body("shop", [
        {"version": "v1", "resource": "configmaps", "filters": {"namespaces": ["a", "b"]}},
        {"group": "apps", "version": "v1", "resource": "deployments"},
    ], destinationClusterRef={"name": "standby", "namespace": "dr"}, forceNamespaceCreation=True))
    got = needs(plan, fence_namespace="standby-system")
    assert got["standby-system/source"] == {
        Access("list", "", "configmaps", "a"), Access("watch", "", "configmaps", "a"),
        Access("list", "", "configmaps", "b"), Access("watch", "", "configmaps", "b"),
        Access("list", "apps", "deployments"), Access("watch", "apps", "deployments")}
    written = got["dr/standby"]
    assert {str(a) for a in written} == {
        "create configmaps in a", "patch configmaps in a", "delete configmaps in a",
        "create configmaps in b", "patch configmaps in b", "delete configmaps in b",
        "create deployments.apps", "patch deployments.apps", "delete deployments.apps",
        "create namespaces", "list configmaps in standby-system"}


def test_a_plan_writing_into_its_own_cluster_needs_nothing_of_a_managed_cluster_there() -> None:
    plan = plans.parse_plan(plan_body("local", [{"version": "v1", "resource": "secrets"}]))
    assert set(needs(plan, fence_namespace="standby-system")) == {"standby-system/source"}
