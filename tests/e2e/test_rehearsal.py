"""The deployment rehearsal: Standby installed on new clusters exactly as docs/install.md says
(each of its shell blocks run as written, with the real kubectl and the `standby` command), then
every component run as its rendered Deployment or StatefulSet would run it (tests/support/pods.py:
command, environment and Secrets from the manifest, its own ServiceAccount's token where the
projected volume puts it, the shipped RBAC, read-only root filesystem, non-root user). Under those
credentials a plan protects an application, the copies are deactivated, a failover job completes
and the fence holds; then the docs' upgrade and uninstall. Every request the components make is
audited: a refused one fails the test with the ServiceAccount, verb and resource."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from schemas import api, subjects
from services.common import streams
from services.common.settings import NatsSettings
from services.devenv import binaries
from services.devenv.clusters import LocalCluster
from services.devenv.natsd import LocalNats
from tests.support import env as h
from tests.support import monitoring, pods
from tests.support.kubectl import kubectl

REPO = Path(__file__).resolve().parents[2]
SYSTEM = "standby-system"
AUDITED = ("system:serviceaccounts:standby-system",)
WORKLOADS = ("Deployment", "StatefulSet")
SERVICES = ["nats.standby-system"]


def doc_blocks() -> dict[str, str]:
    """docs/install.md's shell blocks, by their `<!-- rehearsal: NAME -->` marker."""
    text = (REPO / "docs" / "install.md").read_text()
    return dict(re.findall(r"<!-- rehearsal: ([\w-]+) -->\n```sh\n(.*?)```", text, re.S))


def test_every_shell_block_of_the_install_guide_is_rehearsed() -> None:
    text = (REPO / "docs" / "install.md").read_text()
    assert text.count("```sh") == len(doc_blocks()) == 8
    assert set(doc_blocks()) <= set(REHEARSED)


REHEARSED = {"two-cluster", "two-cluster-source", "three-cluster", "three-cluster-clusters", "first-plan",
             "upgrade", "uninstall", "record-mirror"}


class Rehearsal:
    """One topology's clusters (as kubeconfig contexts), the docs' commands and the pods."""

    def __init__(self, root: Path, clusters: dict[str, LocalCluster]) -> None:
        self.root, self.clusters = root, clusters
        self.kubeconfig = root / "kubeconfig"
        self.pods: list[pods.Pod] = []
        config: dict[str, Any] = {"apiVersion": "v1", "kind": "Config", "clusters": [], "users": [],
                                  "contexts": [], "current-context": "standby"}
        for context, cluster in clusters.items():
            own = yaml.safe_load(cluster.kubeconfig.read_text())
            config["clusters"].append({"name": context, "cluster": own["clusters"][0]["cluster"]})
            config["users"].append({"name": context, "user": own["users"][0]["user"]})
            config["contexts"].append({"name": context, "context": {"cluster": context, "user": context}})
        self.kubeconfig.write_text(yaml.safe_dump(config))
        self.checkout = root / "checkout"  # the commands' working directory: what they read, nothing they write
        self.checkout.mkdir()
        for part in ("k8s", "examples"):
            (self.checkout / part).symlink_to(REPO / part)

    def run(self, block: str, **env: str) -> str:
        """A shell block of docs/install.md, as a user runs it from a checkout (``env``: the
        variables the text asks the user to set)."""
        path = os.pathsep.join([str(binaries.kube_binary("kubectl").parent), str(Path(sys.executable).parent),
                                "/usr/local/bin", "/usr/bin", "/bin"])
        done = subprocess.run(["bash", "-euo", "pipefail", "-c", doc_blocks()[block]], cwd=self.checkout, text=True,
                              capture_output=True, timeout=300, check=False,
                              env={"PATH": path, "KUBECONFIG": str(self.kubeconfig), "HOME": str(self.root), **env})
        assert done.returncode == 0, f"docs/install.md block {block!r} failed:\n{done.stdout}\n{done.stderr}"
        return done.stdout

    def kubectl(self, context: str, *args: str, stdin: str | None = None) -> str:
        done = subprocess.run([str(binaries.kube_binary("kubectl")), "--kubeconfig", str(self.kubeconfig), "--context",
                               context, *args], cwd=self.checkout, input=stdin, capture_output=True, text=True,
                              timeout=300, check=False)
        assert done.returncode == 0, f"kubectl --context {context} {' '.join(args)}: {done.stderr.strip()}"
        return done.stdout

    def start_pods(self, overlay: str | Path, context: str) -> None:
        """Every workload of the rendered overlay (a name under k8s/overlays, or a kustomization's
        folder), as the kubelet of ``context`` would run it."""
        folder = overlay if isinstance(overlay, Path) else REPO / "k8s" / "overlays" / overlay
        rendered = [d for d in yaml.safe_load_all(kubectl("kustomize", str(folder))) if d]
        workloads = sorted((d for d in rendered if d["kind"] in WORKLOADS), key=lambda d: d["kind"] != "StatefulSet")
        started = []
        for workload in workloads:  # the broker first: the others connect to it when they start
            pod = pods.start(workload, self.clusters[context], self.root / "pods", services=SERVICES)
            self.pods.append(pod)
            started.append(pod)
            if workload["kind"] == "StatefulSet":
                pod.wait_ready()
        for pod in started:
            pod.wait_ready()

    def stop_pods(self) -> None:
        for pod in reversed(self.pods):
            pod.stop()
        self.pods.clear()

    def refused(self) -> list[str]:
        """Every request of Standby's ServiceAccounts the authorizer (RBAC) refused, in every cluster."""
        found = []
        for context, cluster in self.clusters.items():
            if not cluster.audit_log.exists():
                continue
            for line in cluster.audit_log.read_text().splitlines():
                event = json.loads(line)
                # The authorizer's refusals, not an admission policy's (the fence's, which recovery
                # asks for on purpose to prove the fence in force).
                if (event.get("annotations") or {}).get("authorization.k8s.io/decision") != "forbid":
                    continue
                ref = event.get("objectRef") or {}
                resource = ".".join(filter(None, [ref.get("resource"), ref.get("apiGroup")]))
                resource += f"/{ref['subresource']}" if ref.get("subresource") else ""
                where = f" in {ref['namespace']}" if ref.get("namespace") else ""
                found.append(f"{context}: {event['user']['username']} may not {event['verb']} {resource}{where}")
        return sorted(set(found))


def new_cluster(name: str, env_root: Path, *, full: bool) -> LocalCluster:
    return LocalCluster(name, env_root, full=full, nodes=1, audit_groups=AUDITED).start()


@pytest.fixture(scope="module")
def app_source(env_root: Path) -> Iterator[LocalCluster]:
    """A new source with the application the docs protect (namespace shop)."""
    cluster = new_cluster("rehearsal-source", env_root, full=True)  # its namespace controller: the uninstall
    kube = cluster.kubeconfig
    kubectl("create", "namespace", "shop", kubeconfig=kube)
    kubectl("-n", "shop", "create", "deployment", "web", "--image=registry.example/web:1.0", "--replicas=2",
            kubeconfig=kube)
    kubectl("-n", "shop", "create", "configmap", "settings", "--from-literal=mode=production", kubeconfig=kube)
    kubectl("-n", "shop", "create", "secret", "generic", "db", "--from-literal=password=s3cret", kubeconfig=kube)
    kubectl("-n", "shop", "create", "service", "clusterip", "web", "--tcp=80:8080", kubeconfig=kube)
    yield cluster
    cluster.stop()


@pytest.fixture
def rehearsal(request: pytest.FixtureRequest, env_root: Path, app_source: LocalCluster,
              tmp_path: Path) -> Iterator[Rehearsal]:
    topology = request.param
    clusters = {"source": app_source, "standby": new_cluster(f"rehearsal-standby-{topology}", env_root, full=True)}
    if topology.startswith("three"):  # each its own clusters: a cluster's store is kept under its name
        clusters["management"] = new_cluster(f"rehearsal-management-{topology}", env_root, full=False)
    play = Rehearsal(tmp_path, clusters)
    try:
        yield play
    finally:
        play.stop_pods()
        for context, cluster in clusters.items():
            if context != "source":
                cluster.stop()
        subprocess.run([str(binaries.kube_binary("kubectl")), "--kubeconfig", str(app_source.kubeconfig), "delete",
                        "-k", str(REPO / "k8s" / "source"), "--ignore-not-found", "--wait=false"],
                       capture_output=True, timeout=60, check=False)


def plan_manifest(destination: str | None) -> str:
    plan = yaml.safe_load((REPO / "examples" / "recoveryplan.yaml").read_text())
    if destination:
        plan["spec"]["destinationClusterRef"] = {"name": destination, "namespace": SYSTEM}
    return yaml.safe_dump(plan)


def get(play: Rehearsal, context: str, *args: str) -> Any:
    return json.loads(play.kubectl(context, "get", *args, "-o", "json"))


def syncer_fenced_skips() -> float:
    """The syncer's count of messages it refused because the plan is fenced (its /metrics)."""
    with urllib.request.urlopen("http://127.0.0.1:9102/metrics", timeout=5) as answer:
        text = answer.read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("standby_syncer_applies_total{") and 'outcome="skipped_fenced"' in line)


def protect_fail_over_and_fence(play: Rehearsal, *, plans: str) -> None:
    """Copies deactivated; the docs' failover completes; a later source change is fenced off."""
    web = get(play, "standby", "deployment", "web", "-n", "shop")
    assert web["spec"]["replicas"] == 0, "the copy is deactivated"
    assert web["metadata"]["labels"]["dr.standby.dev/managed"] == "true"
    assert get(play, "standby", "secret", "db", "-n", "shop")["data"]["password"]
    assert get(play, "standby", "service", "web", "-n", "shop")

    play.kubectl("standby", "apply", "-f", "examples/recoveryexecutionplan.yaml")
    job = play.kubectl("standby", "create", "-f", "examples/recoveryexecutionjob.yaml", "-o", "name").strip()
    try:
        play.kubectl("standby", "wait", job, "-n", SYSTEM, "--for=jsonpath={.status.phase}=Completed",
                     "--timeout=180s")
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{play.kubectl('standby', 'get', job, '-n', SYSTEM, '-o', 'yaml')}") from exc
    # The shipped fence policy took the fence over at once (recovery may ask for its proof).
    assert "fenceEnforced" in get(play, "standby", job, "-n", SYSTEM)["status"]["timings"]
    replicas = get(play, "source", "deployment", "web", "-n", "shop")["spec"]["replicas"]
    web = get(play, "standby", "deployment", "web", "-n", "shop")
    assert web["spec"]["replicas"] == replicas and web["metadata"]["labels"]["recovered"] == "true"
    assert web["status"].get("availableReplicas") == replicas, "waitForReady: the wave waited for the Deployment"

    play.kubectl(plans, "wait", "recoveryplan/shop", "-n", SYSTEM, "--for=jsonpath={.status.phase}=Activated",
                 "--timeout=60s")
    before = syncer_fenced_skips()
    generation = web["metadata"]["generation"]
    play.kubectl("source", "-n", "shop", "scale", "deployment", "web", f"--replicas={replicas + 3}")
    deadline = time.monotonic() + 30
    while syncer_fenced_skips() <= before:
        assert time.monotonic() < deadline, "the source change never reached the syncer"
        time.sleep(0.2)
    web = get(play, "standby", "deployment", "web", "-n", "shop")
    assert web["spec"]["replicas"] == replicas, "the fence holds: the activated workload is left alone"
    assert web["metadata"]["generation"] == generation and "dr.standby.dev/managed" not in web["metadata"]["labels"]


@pytest.mark.parametrize("rehearsal", ["two"], indirect=True)
def test_two_clusters_install_protect_fail_over_upgrade_uninstall(rehearsal: Rehearsal) -> None:
    play = rehearsal
    play.run("two-cluster")
    play.start_pods("two-cluster", "standby")
    play.run("two-cluster-source")
    assert "shop" in play.run("first-plan")
    protect_fail_over_and_fence(play, plans="standby")

    exported: set[str] = set()
    for port in (9101, 9102, 9103):  # the Deployments' metrics ports, as the ServiceMonitor scrapes them
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as answer:
            exported |= monitoring.families(answer.read().decode())
    assert not monitoring.referenced() - exported, sorted(monitoring.referenced() - exported)

    play.run("upgrade")
    assert not play.refused(), play.refused()
    play.stop_pods()
    play.run("uninstall")
    assert "recoveryplans.dr.standby.dev" not in play.kubectl("standby", "get", "crds", "-o", "name")
    for kind in ("deployments", "secrets", "configmaps"):
        assert not play.kubectl("standby", "get", kind, "-A", "-l", "dr.standby.dev/managed=true", "-o", "name")
    assert not play.kubectl("source", "get", "serviceaccounts", "-n", SYSTEM, "--ignore-not-found", "-o", "name")
    assert not play.kubectl("standby", "get", "validatingadmissionpolicybindings", "-o", "name")


@pytest.mark.parametrize("rehearsal", ["three"], indirect=True)
def test_three_clusters_install_protect_and_fail_over(rehearsal: Rehearsal) -> None:
    play = rehearsal
    play.run("three-cluster")
    play.start_pods("three-cluster/management", "management")
    play.start_pods("three-cluster/destination", "standby")
    play.run("three-cluster-clusters")
    play.kubectl("source", "label", "namespace", "shop", "dr=enabled", "--overwrite")
    play.kubectl("management", "apply", "-f", "-", stdin=plan_manifest("destination"))
    play.kubectl("management", "wait", "recoveryplan/shop", "-n", SYSTEM, "--for=condition=Synced",
                 "--timeout=120s")
    protect_fail_over_and_fence(play, plans="management")
    assert not play.refused(), play.refused()


def secret_value(play: Rehearsal, context: str, name: str, key: str) -> str:
    return base64.b64decode(get(play, context, "secret", name, "-n", SYSTEM)["data"][key]).decode()


async def mirrored(sync: LocalNats, standby_user: str, standby_password: str) -> None:
    """A plan's stream on the sync side is mirrored, whole, in the stand-by's own server (the pod's)."""
    hub = await streams.connect(h.nats_settings(sync), name="rehearsal-sync")
    own = await streams.connect(NatsSettings.model_validate({"url": "nats://127.0.0.1:4222", "user": standby_user,
                                                             "password": standby_password}), name="rehearsal-own")
    try:
        stream = await streams.ensure_stream(hub.jetstream(), NatsSettings(), SYSTEM, "shop", api.History())
        for i in range(10):
            await hub.jetstream().publish(f"standby.{subjects.plan_token(SYSTEM, 'shop')}.core.v1.configmaps.shop.c{i}",
                                          b"state", stream=stream.config.name)
        last = (await hub.jetstream().stream_info(stream.config.name or "")).state.last_seq

        async def caught_up() -> None:
            info = await own.jetstream().stream_info(stream.config.name or "")
            assert info.mirror is not None and info.state.last_seq == last, info
        await h.eventually(caught_up, timeout=60, interval=0.5)
    finally:
        await hub.close()
        await own.close()


@pytest.mark.parametrize("rehearsal", ["three-mirror"], indirect=True)
def test_the_stand_bys_copy_of_the_record_installs_and_mirrors(rehearsal: Rehearsal, tmp_path: Path) -> None:
    """docs/install.md "The stand-by's copy of the record", as written, on the 3-cluster install;
    the stand-by's NATS and recovery then run as rendered. The management cluster's broker is a
    local server configured as k8s/nats-cluster configures it (TLS, JetStream domain sync, leaf
    nodes): three broker pods cannot share this machine's loopback ports."""
    play = rehearsal
    play.run("three-cluster")
    sync = LocalNats(tmp_path / "sync", user=secret_value(play, "management", "standby-nats", "NATS_USER"),
                     password=secret_value(play, "management", "standby-nats", "NATS_PASSWORD"), tls=True,
                     domain="sync", leafnodes=True).start()
    try:
        assert sync.pki is not None
        play.kubectl("management", "create", "secret", "generic", "standby-nats-tls", "-n", SYSTEM,
                     f"--from-file=tls.crt={sync.pki.server_cert}", f"--from-file=tls.key={sync.pki.server_key}",
                     f"--from-file=ca.crt={sync.pki.ca_cert}")
        play.run("record-mirror", SYNC_LEAFNODES=f"127.0.0.1:{sync.servers[0].leaf_port}")
        play.start_pods(play.checkout / "standby-with-mirror", "standby")
        asyncio.run(mirrored(sync, secret_value(play, "standby", "standby-nats", "NATS_USER"),
                             secret_value(play, "standby", "standby-nats", "NATS_PASSWORD")))
        with urllib.request.urlopen("http://127.0.0.1:9103/metrics", timeout=5) as answer:
            assert 'standby_mirror_lag_messages{stream="STANDBY_standby-system_shop"}' in answer.read().decode()
        assert not play.refused(), play.refused()
    finally:
        play.stop_pods()
        sync.stop()
