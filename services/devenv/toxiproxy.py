"""A real Toxiproxy (built from its Go module by ``hack/build-kube.sh``) on a free loopback port, and
the few calls of its HTTP API the fault tests use: a proxy in front of a server, toxics on it.

Toxics (upstream docs): ``latency``, ``bandwidth``, ``timeout``, ``reset_peer``, ``slicer``,
``limit_data`` (closes the connection after so many bytes: a response cut mid-body), each on the
``downstream`` (server to client) or ``upstream`` direction."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from services.devenv import binaries, ports
from services.devenv.processes import Process


class ToxiproxyError(RuntimeError):
    pass


@dataclass
class LocalToxiproxy:
    root: Path
    port: int = 0
    process: Process | None = field(default=None, repr=False)

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, *, timeout: float = 15.0) -> LocalToxiproxy:
        self.port = self.port or ports.free_ports(1)[0]
        (self.root / "logs").mkdir(parents=True, exist_ok=True)
        self.process = Process("toxiproxy", [str(binaries.kube_binary("toxiproxy")), "-host", "127.0.0.1",
                                             "-port", str(self.port)], self.root / "logs" / "toxiproxy.log").start()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.process.alive():
                raise ToxiproxyError(f"toxiproxy exited:\n{self.process.tail()}")
            try:
                self._call("GET", "/version")
                return self
            except (OSError, ToxiproxyError):
                time.sleep(0.05)
        raise ToxiproxyError(f"toxiproxy not answering on {self.api} after {timeout}s")

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()
            self.process = None

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        req = urllib.request.Request(self.api + path, method=method,
                                     data=json.dumps(body).encode() if body is not None else None,
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=5) as resp:
                raw = resp.read()
        except urllib.error.HTTPError as exc:
            raise ToxiproxyError(f"{method} {path}: {exc.code} {exc.read()[:300]!r}") from exc
        return json.loads(raw) if raw.strip() else None

    def proxy(self, name: str, upstream: str) -> int:
        """A proxy to ``upstream`` (host:port) on a free loopback port; returns that port."""
        listen = ports.free_ports(1)[0]
        self._call("POST", "/proxies", {"name": name, "listen": f"127.0.0.1:{listen}", "upstream": upstream,
                                        "enabled": True})
        return listen

    def add_toxic(self, proxy: str, name: str, type_: str, *, stream: str = "downstream",
                  **attributes: Any) -> None:
        self._call("POST", f"/proxies/{proxy}/toxics", {"name": name, "type": type_, "stream": stream,
                                                         "toxicity": 1.0, "attributes": attributes})

    def remove_toxic(self, proxy: str, name: str) -> None:
        self._call("DELETE", f"/proxies/{proxy}/toxics/{name}")

    def set_enabled(self, proxy: str, enabled: bool) -> None:
        """Disabled, a proxy closes every connection through it and refuses new ones (a cut link)."""
        self._call("POST", f"/proxies/{proxy}", {"enabled": enabled})
