"""The operator commands' pure parts: what `standby status` concludes from the statuses, how it
prints them, and the exit codes."""

from __future__ import annotations

import datetime
import io

import pytest

from schemas import api
from services.common import leasing
from services.operate import failover, output, status

NOW = datetime.datetime(2026, 11, 29, 12, 0, 0, tzinfo=datetime.UTC)


def plan(**st: object) -> dict[str, object]:
    base: dict[str, object] = {
        "phase": "Synced", "objectsInSync": 12, "objectsOutOfSync": 0, "objectsFailed": 0,
        "pendingChangeAgeSeconds": 0, "sourceLastHeardTime": "2026-11-29T11:59:50Z",
        "conditions": [{"type": "SourceReachable", "status": "True"}, {"type": "ClustersReady", "status": "True"}]}
    return {"metadata": {"name": "shop", "namespace": "standby-system"}, "spec": {}, "status": base | st}


def test_a_synced_plan_whose_source_answers_is_protecting() -> None:
    facts = status.plan_facts(plan(), NOW)
    assert facts["protecting"] and facts["sourceLastHeardSeconds"] == 10
    assert status.plan_row(facts) | {} == {
        "name": "shop", "phase": "Synced", "source": "Reachable", "heard": "10s ago", "behind": "0s",
        "in-sync": 12, "out-of-sync": 0, "failed": 0, "breaker": "Closed", "fence": "-", "served-by": "?",
        "protecting": "Yes"}


@pytest.mark.parametrize("change", [
    {"phase": "Syncing"}, {"objectsFailed": 1}, {"deleteBreaker": {"open": True}}, {"phase": "Activated"},
    {"conditions": [{"type": "SourceReachable", "status": "False"}]},
    {"conditions": [{"type": "SourceReachable", "status": "True"}, {"type": "ClustersReady", "status": "False"}]},
])
def test_anything_that_stops_protection_is_not_protecting(change: dict[str, object]) -> None:
    facts = status.plan_facts(plan(**change), NOW)
    assert not facts["protecting"]
    assert status.Report([facts], []).exit_code == output.NOT_MET


def lease(component: str, holder: str, renewed: str = "2026-11-29T11:59:58.000000Z") -> dict[str, object]:
    name = leasing.plan_lease_name(component, "uid-1")
    return {name: {"metadata": {"name": name}, "spec": {"holderIdentity": holder, "leaseDurationSeconds": 15,
                                                         "renewTime": renewed}}}


def test_a_plan_is_protected_only_while_a_live_watcher_and_syncer_replica_hold_its_lease() -> None:
    obj = plan()
    obj["metadata"]["uid"] = "uid-1"  # type: ignore[index]
    both = lease("watcher", "watcher-0") | lease("syncer", "syncer-2")
    facts = status.plan_facts(obj, NOW, both)
    assert facts["servedBy"] == {"watcher": "watcher-0", "syncer": "syncer-2"} and facts["protecting"]
    assert status.plan_row(facts)["served-by"] == "watcher-0,syncer-2"
    assert "no live" not in status.Report([facts], []).render("table")

    expired = lease("watcher", "watcher-0") | lease("syncer", "syncer-2", renewed="2026-11-29T11:59:30.000000Z")
    for leases, missing in ((lease("watcher", "watcher-0"), "syncer"), (expired, "syncer"),
                            (lease("syncer", "syncer-2"), "watcher"), ({}, "watcher or syncer")):
        facts = status.plan_facts(obj, NOW, leases)
        assert not facts["protecting"] and facts["servedBy"] == {
            "watcher": "watcher-0" if "watcher" not in missing else None,
            "syncer": "syncer-2" if "syncer" not in missing else None}
        report = status.Report([facts], [])
        assert report.exit_code == output.NOT_MET
        assert f"shop: no live {missing} replica holds its Lease" in report.render("table")

    unreadable = status.plan_facts(obj, NOW, None)  # the caller may not read Leases: not held against it
    assert unreadable["servedBy"] is None and unreadable["protecting"]


def test_a_suspended_plan_says_so_whatever_its_last_phase() -> None:
    obj = plan()
    obj["spec"] = {"suspend": True}
    assert status.plan_facts(obj, NOW)["phase"] == "Suspended"


def test_a_cluster_not_ready_makes_status_fail_and_says_why() -> None:
    mc = {"metadata": {"name": "standby"}, "status": {
        "conditions": [{"type": "Ready", "status": "False", "reason": "Forbidden", "message": "x may not: create"}],
        "lastProbeTime": "2026-11-29T11:59:30Z"}}
    report = status.Report([status.plan_facts(plan(), NOW)], [status.cluster_facts(mc, NOW)])
    assert report.exit_code == output.NOT_MET
    text = report.render("table")
    assert "standby   False   Forbidden   -         30s ago" in text and "standby: x may not: create" in text


def test_tables_look_like_kubectl() -> None:
    assert output.table([{"a": "x", "bb": None}], ["a", "bb"]) == "A   BB\nx\n"


@pytest.mark.parametrize(("seconds", "text"), [(None, "-"), (5, "5s"), (119, "119s"), (200, "3m20s"), (900, "15m"),
                                               (7500, "2h5m"), (90000, "1d1h")])
def test_ages_read_like_kubectl(seconds: float | None, text: str) -> None:
    assert output.age(seconds) == text


def test_stages_print_elapsed_lines_and_a_bar_only_on_a_terminal() -> None:
    ticks = iter([0.0, 1.25, 2.5])
    out = io.StringIO()
    stages = output.Stages(out=out, clock=lambda: next(ticks))
    stages.line("job Fencing")
    stages.progress(1, 2, "objects")  # StringIO is not a terminal: no bar
    stages.line("job Completed")
    assert out.getvalue() == "[   1.2s] job Fencing\n[   2.5s] job Completed\n"


def test_failover_of_plans_is_one_wave_waiting_for_readiness_with_a_stable_name() -> None:
    body = failover.execution_plan_for(["web", "db"], "standby-system", wait_seconds=300)
    assert body["metadata"]["name"] == "failover-db-web"
    assert body["spec"]["waves"] == [{"name": "failover", "waitForReady": True, "timeoutSeconds": 300,
                                      "recoveryPlans": [{"name": "db", "namespace": "standby-system"},
                                                        {"name": "web", "namespace": "standby-system"}]}]
    long = failover.execution_plan_for([f"plan-{i}" for i in range(20)], "x", wait_seconds=1)["metadata"]["name"]
    assert len(long) <= 63


def test_results_list_failures_and_dry_run_changes() -> None:
    st = api.RecoveryExecutionJobStatus(objects=[
        api.ObjectResult(plan="p", ref="deployments.apps/a/web", outcome="Failed", reason="403"),
        api.ObjectResult(plan="p", ref="configmaps.core/a/x", outcome="Activated"),
        api.ObjectResult(plan="p", ref="cronjobs.batch/a/c", outcome="WouldChange", changes=["replace /spec/suspend"]),
    ], timings={"fence": 1.0})
    assert failover.results(st) == ("FAILED  deployments.apps/a/web (p): 403\n"
                                    "WOULD CHANGE  cronjobs.batch/a/c (p): replace /spec/suspend\n"
                                    "timings: fence 1.00s\n")


def test_a_kubeconfig_without_the_context_is_one_line_and_exit_2(tmp_path: object,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    from pathlib import Path

    from services import cli

    config = Path(str(tmp_path)) / "config"
    config.write_text("apiVersion: v1\nkind: Config\ncurrent-context: a\ncontexts: [{name: a, context: {cluster: a}}]\n"
                      "clusters: [{name: a, cluster: {server: 'https://127.0.0.1:1'}}]\n")
    assert cli.main(["status", "--kubeconfig", str(config), "--context", "nope"]) == output.ERROR
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.strip() == f"standby: kubeconfig {config}: context 'nope' not found in kubeconfig"
    assert cli.main(["failover", "--kubeconfig", str(config)]) == output.ERROR
    assert "name the plans to fail over, or --execution-plan NAME" in capsys.readouterr().err


def test_diff_names_leaves_and_sides() -> None:
    from schemas.comparing import changed_paths

    have = {"metadata": {"labels": {"team": "x", "app": "a"}}, "spec": {"replicas": 0, "ports": [{"port": 80}]}}
    want = {"metadata": {"labels": {"app": "a"}}, "spec": {"replicas": 0, "ports": [{"port": 81}]}, "data": {}}
    assert changed_paths(have, want) == ["/data", "/metadata/labels/team", "/spec/ports/0/port"]
    assert changed_paths({"a/b": 1}, {"a/b": 2}) == ["/a~1b"]
    assert changed_paths([1], [1, 2]) == ["/"]


def test_diff_classifies_missing_extra_and_different_and_ignores_deactivation() -> None:
    from services.common import plans as plan_objects
    from services.operate.diff import Difference, compare, expected_copy
    from tests.support.env import plan_body

    plan = plan_objects.parse_plan(plan_body("shop", [{"group": "apps", "version": "v1", "resource": "deployments"}]))
    selector = plan.spec.resources[0]

    def deployment(name: str, replicas: int, image: str = "x:1") -> dict[str, object]:
        return {"apiVersion": "apps/v1", "kind": "Deployment",
                "metadata": {"name": name, "namespace": "a", "uid": f"u-{name}", "resourceVersion": "7"},
                "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                         "template": {"spec": {"containers": [{"name": "c", "image": image}]}}}}

    in_step = expected_copy(deployment("web", 3), plan, selector, None)
    in_step["metadata"] |= {"uid": "other", "resourceVersion": "99"}  # the stand-by's own server fields
    drifted = expected_copy(deployment("api", 2, image="x:2"), plan, selector, None)
    ghost = expected_copy(deployment("ghost", 1), plan, selector, None)
    source = [deployment("web", 3), deployment("api", 2), deployment("db", 1)]
    assert compare("apps", "deployments", source, [in_step, drifted, ghost], plan, selector) == [
        Difference("different", "deployments.apps/a/api", ("/spec/template/spec/containers/0/image",)),
        Difference("missing", "deployments.apps/a/db"),
        Difference("extra", "deployments.apps/a/ghost")]


def test_against_the_stream_a_rebuilds_steps_are_the_differences_and_unchanged_ones_are_not() -> None:
    from schemas.rebuilds import Step
    from schemas.subjects import ObjectKey
    from services.operate.diff import Difference, from_steps, render

    def key(name: str) -> ObjectKey:
        return ObjectKey("apps", "deployments", "a", name)
    steps = [Step("create", key("db"), "Deployment"), Step("update", key("api"), "Deployment", ("/spec/x",)),
             Step("unchanged", key("web"), "Deployment"), Step("delete", key("ghost"), "Deployment")]
    assert from_steps(steps) == [Difference("missing", "deployments.apps/a/db"),
                                 Difference("different", "deployments.apps/a/api", ("/spec/x",)),
                                 Difference("extra", "deployments.apps/a/ghost")]
    assert render([], "table", "stream") == ("No differences: the stand-by holds the stream's latest states, "
                                             "deactivated.\n")


@pytest.mark.parametrize(("typed", "yes"), [("y\n", True), ("YES\n", True), ("n\n", False), ("\n", False),
                                             ("", False), ("yep\n", False)])
def test_a_restore_writes_only_when_the_answer_is_yes_and_no_answer_is_no(typed: str, yes: bool) -> None:
    from services.operate.restore import confirmed

    asked = io.StringIO()
    assert confirmed("Write these 2 objects?", io.StringIO(typed), asked) is yes
    assert asked.getvalue() == "Write these 2 objects? [y/N] "
