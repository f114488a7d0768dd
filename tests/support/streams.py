"""Reading what the watcher published, for assertions."""

from __future__ import annotations

from nats.js import JetStreamContext
from nats.js import api as js_api
from nats.js.errors import NotFoundError

from schemas import codec, sealing
from schemas.envelope import Envelope


async def raw_messages(js: JetStreamContext, stream: str, filter_subject: str = ">") -> list[tuple[int, str, bytes]]:
    """Every message still in the stream under ``filter_subject``, in stream order, as stored."""
    try:
        info = await js.stream_info(stream)
    except NotFoundError:
        return []
    if info.state.messages == 0:
        return []
    sub = await js.pull_subscribe(filter_subject, stream=stream, config=js_api.ConsumerConfig(
        deliver_policy=js_api.DeliverPolicy.ALL, ack_policy=js_api.AckPolicy.NONE, inactive_threshold=10,
        mem_storage=True))
    out: list[tuple[int, str, bytes]] = []
    try:
        while True:
            try:
                batch = await sub.fetch(1000, timeout=1)
            except TimeoutError:
                return out
            for msg in batch:
                if not any(f"-{kind}." in msg.subject for kind in ("dlq", "plan", "horizon")):  # objects only
                    out.append((msg.metadata.sequence.stream, msg.subject, msg.data))
                if msg.metadata.num_pending == 0:
                    return out
    finally:
        await sub.unsubscribe()


async def messages(js: JetStreamContext, stream: str, filter_subject: str = ">", *,
                   keyring: sealing.Keyring | None = None) -> list[tuple[int, str, Envelope]]:
    """Every message still in the stream under ``filter_subject``, in stream order, decoded
    (Secrets need the ``keyring``)."""
    return [(seq, subject, codec.decode(data, keyring=keyring))
            for seq, subject, data in await raw_messages(js, stream, filter_subject)]
