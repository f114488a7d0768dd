"""Bearer tokens that change while a service runs, as real clusters hand them out.

- :class:`TokenFile`: a projected ServiceAccount token (the kubelet rewrites it before it expires)
  or a kubeconfig's ``tokenFile``: read again every minute, as client-go does, and at once after a
  401.
- :class:`ExecPlugin`: a kubeconfig ``users[].user.exec`` credential plugin (how EKS, GKE and AKS
  kubeconfigs authenticate): the command prints a ``client.authentication.k8s.io`` ExecCredential;
  its token is used until its ``expirationTimestamp``, and the command runs again after that or
  after a 401.

Tokens are never logged."""

from __future__ import annotations

import asyncio
import datetime
import json
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol


class CredentialError(Exception):
    """A token could not be had (a plugin that failed, a file that cannot be read)."""


class TokenSource(Protocol):
    async def token(self) -> str: ...

    def invalidate(self) -> None: ...


@dataclass
class TokenFile:
    path: Path
    max_age_seconds: float = 60.0
    clock: Callable[[], float] = time.monotonic
    _token: str | None = None
    _read_at: float = float("-inf")

    async def token(self) -> str:
        if self._token is None or self.clock() - self._read_at > self.max_age_seconds:
            try:
                self._token = self.path.read_text().strip()
            except OSError as exc:
                raise CredentialError(f"cannot read the token file {self.path}: {exc}") from exc
            self._read_at = self.clock()
        return self._token

    def invalidate(self) -> None:
        self._token = None


@dataclass
class ExecPlugin:
    command: str
    args: Sequence[str] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    api_version: str = "client.authentication.k8s.io/v1"
    timeout_seconds: float = 30.0
    clock: Callable[[], float] = time.time
    _token: str | None = None
    _expires: float | None = None  # unix time; None: until a 401
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    async def token(self) -> str:
        async with self._lock:  # one run of the plugin for all requests waiting on it
            if self._token is None or (self._expires is not None and self.clock() >= self._expires):
                self._token, self._expires = await self._run()
            return self._token

    def invalidate(self) -> None:
        self._token = None

    async def _run(self) -> tuple[str, float | None]:
        info = {"apiVersion": self.api_version, "kind": "ExecCredential", "spec": {"interactive": False}}
        try:
            proc = await asyncio.create_subprocess_exec(
                self.command, *self.args, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                env={**os.environ, **self.env, "KUBERNETES_EXEC_INFO": json.dumps(info)})
            async with asyncio.timeout(self.timeout_seconds):
                out, err = await proc.communicate()
        except (OSError, TimeoutError) as exc:
            raise CredentialError(f"credential plugin {self.command}: {exc!r}") from exc
        if proc.returncode:
            raise CredentialError(f"credential plugin {self.command} exited {proc.returncode}: "
                                  f"{err.decode(errors='replace').strip()[:500]}")
        return parse_exec_credential(out, self.command)


def parse_exec_credential(out: bytes, command: str = "plugin") -> tuple[str, float | None]:
    """The token and its expiry (unix time, or None) of an ExecCredential printed by ``command``."""
    try:
        status = json.loads(out).get("status") or {}
    except (ValueError, AttributeError) as exc:
        raise CredentialError(f"credential plugin {command} printed no ExecCredential") from exc
    token = status.get("token")
    if not token:
        which = "a client certificate (not supported yet)" if status.get("clientCertificateData") else "no token"
        raise CredentialError(f"credential plugin {command} returned {which}")
    expiry = status.get("expirationTimestamp")
    if not expiry:
        return str(token), None
    try:
        moment = datetime.datetime.fromisoformat(str(expiry).replace("Z", "+00:00"))
    except ValueError as exc:
        raise CredentialError(f"credential plugin {command}: bad expirationTimestamp {expiry!r}") from exc
    return str(token), moment.timestamp()
