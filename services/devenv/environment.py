"""A whole local environment: the clusters of a topology plus NATS, as ``standby dev`` and the test
fixtures see it. ``up`` leaves the processes running and records them in ``DIR/state.json`` so that
``down`` stops exactly those and nothing else."""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import shutil
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from services.devenv import natsd
from services.devenv.clusters import LocalCluster
from services.devenv.natsd import LocalNats
from services.devenv.processes import Process, pid_alive, terminate_group

Topology = Literal["two", "three"]
STATE_FILE = "state.json"


def cluster_names(topology: Topology) -> list[str]:
    return ["source", "destination"] + (["management"] if topology == "three" else [])


def sync_side(topology: Topology) -> str:
    """The cluster that runs the broker, watcher and syncer and holds the plans."""
    return "management" if topology == "three" else "destination"


@dataclass
class DevEnvironment:
    root: Path
    topology: Topology = "two"
    full: bool = False
    nats_nodes: int = 1  # more: a JetStream cluster
    nats_tls: bool = False
    clusters: dict[str, LocalCluster] = field(default_factory=dict)
    nats: LocalNats | None = None
    services: dict[str, Process] = field(default_factory=dict)

    def start(self, *, source_watch_cache: bool = True) -> DevEnvironment:
        self.root.mkdir(parents=True, exist_ok=True)
        if status(self.root)["running"]:
            raise RuntimeError(f"an environment is already running in {self.root}")
        clear(self.root)
        try:
            self.nats = LocalNats(self.root, nodes=self.nats_nodes, tls=self.nats_tls).start()
            for name in cluster_names(self.topology):
                self.clusters[name] = LocalCluster(
                    name, self.root, full=self.full,
                    watch_cache=source_watch_cache if name == "source" else True,
                )
                self.clusters[name].start()
        except BaseException:
            self.stop()
            raise
        self.write_files()
        return self

    def stop(self) -> None:
        for proc in self.services.values():
            proc.stop()
        self.services.clear()
        for cluster in self.clusters.values():
            cluster.stop()
        if self.nats is not None:
            self.nats.stop()

    @property
    def sync_cluster(self) -> LocalCluster:
        return self.clusters[sync_side(self.topology)]

    def env_vars(self) -> dict[str, str]:
        assert self.nats is not None
        env = {
            "STANDBY_NATS_URL": self.nats.url,
            "STANDBY_NATS_USER": self.nats.user,
            "STANDBY_NATS_PASSWORD": self.nats.password,
            **({"STANDBY_NATS_CA": str(self.nats.pki.ca_cert)} if self.nats.pki else {}),
            "STANDBY_TOPOLOGY": self.topology,
            "STANDBY_SYNC_KUBECONFIG": str(self.sync_cluster.kubeconfig),
            "STANDBY_DESTINATION_KUBECONFIG": str(self.clusters["destination"].kubeconfig),
        }
        for name, cluster in self.clusters.items():
            env[f"STANDBY_{name.upper()}_KUBECONFIG"] = str(cluster.kubeconfig)
        return env

    def write_files(self) -> None:
        lines = [f"export {k}={shlex.quote(v)}" for k, v in self.env_vars().items()]
        (self.root / "env").write_text("\n".join(lines) + "\n")
        (self.root / "env").chmod(0o600)
        (self.root / STATE_FILE).write_text(json.dumps(self.to_state(), indent=2))

    def to_state(self) -> dict[str, Any]:
        assert self.nats is not None
        return {
            "topology": self.topology,
            "full": self.full,
            "started": time.time(),
            "nats": self.nats.to_state(),
            "clusters": {n: c.to_state() for n, c in self.clusters.items()},
            "services": {n: p.pid for n, p in self.services.items()},
        }

    def detach(self) -> None:
        """Hand the processes over to ``standby dev down``."""
        for cluster in self.clusters.values():
            for proc in cluster.processes.values():
                proc.detach()
        for node in self.nats.servers if self.nats else []:
            if node.process is not None:
                node.process.detach()
        for proc in self.services.values():
            proc.detach()


def read_state(root: Path) -> dict[str, Any] | None:
    path = root / STATE_FILE
    if not path.exists():
        return None
    return json.loads(path.read_text())  # type: ignore[no-any-return]


def recorded_pids(state: dict[str, Any]) -> dict[str, int]:
    """The recorded processes in the order to stop them: services, then each cluster's in reverse
    start order (an API server stopped after its etcd hangs on to it, and etcd waits for its
    clients: ~10 s each), NATS last."""
    pids: dict[str, int] = {}
    for name, pid in state.get("services", {}).items():
        pids[f"service/{name}"] = pid
    for cname, cluster in state.get("clusters", {}).items():
        for proc, pid in reversed(list(cluster.get("pids", {}).items())):
            pids[f"{cname}/{proc}"] = pid
    for name, node in (state.get("nats", {}).get("nodes") or {}).items():
        if node.get("pid"):
            pids[f"nats/{name}"] = node["pid"]
    return pids


def clear(root: Path) -> None:
    """Remove what an earlier, stopped environment left in ``root`` (only the entries an environment
    writes there): every start makes new certificates, tokens and ports, which its etcd and
    JetStream data would not fit (its nodes, registered clusters and stream keys would clash)."""
    for name in (*cluster_names("three"), "nats", "logs"):
        shutil.rmtree(root / name, ignore_errors=True)
    for leftover in (*root.glob("*.kubeconfig"), root / "env", root / STATE_FILE):
        leftover.unlink(missing_ok=True)


def down(root: Path) -> list[str]:
    """Stop every process recorded by ``up`` (services first, NATS last). Returns what it stopped."""
    state = read_state(root)
    if state is None:
        return []
    stopped = []
    for name, pid in recorded_pids(state).items():
        if pid_alive(pid):
            terminate_group(pid)
            stopped.append(name)
    (root / STATE_FILE).unlink()
    return stopped


def status(root: Path) -> dict[str, Any]:
    state = read_state(root)
    if state is None:
        return {"running": False, "processes": {}}
    procs = {name: pid_alive(pid) for name, pid in recorded_pids(state).items()}
    for name in state.get("nats", {}).get("nodes") or {}:
        procs.setdefault(f"nats/{name}", False)  # stopped or killed by `standby dev nats`
    return {"running": any(procs.values()), "topology": state["topology"], "full": state["full"],
            "processes": procs}


NatsAction = Literal["stop", "kill", "wipe", "start", "restart"]


def nats_node(root: Path, name: str, action: NatsAction, *, timeout: float = 30.0) -> str:
    """Stop, kill (SIGKILL), wipe (delete the store of a stopped node), start or restart one NATS
    node of a running environment, as the fault tests do it; what happened, in a line."""
    state = read_state(root)
    if state is None:
        raise RuntimeError(f"no environment in {root}")
    nodes = state["nats"].get("nodes") or {}
    if name not in nodes:
        raise RuntimeError(f"no NATS node {name!r} in {root} (nodes: {', '.join(nodes) or '-'})")
    node = natsd.node_of_state(name, nodes[name])
    pid = nodes[name].get("pid")
    running = bool(pid) and pid_alive(pid)
    if action in ("stop", "restart") and running:
        terminate_group(pid)
    elif action == "kill" and running:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)
        while pid_alive(pid):
            time.sleep(0.02)
    elif action == "wipe":
        if running:
            raise RuntimeError(f"nats {name} is running; stop or kill it first")
        shutil.rmtree(node.store_dir, ignore_errors=True)
    if action in ("start", "restart"):
        if action == "start" and running:
            return f"nats {name} already running (pid {pid})"
        natsd.launch(node)
        natsd.wait_ready(node, timeout)
        assert node.process is not None
        node.process.detach()
        nodes[name]["pid"] = node.process.pid
    elif action != "wipe":
        nodes[name]["pid"] = None
    (root / STATE_FILE).write_text(json.dumps(state, indent=2))
    return {"stop": f"nats {name} stopped", "kill": f"nats {name} killed (SIGKILL)",
            "wipe": f"nats {name}: store {node.store_dir} deleted", "start": f"nats {name} started, ready",
            "restart": f"nats {name} restarted, ready"}[action]
