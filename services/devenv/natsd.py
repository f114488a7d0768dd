"""A real nats-server with JetStream and authentication, on a free loopback port.

Restarting on the same store directory keeps the streams (fault tests rely on it)."""

from __future__ import annotations

import secrets
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from services.devenv import binaries, ports
from services.devenv.processes import Process


class NatsStartError(RuntimeError):
    pass


@dataclass
class LocalNats:
    root: Path
    user: str = "standby"
    password: str = ""
    port: int = 0
    max_payload_bytes: int = 8 * 1024 * 1024
    process: Process | None = field(default=None, repr=False)

    @property
    def dir(self) -> Path:
        return self.root / "nats"

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    @property
    def store_dir(self) -> Path:
        return self.dir / "jetstream"

    def _config(self) -> str:
        # JSON is valid NATS config syntax; it spares us quoting rules.
        import json

        return json.dumps(
            {
                "listen": f"127.0.0.1:{self.port}",
                "max_payload": self.max_payload_bytes,
                "jetstream": {"store_dir": str(self.store_dir), "max_memory_store": 268435456},
                "authorization": {"users": [{"user": self.user, "password": self.password}]},
            },
            indent=2,
        )

    def start(self, *, timeout: float = 15.0) -> LocalNats:
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = self.port or ports.free_ports(1)[0]
        self.password = self.password or secrets.token_hex(16)
        conf = self.dir / "nats.conf"
        conf.write_text(self._config())
        conf.chmod(0o600)
        self.process = Process(
            "nats-server", [str(binaries.nats_server()), "-c", str(conf)], self.root / "logs" / "nats.log"
        ).start()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.process.alive():
                raise NatsStartError(f"nats-server exited:\n{self.process.tail()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                    if sock.recv(4).startswith(b"INFO"):
                        return self
            except OSError:
                time.sleep(0.02)
        raise NatsStartError(f"nats-server not accepting on {self.url} after {timeout}s")

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()
            self.process = None

    def restart(self) -> LocalNats:
        """Stop and start on the same port and store (JetStream state survives)."""
        self.stop()
        return self.start()

    def kill(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process = None

    def to_state(self) -> dict[str, Any]:
        return {"port": self.port, "user": self.user, "password": self.password,
                "pid": self.process.pid if self.process else None}
