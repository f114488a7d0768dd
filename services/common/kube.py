"""A small asyncio Kubernetes client speaking raw JSON.

Only this module talks HTTP to API servers. The generated models of the official client are slow
on hot paths and its calls block; the services need raw dicts, streaming watches, server-side
apply and precise error statuses (429 with Retry-After, 410 Gone, 404, 409, 422), so they get a
thin aiohttp client here. Kubeconfig parsing stays standard (YAML, token or client certificate)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import ipaddress
import logging
import os
import ssl
import tempfile
import urllib.parse
import urllib.request
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import orjson
import yaml
from aiohttp.http_exceptions import LineTooLong

from services.common import tokens

Obj = dict[str, Any]
log = logging.getLogger(__name__)


class ConfigError(ValueError):
    """A kubeconfig that cannot be used (reported as a condition, never a crash)."""


class ApiError(Exception):
    def __init__(self, status: int, reason: str, message: str, *, retry_after: float | None = None,
                 body: Obj | None = None) -> None:
        super().__init__(f"{status} {reason}: {message}")
        self.status = status
        self.reason = reason
        self.message = message
        self.retry_after = retry_after
        self.body = body or {}

    @property
    def gone(self) -> bool:
        return self.status == 410

    @property
    def not_found(self) -> bool:
        return self.status == 404


class NotServedError(ApiError):
    """A resource the API server does not serve (yet): its CRD is not installed or not Established."""

    def __init__(self, group: str, version: str, resource: str, why: str) -> None:
        super().__init__(404, "NotServed", f"{resource}.{group or 'core'}/{version} is not served: {why}")
        self.resource = f"{resource}.{group or 'core'}/{version}"


class UnreachableError(Exception):
    """The API server did not answer (connection refused, reset, timeout)."""


@dataclass(frozen=True)
class Credentials:
    server: str
    ca_pem: bytes | None
    token: str | None
    client_cert_pem: bytes | None = None
    client_key_pem: bytes | None = None
    insecure: bool = False
    proxy_url: str | None = None  # the kubeconfig cluster's proxy-url; None: HTTPS_PROXY/NO_PROXY decide
    # A token that changes (a rotated token file, an exec credential plugin); ``token`` is unused then.
    token_source: tokens.TokenSource | None = field(default=None, compare=False)


def _data_or_file(entry: Mapping[str, Any], key: str, base: Path | None) -> bytes | None:
    if entry.get(f"{key}-data"):
        return base64.b64decode(entry[f"{key}-data"])
    if entry.get(key):
        p = Path(entry[key])
        return (p if p.is_absolute() or base is None else base / p).read_bytes()
    return None


def credentials_from_kubeconfig(config: Mapping[str, Any] | str | Path, *, context: str | None = None) -> Credentials:
    base: Path | None = None
    try:
        if isinstance(config, Path):
            base = config.parent
            config = yaml.safe_load(config.read_text())
        elif isinstance(config, str):
            config = yaml.safe_load(config)
        if not isinstance(config, Mapping):
            raise ConfigError("kubeconfig is not a mapping")
        ctx_name = context or config.get("current-context")
        contexts = {c["name"]: c["context"] for c in config.get("contexts") or []}
        clusters = {c["name"]: c["cluster"] for c in config.get("clusters") or []}
        users = {u["name"]: u.get("user") or {} for u in config.get("users") or []}
        if ctx_name not in contexts:
            raise ConfigError(f"context {ctx_name!r} not found in kubeconfig")
        ctx = contexts[ctx_name]
        cluster = clusters[ctx["cluster"]]
        user = users.get(ctx.get("user", ""), {})
        server = str(cluster["server"]).rstrip("/")
    except (KeyError, TypeError, yaml.YAMLError, OSError) as exc:
        raise ConfigError(f"unusable kubeconfig: {exc!r}") from exc
    if not server.startswith("https://") and not server.startswith("http://"):
        raise ConfigError(f"server {server!r} is not an http(s) URL")
    if user.get("auth-provider"):  # client-go dropped gcp and azure; oidc has an exec plugin (kubelogin)
        name = (user["auth-provider"] or {}).get("name", "?")
        raise ConfigError(f"auth-provider {name!r} is not supported: use an exec credential plugin "
                          "(gke-gcloud-auth-plugin, kubelogin, aws eks get-token), as kubectl 1.26+ requires")
    token = user.get("token")
    source: tokens.TokenSource | None = None
    if not token and user.get("tokenFile"):
        path = Path(user["tokenFile"])
        source = tokens.TokenFile(path if path.is_absolute() or base is None else base / path)
    elif not token and user.get("exec"):
        source = _exec_plugin(user["exec"], base)
    return Credentials(
        server=server,
        ca_pem=_data_or_file(cluster, "certificate-authority", base),
        token=token,
        token_source=source,
        client_cert_pem=_data_or_file(user, "client-certificate", base),
        client_key_pem=_data_or_file(user, "client-key", base),
        insecure=bool(cluster.get("insecure-skip-tls-verify")),
        proxy_url=cluster.get("proxy-url") or None,
    )


def _exec_plugin(spec: Mapping[str, Any], base: Path | None) -> tokens.ExecPlugin:
    """A kubeconfig's ``exec`` stanza. A command with a path but not absolute is relative to the
    kubeconfig's folder (as kubectl resolves it); a bare name is looked up on PATH."""
    try:
        command = str(spec["command"])
        if "/" in command and not Path(command).is_absolute() and base is not None:
            command = str(base / command)
        env = {str(e["name"]): str(e["value"]) for e in spec.get("env") or []}
        return tokens.ExecPlugin(command, [str(a) for a in spec.get("args") or []], env,
                                 api_version=str(spec.get("apiVersion", "client.authentication.k8s.io/v1")))
    except (KeyError, TypeError) as exc:
        raise ConfigError(f"unusable exec credential plugin: {exc!r}") from exc


def proxy_for(creds: Credentials) -> str | None:
    """The HTTP(S) proxy requests to ``creds.server`` go through, as client-go chooses it: the
    kubeconfig's ``proxy-url``, else ``HTTPS_PROXY`` (``HTTP_PROXY`` for http) unless ``NO_PROXY``
    names the host; never for localhost or a loopback address (Go's ProxyFromEnvironment rule)."""
    if creds.proxy_url:
        return creds.proxy_url
    url = urllib.parse.urlsplit(creds.server)
    host = url.hostname or ""
    if host == "localhost" or _loopback(host):
        return None
    proxies = urllib.request.getproxies_environment()
    proxy = proxies.get(url.scheme)
    if not proxy or urllib.request.proxy_bypass(url.netloc):  # NO_PROXY (the environment, on Linux)
        return None
    return proxy


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _ssl_context(creds: Credentials) -> ssl.SSLContext | bool:
    if not creds.server.startswith("https://"):
        return False
    ctx = ssl.create_default_context(cadata=creds.ca_pem.decode() if creds.ca_pem else None)
    if creds.insecure:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    if creds.client_cert_pem and creds.client_key_pem:
        with _in_memory_file(creds.client_cert_pem) as cert, _in_memory_file(creds.client_key_pem) as key:
            ctx.load_cert_chain(cert, key)
    return ctx


@contextlib.contextmanager
def _in_memory_file(data: bytes) -> Iterator[str]:
    """A path to ``data`` that never touches a disk: ssl can load a certificate only from a path,
    and the services run with a read-only root filesystem (a memfd on Linux; a private temporary
    file elsewhere)."""
    if hasattr(os, "memfd_create"):
        fd = os.memfd_create("standby-credential", os.MFD_CLOEXEC)
        try:
            os.write(fd, data)
            yield f"/proc/self/fd/{fd}"
        finally:
            os.close(fd)
        return
    with tempfile.NamedTemporaryFile() as f:
        f.write(data)
        f.flush()
        yield f.name


@dataclass(frozen=True)
class ResourceInfo:
    group: str
    version: str
    resource: str
    kind: str
    namespaced: bool

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    def collection(self, namespace: str = "") -> str:
        base = f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"
        if self.namespaced and namespace:
            return f"{base}/namespaces/{quote(namespace, safe='')}/{self.resource}"
        return f"{base}/{self.resource}"

    def item(self, namespace: str, name: str) -> str:
        return f"{self.collection(namespace)}/{quote(name, safe='')}"


# A single object's (a list's items') metadata only (every built-in and custom resource serves it);
# plain JSON from an API that does not (content negotiation falls back to the second type).
METADATA_ONLY = "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1, application/json"
METADATA_LIST = "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1, application/json"
# An idle connection is kept this long for the next request: aiohttp's default of 15 s makes a burst
# after a quiet quarter-minute open (and TLS-handshake) every connection again. The API server closes
# idle connections after 90 s (client-go keeps them as long); 45 s also stays under the 60 s idle
# timeout of many load balancers in front of API servers (a reused connection they closed fails).
IDLE_CONNECTION_SECONDS = 45.0
# One watch event is one line of JSON. The API server stores objects up to ~1.5 MiB (etcd's request
# limit) and accepts requests up to 3 MiB; escaped as JSON inside an event, a line can be larger
# still. aiohttp's default line limit (its read buffer, 128 KiB to 512 KiB) ended the watch of any
# resource that held one large object; this leaves room for every object the API server can hold.
MAX_WATCH_EVENT_BYTES = 16 * 1024 * 1024


def _retry_after(headers: Mapping[str, str]) -> float | None:
    value = headers.get("Retry-After")
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


class KubeClient:
    """One connection pool to one API server. Use as an async context manager."""

    def __init__(self, creds: Credentials, *, connections: int = 64, timeout_seconds: float = 30.0,
                 user_agent: str = "standby") -> None:
        self.creds = creds
        self._connections = connections
        self._timeout = timeout_seconds
        self._user_agent = user_agent
        self._session: aiohttp.ClientSession | None = None
        self._discovery: dict[str, dict[str, ResourceInfo]] = {}

    @classmethod
    def from_kubeconfig(cls, config: Mapping[str, Any] | str | Path, **kwargs: Any) -> KubeClient:
        return cls(credentials_from_kubeconfig(config), **kwargs)

    async def __aenter__(self) -> KubeClient:
        self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def open(self) -> None:
        if self._session is None:
            headers = {"User-Agent": self._user_agent, "Accept": "application/json"}
            if self.creds.token:
                headers["Authorization"] = f"Bearer {self.creds.token}"
            self._session = aiohttp.ClientSession(
                base_url=self.creds.server,
                headers=headers,
                proxy=proxy_for(self.creds),
                connector=aiohttp.TCPConnector(limit=self._connections, ssl=_ssl_context(self.creds),
                                         keepalive_timeout=IDLE_CONNECTION_SECONDS),
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=10),
            )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            self.open()
        assert self._session is not None
        return self._session

    async def request(
        self, method: str, path: str, *, params: Mapping[str, str] | None = None, body: Any = None,
        content_type: str = "application/json", timeout: float | None = None, parse: bool = True,
        accept: str | None = None,
    ) -> Obj:
        """One call. ``parse=False`` skips decoding the answer. A 401 with a changing token (a rotated
        file, an exec plugin) gets the token again and is tried once more."""
        data = orjson.dumps(body) if body is not None else None
        headers = {"Content-Type": content_type} if data is not None else {}
        if accept:
            headers["Accept"] = accept
        source = self.creds.token_source
        for attempt in (1, 2):
            if source is not None:
                headers["Authorization"] = f"Bearer {await self._token(source)}"
            try:
                async with self.session.request(
                    method, path, params=params, data=data, headers=headers,
                    timeout=aiohttp.ClientTimeout(total=timeout or self._timeout),
                ) as resp:
                    raw = await resp.read()
                    if resp.status == 401 and source is not None and attempt == 1:
                        source.invalidate()
                        continue
                    if resp.status >= 400:
                        raise _error(resp.status, raw, resp.headers)
                    return orjson.loads(raw) if raw and parse else {}
            except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, TimeoutError) as exc:
                raise UnreachableError(f"{self.creds.server}: {exc!r}") from exc
        raise AssertionError("unreachable")  # the loop returns or raises

    async def bearer_token(self, *, fresh: bool = False) -> str | None:
        """The token requests carry now (for another client of the same cluster: kopf's); with
        ``fresh``, read again from its source (after a 401: a rotated file, a new plugin token)."""
        source = self.creds.token_source
        if source is None:
            return self.creds.token
        if fresh:
            source.invalidate()
        return await self._token(source)

    async def _token(self, source: tokens.TokenSource) -> str:
        try:
            return await source.token()
        except tokens.CredentialError as exc:
            raise ApiError(401, "CredentialsUnavailable", str(exc)) from exc

    async def get(self, path: str, **params: str) -> Obj:
        return await self.request("GET", path, params=params or None)

    async def apply(self, path: str, body: Obj, *, field_manager: str, force: bool = True,
                    dry_run: bool = False, parse: bool = True, field_validation: str = "Ignore") -> Obj:
        """Server-side apply of one object. ``parse=False``: the caller does not read the answer, so
        only the object's metadata is asked for (less for the server to encode and send than the
        whole object it otherwise echoes).

        ``fieldValidation=Ignore`` by default: with the server's default (Warn) it parses the body
        a second time, strictly, only to send warnings about unknown or duplicate fields, which
        nothing here reads (the fields are dropped either way); that second parse was a tenth of a
        stand-by API server's CPU in the scale benchmark's profile. ``Strict`` refuses them."""
        params = {"fieldManager": field_manager, "force": "true" if force else "false",
                  "fieldValidation": field_validation}
        if dry_run:
            params["dryRun"] = "All"
        return await self.request("PATCH", path, params=params, body=body, content_type="application/apply-patch+yaml",
                                  parse=parse, accept=None if parse else METADATA_ONLY)

    async def delete(self, path: str, *, uid: str | None = None) -> Obj:
        body: Obj = {"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": "Background"}
        if uid:
            body["preconditions"] = {"uid": uid}
        return await self.request("DELETE", path, body=body)

    async def list_all(self, path: str, *, label_selector: str = "", page_size: int = 500,
                       accept: str | None = None) -> tuple[list[Obj], str]:
        """A consistent paginated LIST (``resourceVersion`` unset: served from etcd, never stale).
        ``accept=METADATA_LIST``: the items carry only their metadata."""
        items: list[Obj] = []
        resource_version = ""
        async for page, page_rv in self.list_pages(path, label_selector=label_selector, page_size=page_size,
                                                   accept=accept):
            items.extend(page)
            resource_version = page_rv
        return items, resource_version

    async def list_pages(self, path: str, *, label_selector: str = "", page_size: int = 500,
                         first_page_size: int | None = None,
                         accept: str | None = None) -> AsyncIterator[tuple[list[Obj], str]]:
        """The pages of one consistent LIST as they arrive, each with the list's resourceVersion
        (every page of one LIST is of the same snapshot). ``first_page_size``: a first page of
        another size (a smaller one arrives sooner, for a caller that starts on it)."""
        params = {"limit": str(first_page_size or page_size)}
        if label_selector:
            params["labelSelector"] = label_selector
        while True:
            page = await self.request("GET", path, params=params, accept=accept)
            meta = page.get("metadata") or {}
            yield page.get("items") or [], str(meta.get("resourceVersion", ""))
            if not meta.get("continue"):
                return
            params |= {"continue": meta["continue"], "limit": str(page_size)}

    async def watch(
        self, path: str, *, resource_version: str, label_selector: str = "", timeout_seconds: int = 300,
        accept: str | None = None,
    ) -> AsyncIterator[Obj]:
        """Watch events from ``resource_version`` with bookmarks. Raises ApiError(410) when the
        version is too old: the caller must LIST again, never resume from an expired version.
        ``accept=METADATA_ONLY``: the events carry only the objects' metadata."""
        params = {
            "watch": "true",
            "resourceVersion": resource_version,
            "allowWatchBookmarks": "true",
            "timeoutSeconds": str(timeout_seconds),
        }
        if label_selector:
            params["labelSelector"] = label_selector
        headers = {"Accept": accept} if accept else {}
        source = self.creds.token_source
        if source is not None:
            headers["Authorization"] = f"Bearer {await self._token(source)}"
        try:
            async with self.session.get(
                path, params=params, headers=headers,
                timeout=aiohttp.ClientTimeout(total=timeout_seconds + 30, sock_read=timeout_seconds + 30),
            ) as resp:
                if resp.status >= 400:
                    if resp.status == 401 and source is not None:
                        source.invalidate()  # the caller watches again, with a new token
                    raise _error(resp.status, await resp.read(), resp.headers)
                while line := await resp.content.readline(max_line_length=MAX_WATCH_EVENT_BYTES):
                    if not line.strip():
                        continue
                    event = orjson.loads(line)
                    if event.get("type") == "ERROR":
                        status = event.get("object") or {}
                        raise ApiError(int(status.get("code", 500)), str(status.get("reason", "")),
                                       str(status.get("message", "")), body=status)
                    yield event
        except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, LineTooLong, TimeoutError) as exc:
            raise UnreachableError(f"{self.creds.server}: watch {path}: {exc!r}") from exc

    # -- discovery ------------------------------------------------------------------------------
    async def resources(self, group: str, version: str, *, fresh: bool = False) -> dict[str, ResourceInfo]:
        """The resources of one group-version, cached; ``fresh``: read discovery again."""
        key = f"{group}/{version}"
        if fresh or key not in self._discovery:
            path = f"/apis/{group}/{version}" if group else f"/api/{version}"
            doc = await self.get(path)
            self._discovery[key] = {
                r["name"]: ResourceInfo(group, version, r["name"], r["kind"], bool(r.get("namespaced")))
                for r in doc.get("resources") or []
                if "/" not in r["name"]
            }
        return self._discovery[key]

    async def resolve(self, group: str, version: str, resource: str) -> ResourceInfo:
        """Resolve a plan's resource, falling back to the group's preferred served version.

        A miss reads discovery again before it is believed: a kind served since the last read (a
        CRD installed, an operator upgraded) is found at once. Raises :class:`NotServedError`."""
        for fresh in (False, True):
            try:
                found = (await self.resources(group, version, fresh=fresh)).get(resource)
            except ApiError as exc:
                if exc.status != 404 or not group:
                    raise
                found = None
            if found is not None:
                return found
        if group:
            try:
                doc = await self.get(f"/apis/{group}")
            except ApiError as exc:
                if exc.status != 404:
                    raise
                raise NotServedError(group, version, resource, f"the group {group} is not served") from exc
            preferred = (doc.get("preferredVersion") or {}).get("version")
            if preferred and preferred != version:
                found = (await self.resources(group, preferred, fresh=True)).get(resource)
                if found is not None:
                    return found
        raise NotServedError(group, version, resource, f"{group or 'core'}/{version} does not serve {resource}")

    async def server_version(self) -> str:
        return str((await self.get("/version")).get("gitVersion", ""))


def _error(status: int, raw: bytes, headers: Mapping[str, str]) -> ApiError:
    try:
        body = orjson.loads(raw)
        reason, message = str(body.get("reason", "")), str(body.get("message", ""))
    except ValueError:
        body, reason, message = {}, "", raw[:500].decode(errors="replace")
    return ApiError(status, reason, message, retry_after=_retry_after(headers), body=body)


async def follow(client: KubeClient, path: str, *, listed: Callable[[list[Obj]], None],
                 changed: Callable[[str, Obj], None], retry_seconds: float, what: str,
                 level: int = logging.WARNING, label_selector: str = "") -> None:
    """LIST ``path`` and hand the items to ``listed``, then WATCH from the list's version and hand
    every event but bookmarks to ``changed`` (type, object); LIST again after 410 Gone, and after
    any other failure once ``retry_seconds`` have passed (logged at ``level``). Until cancelled."""
    while True:
        try:
            items, resource_version = await client.list_all(path, label_selector=label_selector)
            listed(items)
            while True:
                async for event in client.watch(path, resource_version=resource_version,
                                                label_selector=label_selector):
                    obj = event.get("object") or {}
                    resource_version = str((obj.get("metadata") or {}).get("resourceVersion", resource_version))
                    if event.get("type") != "BOOKMARK":
                        changed(event.get("type", ""), obj)
        except ApiError as exc:
            if not exc.gone:
                log.log(level, "cannot follow %s: %s", what, exc)
                await asyncio.sleep(retry_seconds)
        except UnreachableError as exc:
            log.log(level, "cannot follow %s: %s", what, exc)
            await asyncio.sleep(retry_seconds)


async def wait_for(predicate: Any, *, timeout: float, interval: float = 0.1, what: str = "condition") -> Any:
    """Poll an async predicate until it returns something truthy."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        result = await predicate()
        if result:
            return result
        if loop.time() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(interval)


def in_cluster_credentials() -> Credentials:
    """The pod's service account (the services' normal way in a cluster). The projected token is
    rotated by the kubelet: it is read again every minute and after a 401."""
    root = Path("/var/run/secrets/kubernetes.io/serviceaccount")
    host, port = os.environ.get("KUBERNETES_SERVICE_HOST"), os.environ.get("KUBERNETES_SERVICE_PORT", "443")
    if not host or not (root / "token").exists():
        raise ConfigError("not running in a cluster and no kubeconfig given")
    return Credentials(server=f"https://{host}:{port}", ca_pem=(root / "ca.crt").read_bytes(), token=None,
                       token_source=tokens.TokenFile(root / "token"))


def own_client(kubeconfig: Path | None, **kwargs: Any) -> KubeClient:
    """The cluster a service lives in: a kubeconfig in development, the service account in a pod."""
    return KubeClient.from_kubeconfig(kubeconfig, **kwargs) if kubeconfig else KubeClient(in_cluster_credentials(),
                                                                                        **kwargs)
