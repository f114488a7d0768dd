"""Real nats-servers with JetStream and authentication on free loopback ports: one server, or a
JetStream cluster of ``nodes`` servers (routes on loopback, a store per node), optionally with TLS
on client connections and routes (certificates from :func:`services.devenv.certs.generate_nats`).
A server can name its JetStream ``domain`` and accept leaf node connections (``leafnodes``), or join
another environment as a leaf node with a JetStream domain of its own (``leaf_of``): the stand-by's
server that mirrors the streams of the sync side's (:mod:`services.recovery.mirroring`).

Each node can be stopped, killed, wiped and started again on its own ports and store: restarting
on the same store keeps the streams (fault tests rely on it)."""

from __future__ import annotations

import json
import secrets
import shutil
import socket
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from services.devenv import binaries, certs, ports
from services.devenv.processes import Process

CLUSTER_NAME = "standby"


class NatsStartError(RuntimeError):
    pass


@dataclass
class NatsNode:
    name: str  # server_name: n1, n2, ...
    dir: Path
    log: Path
    client_port: int = 0
    cluster_port: int = 0
    monitor_port: int = 0
    leaf_port: int = 0  # leaf node connections (a hub's)
    process: Process | None = field(default=None, repr=False)

    @property
    def store_dir(self) -> Path:
        return self.dir / "jetstream"

    @property
    def config_path(self) -> Path:
        return self.dir / "nats.conf"

    def alive(self) -> bool:
        return self.process is not None and self.process.alive()


def launch(node: NatsNode) -> None:
    """Start ``node``'s server from its configuration file."""
    node.process = Process(f"nats-server {node.name}", [str(binaries.nats_server()), "-c", str(node.config_path)],
                           node.log).start()


def wait_ready(node: NatsNode, timeout: float) -> None:
    """Until the node accepts clients and its /healthz says JetStream is ready (in a cluster: a meta
    leader elected and the node current with it)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if node.process is None or not node.process.alive():
            tail = node.process.tail() if node.process else ""
            raise NatsStartError(f"nats-server {node.name} exited:\n{tail}")
        if _accepts(node) and healthy(node):
            return
        time.sleep(0.05)
    raise NatsStartError(f"nats-server {node.name} not ready on port {node.client_port} after {timeout}s")


def _accepts(node: NatsNode) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", node.client_port), timeout=0.5) as sock:
            return sock.recv(4).startswith(b"INFO")
    except OSError:
        return False


def healthy(node: NatsNode) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{node.monitor_port}/healthz", timeout=2) as resp:
            return bool(resp.status == 200)
    except (OSError, urllib.error.URLError):
        return False


@dataclass
class LocalNats:
    root: Path
    user: str = "standby"
    password: str = ""
    port: int = 0  # one server: its client port (kept across restarts)
    max_payload_bytes: int = 8 * 1024 * 1024
    nodes: int = 1
    tls: bool = False
    servers: list[NatsNode] = field(default_factory=list)
    pki: certs.NatsPki | None = None
    domain: str | None = None  # the JetStream domain (required on both ends of a leaf connection)
    leafnodes: bool = False  # accept leaf node connections (with the same user and password)
    leaf_of: LocalNats | None = None  # connect to this environment as a leaf node

    def __post_init__(self) -> None:
        if self.nodes < 1:
            raise ValueError("a NATS environment has at least one node")
        if not self.servers:
            if self.nodes == 1:  # the layout of a single server, as earlier environments had it
                self.servers = [NatsNode("n1", self.dir, self.root / "logs" / "nats.log", client_port=self.port)]
            else:
                self.servers = [NatsNode(f"n{i}", self.dir / f"n{i}", self.root / "logs" / f"nats-n{i}.log")
                                for i in range(1, self.nodes + 1)]

    # -- layout -----------------------------------------------------------------------------------
    @property
    def dir(self) -> Path:
        return self.root / "nats"

    @property
    def scheme(self) -> str:
        return "tls" if self.tls else "nats"

    @property
    def urls(self) -> list[str]:
        return [f"{self.scheme}://127.0.0.1:{n.client_port}" for n in self.servers]

    @property
    def url(self) -> str:
        """Every node's URL, comma-separated (as the services' ``nats.url`` setting takes them)."""
        return ",".join(self.urls)

    @property
    def store_dir(self) -> Path:
        return self.servers[0].store_dir

    @property
    def process(self) -> Process | None:
        return self.servers[0].process

    def node(self, name: str) -> NatsNode:
        for n in self.servers:
            if n.name == name:
                return n
        raise KeyError(f"no NATS node {name!r} (nodes: {', '.join(n.name for n in self.servers)})")

    def _config(self, node: NatsNode) -> str:
        config: dict[str, Any] = {
            "server_name": node.name,
            "listen": f"127.0.0.1:{node.client_port}",
            "http": f"127.0.0.1:{node.monitor_port}",
            "max_payload": self.max_payload_bytes,
            "jetstream": {"store_dir": str(node.store_dir), "max_memory_store": 268435456,
                          **({"domain": self.domain} if self.domain else {})},
            "authorization": {"users": [{"user": self.user, "password": self.password}]},
        }
        leafnodes: dict[str, Any] = {}
        if self.leafnodes:
            leafnodes |= {"listen": f"127.0.0.1:{node.leaf_port}",
                          "authorization": {"user": self.user, "password": self.password}}
        if self.leaf_of is not None:
            hub = self.leaf_of
            remote: dict[str, Any] = {"urls": [f"nats-leaf://{hub.user}:{hub.password}@127.0.0.1:{n.leaf_port}"
                                               for n in hub.servers]}
            if hub.pki is not None:
                remote["tls"] = {"ca_file": str(hub.pki.ca_cert)}
            leafnodes["remotes"] = [remote]
        if leafnodes:
            config["leafnodes"] = leafnodes
        tls = None
        if self.tls:
            assert self.pki is not None
            tls = {"cert_file": str(self.pki.server_cert), "key_file": str(self.pki.server_key),
                   "ca_file": str(self.pki.ca_cert), "timeout": 2}
            config["tls"] = tls
        if tls and self.leafnodes:
            config["leafnodes"]["tls"] = tls
        if len(self.servers) > 1:
            routes = [f"nats-route://127.0.0.1:{n.cluster_port}" for n in self.servers if n is not node]
            config["cluster"] = {"name": CLUSTER_NAME, "listen": f"127.0.0.1:{node.cluster_port}", "routes": routes,
                                 **({"tls": {**tls, "verify": True}} if tls else {})}
        return json.dumps(config, indent=2)  # JSON is valid NATS config syntax; it spares us quoting rules

    # -- lifecycle --------------------------------------------------------------------------------
    def start(self, *, timeout: float = 30.0) -> LocalNats:
        self.dir.mkdir(parents=True, exist_ok=True)
        self.password = self.password or secrets.token_hex(16)
        if self.tls:
            self.pki = certs.generate_nats(self.dir / "pki")
        free = iter(ports.free_ports(4 * len(self.servers)))
        for n in self.servers:
            n.client_port = n.client_port or next(free)
            n.cluster_port = n.cluster_port or next(free)
            n.monitor_port = n.monitor_port or next(free)
            n.leaf_port = n.leaf_port or next(free)
        self.port = self.servers[0].client_port
        for n in self.servers:
            self._launch(n)
        for n in self.servers:
            self._wait_ready(n, timeout)
        return self

    def _launch(self, node: NatsNode) -> None:
        node.dir.mkdir(parents=True, exist_ok=True)
        node.config_path.write_text(self._config(node))
        node.config_path.chmod(0o600)
        launch(node)

    def _wait_ready(self, node: NatsNode, timeout: float) -> None:
        wait_ready(node, timeout)

    def stop(self) -> None:
        for n in self.servers:
            self.stop_node(n.name)

    def kill(self) -> None:
        for n in self.servers:
            self.kill_node(n.name)

    def restart(self, *, timeout: float = 30.0) -> LocalNats:
        """Stop and start every node on the same ports and stores (JetStream state survives)."""
        self.stop()
        return self.start(timeout=timeout)

    # -- one node at a time (fault tests, and `standby dev nats`) ---------------------------------
    def stop_node(self, name: str) -> None:
        node = self.node(name)
        if node.process is not None:
            node.process.stop()
            node.process = None

    def kill_node(self, name: str) -> None:
        """SIGKILL: no clean shutdown, no flush of what JetStream has not synced yet."""
        node = self.node(name)
        if node.process is not None:
            node.process.kill()
            node.process = None

    def wipe_node(self, name: str) -> None:
        """Delete a stopped node's store (a lost disk): started again, it catches up from the others."""
        node = self.node(name)
        if node.alive():
            raise RuntimeError(f"nats-server {name} is running; stop or kill it first")
        shutil.rmtree(node.store_dir, ignore_errors=True)

    def start_node(self, name: str, *, timeout: float = 30.0) -> None:
        node = self.node(name)
        if node.alive():
            return
        self._launch(node)
        self._wait_ready(node, timeout)

    # -- what the cluster says --------------------------------------------------------------------
    def monitor(self, path: str) -> dict[str, Any]:
        """A monitoring endpoint (``/jsz``, ``/routez``...) of the first node that answers."""
        for n in self.servers:
            if not n.alive():
                continue
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{n.monitor_port}{path}", timeout=5) as resp:
                    return json.loads(resp.read())  # type: ignore[no-any-return]
            except (OSError, urllib.error.URLError):
                continue
        raise NatsStartError("no NATS node answers its monitoring port")

    def stream_leader(self, stream: str) -> str | None:
        """The name of the node leading ``stream`` (None: no leader now, or no such stream)."""
        jsz = self.monitor("/jsz?accounts=true&streams=true")
        for account in jsz.get("account_details") or []:
            for detail in account.get("stream_detail") or []:
                if detail.get("name") == stream:
                    return (detail.get("cluster") or {}).get("leader") or None
        return None

    def to_state(self) -> dict[str, Any]:
        return {"port": self.port, "user": self.user, "password": self.password, "tls": self.tls,
                "ca": str(self.pki.ca_cert) if self.pki else None,
                "pid": self.process.pid if self.process else None,
                "nodes": {n.name: node_state(n) for n in self.servers}}


def node_state(node: NatsNode) -> dict[str, Any]:
    return {"pid": node.process.pid if node.process else None, "dir": str(node.dir), "log": str(node.log),
            "client_port": node.client_port, "cluster_port": node.cluster_port, "monitor_port": node.monitor_port,
            "leaf_port": node.leaf_port}


def node_of_state(name: str, state: dict[str, Any]) -> NatsNode:
    """A node recorded by an environment (its process is not ours: see :mod:`services.devenv.environment`)."""
    return NatsNode(name, Path(state["dir"]), Path(state["log"]), client_port=state["client_port"],
                    cluster_port=state["cluster_port"], monitor_port=state["monitor_port"],
                    leaf_port=state.get("leaf_port", 0))
