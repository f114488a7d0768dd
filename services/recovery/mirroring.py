"""The stand-by's own copy of the record: a JetStream mirror of every plan's stream, kept in the
stand-by's NATS server.

In the three-cluster topology the streams live in the management cluster's JetStream. The
stand-by's server joins it as a **leaf node** with a JetStream domain of its own, and this keeper
creates, in that local domain, a mirror of each plan's stream of the origin domain (same name, same
per-subject limits). JetStream keeps each mirror current by itself; with the management cluster
gone, the mirrors keep what they hold and are read, under the streams' own names, by
``fromOriginal`` and by ``standby rebuild --direct`` pointed at the stand-by's server.

Why a leaf node and not a second cluster joined by a gateway (a super-cluster): a super-cluster has
one JetStream meta group across both regions, so the region left standing loses its quorum with the
other and can no longer create or update a stream; a leaf node's domain is a JetStream of its own,
whole whichever side is lost. The leaf connection goes out of the stand-by (the management cluster
need not reach it), and the origin needs nothing but a domain name and a leaf node port.

A mirror is never deleted here: an origin stream that disappears is what the mirror is for. The
keeper owns only the mirrors (a local stream of the same name that is not this origin's mirror is
reported, never changed)."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field

from nats.aio.client import Client
from nats.errors import Error as NatsError
from nats.js import JetStreamContext
from nats.js import api as js_api
from nats.js.errors import NotFoundError

from services.recovery import metrics

log = logging.getLogger(__name__)

STREAM_PREFIX = "STANDBY_"  # schemas.subjects.stream_name's


def mirror_config(origin: js_api.StreamConfig, domain: str, replicas: int) -> js_api.StreamConfig:
    """The local mirror of the origin stream ``origin`` of JetStream ``domain``: the same name and
    per-subject history, no subjects of its own (a mirror takes no publications)."""
    assert origin.name is not None
    return js_api.StreamConfig(
        name=origin.name,
        mirror=js_api.StreamSource(name=origin.name, external=js_api.ExternalStream(api=f"$JS.{domain}.API")),
        retention=js_api.RetentionPolicy.LIMITS,
        storage=js_api.StorageType.FILE,
        max_msgs_per_subject=origin.max_msgs_per_subject,
        max_msg_size=origin.max_msg_size,
        max_age=0,
        discard=js_api.DiscardPolicy.OLD,
        allow_direct=True,
        mirror_direct=True,
        num_replicas=replicas,
        description=f"Standby: the stand-by's mirror of {origin.name} (JetStream domain {domain})",
    )


def is_mirror_of(config: js_api.StreamConfig, domain: str) -> bool:
    mirror = config.mirror
    return (mirror is not None and mirror.name == config.name and mirror.external is not None
            and mirror.external.api == f"$JS.{domain}.API")


@dataclass(frozen=True)
class MirrorState:
    stream: str
    last_sequence: int
    lag: int | None  # messages behind the origin, as last known
    last_contact_seconds: float | None  # since the origin was last heard from
    error: str = ""


async def all_streams(js: JetStreamContext) -> list[js_api.StreamInfo]:
    """Every stream of ``js``'s domain, with its state and mirror (all pages of the list)."""
    found: list[js_api.StreamInfo] = []
    while True:
        page = await js.streams_info(offset=len(found))
        if not page:
            return found
        found.extend(page)


def state_of(info: js_api.StreamInfo) -> MirrorState:
    mirror = info.mirror
    name = info.config.name or ""
    if mirror is None:
        return MirrorState(name, info.state.last_seq, None, None, "not a mirror")
    error = str(mirror.error.get("description", "")) if mirror.error else ""
    contact = mirror.active / 1e9 if mirror.active is not None and mirror.active >= 0 else None
    return MirrorState(name, info.state.last_seq, mirror.lag, contact, error)


@dataclass
class MirrorKeeper:
    """Keeps a mirror of every Standby stream of JetStream ``domain`` in the local domain."""

    nc: Client
    domain: str
    replicas: int = 1
    states: dict[str, MirrorState] = field(default_factory=dict)
    origin_lost: bool = False

    async def once(self) -> dict[str, MirrorState]:
        local = self.nc.jetstream()
        try:
            origins = [s for s in await all_streams(self.nc.jetstream(domain=self.domain))
                       if (s.config.name or "").startswith(STREAM_PREFIX)]
        except (NatsError, TimeoutError) as exc:
            if not self.origin_lost:
                log.warning("the record's origin (JetStream domain %s) is unreachable (%r); the mirrors keep "
                            "what they hold", self.domain, exc)
            self.origin_lost = True
            origins = []
        else:
            if self.origin_lost:
                log.warning("the record's origin (JetStream domain %s) is reachable again", self.domain)
            self.origin_lost = False
        for origin in origins:
            await self._ensure(local, origin.config)
        mirrors = [s for s in await all_streams(local) if is_mirror_of(s.config, self.domain)]
        self.states = {state.stream: state for state in map(state_of, mirrors)}
        for state in self.states.values():
            metrics.mirror_state(state.stream, state.lag, state.last_contact_seconds)
        return self.states

    async def _ensure(self, local: JetStreamContext, origin: js_api.StreamConfig) -> None:
        wanted = mirror_config(origin, self.domain, self.replicas)
        try:
            have = (await local.stream_info(wanted.name or "")).config
        except NotFoundError:
            await local.add_stream(wanted)
            log.info("mirroring %s of JetStream domain %s", wanted.name, self.domain)
            return
        if not is_mirror_of(have, self.domain):
            log.error("stream %s in the stand-by's server is not a mirror of domain %s: left alone, not mirrored",
                      wanted.name, self.domain)
            return
        if (have.max_msgs_per_subject, have.max_msg_size, have.num_replicas) != (
                wanted.max_msgs_per_subject, wanted.max_msg_size, wanted.num_replicas):
            await local.update_stream(wanted)

    async def run(self, interval_seconds: float) -> None:
        """Until cancelled (a guarded task: a failure is logged and the keeper started again)."""
        while True:
            await self.once()
            await asyncio.sleep(interval_seconds)
