"""The operator's command line against the running pipeline: `standby status` tells the truth with
exit codes scripts can rely on, and `standby failover` creates, follows and judges a failover
(a two-wave plan whose second wave has a Deployment that cannot become ready)."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import nats.js.errors
import pytest

from schemas import API_VERSION, subjects
from schemas import annotations as ann
from services.common.kube import ApiError
from services.devenv.clusters import LocalCluster
from services.devenv.natsd import LocalNats
from tests.e2e.conftest import Pipeline
from tests.e2e.test_recovery import JOBS, recovery_process
from tests.support import env as h

EXECUTION_PLANS = f"/apis/{API_VERSION}/namespaces/{h.SYSTEM}/recoveryexecutionplans"
MCS = f"/apis/{API_VERSION}/namespaces/{h.SYSTEM}/managedclusters"


@dataclass
class Ran:
    code: int
    out: str
    err: str


async def standby(cluster: LocalCluster, *args: str, timeout: float = 180, answer: str = "",
                  env: dict[str, str] | None = None) -> Ran:
    """The `standby` command as an operator runs it (off the event loop the pipeline runs on);
    ``answer``: what is typed on its stdin; ``env``: more environment variables."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "services.cli", *args, "--kubeconfig", str(cluster.kubeconfig),
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env={**os.environ, **(env or {})})
    out, err = await asyncio.wait_for(proc.communicate(answer.encode()), timeout)
    assert proc.returncode is not None
    return Ran(proc.returncode, out.decode(), err.decode())


def deployment(ns: str, name: str, **pod: Any) -> dict[str, Any]:
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "namespace": ns},
            "spec": {"replicas": 1, "selector": {"matchLabels": {"app": name}},
                     "template": {"metadata": {"labels": {"app": name}},
                                  "spec": {"containers": [{"name": "main", "image": "registry.example/x:1"}], **pod}}}}


async def test_status_and_a_two_wave_failover_from_the_command_line(
        pipe: Pipeline, registered: LocalCluster, nats_server: LocalNats) -> None:
    for ns, pod in (("op-web", {}), ("op-stuck", {"nodeSelector": {"no-such-node": "true"}})):
        await h.namespace(pipe.src, ns)
        await pipe.src.apply(f"/apis/apps/v1/namespaces/{ns}/deployments/web", deployment(ns, "web", **pod),
                             field_manager="test")
        await h.apply_plan(pipe.dst, h.plan_body(ns, [{"group": "apps", "version": "v1", "resource": "deployments",
                                                        "filters": {"namespaces": [ns]}}],
                                                  forceNamespaceCreation=True))
    await pipe.dst.apply(f"{EXECUTION_PLANS}/op-two-waves", {
        "apiVersion": API_VERSION, "kind": "RecoveryExecutionPlan",
        "metadata": {"name": "op-two-waves", "namespace": h.SYSTEM},
        "spec": {"waves": [
            {"name": "first", "recoveryPlans": [{"name": "op-web", "namespace": h.SYSTEM}], "waitForReady": True,
             "timeoutSeconds": 60},
            {"name": "second", "recoveryPlans": [{"name": "op-stuck", "namespace": h.SYSTEM}], "waitForReady": True,
             "timeoutSeconds": 5}]}},
        field_manager="test")

    async def protecting() -> None:  # both plans: a failover activates only the copies there are
        for plan in ("op-web", "op-stuck"):
            ran = await standby(registered, "status", plan, "-o", "json")
            assert ran.code == 0, (ran.out, ran.err)
            shown = json.loads(ran.out)["plans"][0]
            assert shown["protecting"] is True and all(shown["servedBy"].values()), shown  # replicas hold its Leases
    await h.eventually(protecting, timeout=90, interval=1)

    ran = await standby(registered, "status", "op-web")
    lines = ran.out.splitlines()
    assert lines[0].split()[:3] == ["NAME", "PHASE", "SOURCE"] and lines[1].split()[:3] == ["op-web", "Synced",
                                                                                           "Reachable"]
    assert "PROTECTING" in lines[0] and lines[1].split()[-1] == "Yes"
    assert any(line.split()[:2] == ["source", "True"] for line in lines), ran.out

    # diff: nothing differs; an edited copy and a copy without a source are named, with the fields.
    ran = await standby(registered, "diff", "op-web")
    assert (ran.code, ran.out) == (0, "No differences: the stand-by holds the source, deactivated.\n"), ran
    copy_path = "/apis/apps/v1/namespaces/op-web/deployments/web"
    await pipe.dst.request("PATCH", copy_path, content_type="application/merge-patch+json",
                           body={"metadata": {"labels": {"team": "x"}}}, params={"fieldManager": "someone"})
    ghost = deployment("op-web", "ghost")
    ghost["metadata"].update({"labels": {ann.MANAGED: "true"}, "annotations": {ann.PLAN: f"{h.SYSTEM}/op-web"}})
    await pipe.dst.apply("/apis/apps/v1/namespaces/op-web/deployments/ghost", ghost, field_manager="test")
    ran = await standby(registered, "diff", "op-web", "-o", "json")
    assert ran.code == 1, ran
    assert sorted(json.loads(ran.out), key=lambda d: d["state"]) == [
        {"state": "different", "object": "deployments.apps/op-web/web", "fields": ["/metadata/labels/team"]},
        {"state": "extra", "object": "deployments.apps/op-web/ghost", "fields": []}]
    await h.delete(pipe.dst, "/apis/apps/v1/namespaces/op-web/deployments/ghost")
    await pipe.dst.request("PATCH", copy_path, content_type="application/merge-patch+json",
                           body={"metadata": {"labels": {"team": None}}}, params={"fieldManager": "someone"})
    assert (await standby(registered, "diff", "op-web")).code == 0

    ran = await standby(registered, "status", "nope")
    assert (ran.code, ran.out, ran.err.strip()) == (2, "", "standby: recoveryplan standby-system/nope not found")

    try:
        # No operator running yet: the job waits, --timeout says so with its own code, and a second
        # failover of the same plan is refused while that job has not ended.
        ran = await standby(registered, "failover", "op-web", "--dry-run", "--wait", "--timeout", "2s")
        assert ran.code == 3 and "timed out after 2s" in ran.err, (ran.out, ran.err)
        jobs = len((await pipe.dst.get(JOBS))["items"])
        ran = await standby(registered, "failover", "op-web", "--dry-run")
        assert ran.code == 2 and "still running" in ran.err, ran.err
        assert len((await pipe.dst.get(JOBS))["items"]) == jobs, "nothing created"

        operator = recovery_process(registered, nats_server, "recovery-operate").start()
        try:
            ran = await standby(registered, "failover", "--execution-plan", "op-two-waves", "--wait",
                                "--timeout", "2m")
        finally:
            operator.stop()
        assert ran.code == 1, (ran.out, ran.err)
        stages = [line.split("] ", 1)[1] for line in ran.err.splitlines()]  # each plan: its namespace, web
        assert stages.index("wave first: Completed 2/2") < stages.index("wave second: Running 0/2"), ran.err
        assert stages[-2:] == ["wave second: PartiallyFailed 2/2, 1 failed (not ready after 5s: "
                               "deployments.apps/op-stuck/web)", "job PartiallyFailed: 4 objects, 1 failed"], ran.err
        assert "timings: " in ran.out, ran.out
        web = await pipe.dst.get("/apis/apps/v1/namespaces/op-web/deployments/web")
        assert web["spec"]["replicas"] == 1 and (web.get("status") or {}).get("availableReplicas") == 1

        ran = await standby(registered, "status", "op-web")
        assert ran.code == 1 and "Activated" in ran.out and "Fenced" in ran.out, ran.out  # not protecting now
    finally:
        for job in (await pipe.dst.get(JOBS))["items"]:
            await h.delete(pipe.dst, f"{JOBS}/{job['metadata']['name']}")
        for name in ("op-two-waves", "failover-op-web"):
            await h.delete(pipe.dst, f"{EXECUTION_PLANS}/{name}")
        for ns in ("op-web", "op-stuck"):
            await h.delete(pipe.dst, f"/api/v1/namespaces/{h.SYSTEM}/configmaps/standby-fence.{h.SYSTEM}.{ns}")


POLICY = "/apis/admissionregistration.k8s.io/v1/validatingadmissionpolicies/op-no-poison"
BINDING = "/apis/admissionregistration.k8s.io/v1/validatingadmissionpolicybindings/op-no-poison"


async def refuse_poison(pipe: Pipeline, ns: str) -> None:
    """The stand-by refuses ConfigMaps labelled poison in ``ns`` (the API server's own admission
    policy, in CEL): the syncer's write gets a 422, a permanent error, a dead letter."""
    await pipe.dst.apply(POLICY, {
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicy",
        "metadata": {"name": "op-no-poison"},
        "spec": {"failurePolicy": "Fail", "matchConstraints": {"resourceRules": [{
            "apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE", "UPDATE"],
            "resources": ["configmaps"]}]},
            "validations": [{"expression": "!has(object.metadata.labels) || !('poison' in object.metadata.labels)",
                             "message": "poison is not welcome here", "reason": "Invalid"}]}}, field_manager="test")
    await pipe.dst.apply(BINDING, {
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicyBinding",
        "metadata": {"name": "op-no-poison"},
        "spec": {"policyName": "op-no-poison", "validationActions": ["Deny"],
                 "matchResources": {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": ns}}}}},
        field_manager="test")

    await h.eventually(lambda: poison_refused(pipe, ns, True), timeout=30, interval=0.3)


async def poison_refused(pipe: Pipeline, ns: str, refused: bool) -> None:
    """Whether the stand-by's admission refuses a poisoned ConfigMap now: a policy, and the removal of
    its binding, take effect a moment after they are written."""
    probe = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "probe", "labels": {"poison": "1"}}}
    status = 201
    try:
        await pipe.dst.request("POST", f"/api/v1/namespaces/{ns}/configmaps", body=probe, params={"dryRun": "All"})
    except ApiError as exc:
        status = exc.status
    assert status == (422 if refused else 201), status


async def test_a_dead_letter_is_listed_retried_after_its_cause_is_fixed_and_purged(
        pipe: Pipeline, registered: LocalCluster) -> None:
    ns = "op-dlq"
    await h.namespace(pipe.src, ns)
    await h.namespace(pipe.dst, ns)
    await refuse_poison(pipe, ns)
    for name, labels in (("good", {}), ("bad", {"poison": "1"})):
        await pipe.src.apply(f"/api/v1/namespaces/{ns}/configmaps/{name}", {
            "apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": ns, "labels": labels},
            "data": {"k": "v"}}, field_manager="test")
    await h.apply_plan(pipe.dst, h.plan_body(ns, [{"version": "v1", "resource": "configmaps",
                                                   "filters": {"namespaces": [ns]}}]))
    try:
        async def listed() -> Ran:
            ran = await standby(registered, "dlq", "list", ns)
            assert ran.code == 1 and "configmaps.core/op-dlq/bad" in ran.out, (ran.code, ran.out, ran.err)
            return ran
        ran = await h.eventually(listed, timeout=60, interval=1)
        assert ran.out.splitlines()[0].split() == ["REF", "REASON", "SEQUENCE", "FAILED"]
        assert ran.out.splitlines()[1].split()[:2] == ["configmaps.core/op-dlq/bad", "Invalid"]
        shown = await standby(registered, "dlq", "show", ns, "configmaps.core/op-dlq/bad")
        assert shown.code == 0 and "poison is not welcome here" in shown.out, shown.out

        ran = await standby(registered, "dlq", "retry", ns, "--wait", "--timeout", "30s")
        assert ran.code == 1 and "failed again" in ran.err, (ran.out, ran.err)  # the cause is still there

        await h.delete(pipe.dst, BINDING)  # the cause, fixed
        await h.eventually(lambda: poison_refused(pipe, ns, False), timeout=30, interval=0.3)
        ran = await standby(registered, "dlq", "retry", ns, "--wait", "--timeout", "60s")
        assert ran.code == 0, (ran.out, ran.err)
        assert (await pipe.dst.get(f"/api/v1/namespaces/{ns}/configmaps/bad"))["data"] == {"k": "v"}
        ran = await standby(registered, "dlq", "list", ns)
        assert (ran.code, ran.out) == (0, "No dead letters.\n")
        reasons = [e["reason"] for e in (await pipe.dst.get(
            f"/api/v1/namespaces/{h.SYSTEM}/events", fieldSelector=f"involvedObject.name={ns}"))["items"]]
        assert reasons.count("DeadLettersRetried") == 2 and "DeadLettered" in reasons, reasons

        await refuse_poison(pipe, ns)  # a new dead letter, accepted this time
        await pipe.src.apply(f"/api/v1/namespaces/{ns}/configmaps/bad", {
            "apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "bad", "namespace": ns,
                                                                  "labels": {"poison": "2"}},
            "data": {"k": "v2"}}, field_manager="test")
        await h.eventually(listed, timeout=60, interval=1)
        ran = await standby(registered, "dlq", "purge", ns, "--wait", "--timeout", "30s")
        assert ran.code == 0, (ran.out, ran.err)
        assert (await standby(registered, "dlq", "list", ns)).code == 0
        bad = subjects.object_subject(prefix="standby", plan_namespace=h.SYSTEM, plan_name=ns, group="",
                                      version="v1", resource="configmaps", namespace=ns, name="bad")
        with pytest.raises(nats.js.errors.NotFoundError):
            await pipe.js.get_last_msg(subjects.stream_name(h.SYSTEM, ns), subjects.dead_letter_subject("standby", bad))
        ran = await standby(registered, "breaker", "reset", ns, "--wait", "--timeout", "10s")
        assert ran.code == 0, ran.err  # closed already: the command says done
    finally:
        await h.delete(pipe.dst, BINDING)
        await h.delete(pipe.dst, POLICY)


async def test_the_history_of_one_object_from_the_stream(pipe: Pipeline, registered: LocalCluster,
                                                         nats_server: LocalNats) -> None:
    """`standby history` reads the stream (the broker's user and password from the standby-nats
    Secret, as an install has it): each state, what changed, a Secret's values never shown."""
    ns = "op-hist"
    await h.namespace(pipe.src, ns)
    core = f"/api/v1/namespaces/{ns}"
    secret_path = await broker_credentials(pipe, nats_server)
    await h.apply_plan(pipe.dst, h.plan_body(ns, [{"version": "v1", "resource": r, "filters": {"namespaces": [ns]}}
                                                  for r in ("configmaps", "secrets")], forceNamespaceCreation=True))
    try:
        for value in ("v1", "v2"):
            await pipe.src.apply(f"{core}/configmaps/settings", {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {
                "name": "settings", "namespace": ns}, "data": {"k": value}}, field_manager="test")
            await pipe.src.apply(f"{core}/secrets/db", {"apiVersion": "v1", "kind": "Secret", "metadata": {
                "name": "db", "namespace": ns}, "stringData": {"password": f"hunter-{value}"}}, field_manager="test")
            await h.eventually(_has(pipe, f"{core}/configmaps/settings", value), timeout=30)
        await pipe.src.request("DELETE", f"{core}/configmaps/settings")
        url = ["--nats-url", nats_server.url]

        async def three_states() -> Ran:
            ran = await standby(registered, "history", ns, f"configmaps.core/{ns}/settings", *url)
            assert ran.code == 0 and len(ran.out.splitlines()) == 4, (ran.code, ran.out, ran.err)
            return ran
        ran = await h.eventually(three_states, timeout=30)
        lines = ran.out.splitlines()
        assert lines[0].split() == ["TIME", "EVENT", "RESOURCEVERSION", "SEQUENCE", "CHANGED"]
        assert lines[1].split()[1] == "UPSERT" and lines[1].endswith("(created)"), lines
        assert lines[2].split()[1] == "UPSERT" and lines[2].endswith("/data/k"), lines
        assert lines[3].split()[1] == "DELETE", lines

        ran = await standby(registered, "history", ns, f"secrets.core/{ns}/db", "-o", "json", *url)
        assert ran.code == 0, ran.err
        states = json.loads(ran.out)
        assert [s["changed"] for s in states] == [["(created)"], ["/data/password"]]
        prints = [s["object"]["data"]["password"] for s in states]
        assert all(p.startswith("masked:") for p in prints) and prints[0] != prints[1]
        assert "hunter" not in ran.out and base64.b64encode(b"hunter-v1").decode() not in ran.out

        ran = await standby(registered, "history", ns, f"configmaps.core/{ns}/never", *url)
        assert ran.code == 2 and "holds no state of" in ran.err, ran.err
        ran = await standby(registered, "history", ns, "settings", *url)
        assert ran.code == 2 and "is not an object" in ran.err, ran.err

        # With the source gone, the stand-by is compared with the stream's latest states instead.
        async def in_step() -> None:
            ran = await standby(registered, "diff", ns, "--against", "stream", *url)
            assert (ran.code, ran.out) == (0, "No differences: the stand-by holds the stream's latest states, "
                                              "deactivated.\n"), ran
        await h.eventually(in_step, timeout=30)
        await pipe.dst.request("PATCH", f"{core}/secrets/db", content_type="application/merge-patch+json",
                               body={"stringData": {"password": "edited"}}, params={"fieldManager": "someone"})
        await pipe.dst.apply(f"{core}/configmaps/ghost", {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {
            "name": "ghost", "namespace": ns, "labels": {ann.MANAGED: "true"},
            "annotations": {ann.PLAN: f"{h.SYSTEM}/{ns}"}}}, field_manager="test")
        ran = await standby(registered, "diff", ns, "--against", "stream", "-o", "json", *url)
        assert ran.code == 1, ran
        assert sorted(json.loads(ran.out), key=lambda d: d["state"]) == [
            {"state": "different", "object": f"secrets.core/{ns}/db", "fields": ["/data/password"]},
            {"state": "extra", "object": f"configmaps.core/{ns}/ghost", "fields": []}], ran.out
        await pipe.dst.request("DELETE", f"{core}/secrets/db")
        ran = await standby(registered, "diff", ns, "--against", "stream", *url)
        assert ran.code == 1 and [line.split()[:2] for line in ran.out.splitlines()[1:]] == [
            ["extra", f"configmaps.core/{ns}/ghost"], ["missing", f"secrets.core/{ns}/db"]], ran.out
        await h.delete(pipe.dst, f"{core}/configmaps/ghost")
        ran = await standby(registered, "diff", "nope", "--against", "stream", *url)
        assert (ran.code, ran.err.strip()) == (2, "standby: recoveryplan standby-system/nope not found"), ran
    finally:
        await h.delete(pipe.dst, secret_path)


async def broker_credentials(pipe: Pipeline, nats_server: LocalNats) -> str:
    """The standby-nats Secret an install has (the commands that read the stream use it); its path."""
    path = f"/api/v1/namespaces/{h.SYSTEM}/secrets/standby-nats"
    await pipe.dst.apply(path, {"apiVersion": "v1", "kind": "Secret", "metadata": {
        "name": "standby-nats", "namespace": h.SYSTEM}, "stringData": {
        "NATS_USER": nats_server.user, "NATS_PASSWORD": nats_server.password}}, field_manager="test")
    return path


def _has(pipe: Pipeline, path: str, value: str) -> Callable[[], Awaitable[None]]:
    async def check() -> None:
        assert (await pipe.dst.get(path))["data"] == {"k": value}
    return check
