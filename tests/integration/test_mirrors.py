"""The stand-by's mirror of the record (services.recovery.mirroring) on real nats-servers: the sync
side's server (domain hub) and the stand-by's, joined as a leaf node. Every plan stream of the hub
is mirrored under its own name; the mirror is read as the stream is (last states, the recorded
plan); with the hub gone it keeps what it holds, and it catches up when the hub is back."""

from __future__ import annotations

from pathlib import Path

from nats.aio.client import Client
from nats.js import JetStreamContext

from schemas import api, subjects
from services.common import plans, records, settings, streams
from services.devenv.natsd import LocalNats
from services.recovery import mirroring
from tests.support import env as h
from tests.support.mirrors import HUB, hub_and_leaf

NS = "standby-system"


def subject(plan: str, name: str) -> str:
    return subjects.object_subject(prefix="standby", plan_namespace=NS, plan_name=plan, group="", version="v1",
                                   resource="configmaps", namespace="app", name=name)


async def publish(js: JetStreamContext, plan: str, values: range) -> None:
    for i in values:
        await js.publish(subject(plan, f"c{i % 5}"), f"v{i}".encode(), stream=subjects.stream_name(NS, plan),
                         headers={streams.HDR_TYPE: "MODIFIED", streams.HDR_RV: str(i), streams.HDR_UID: f"u{i % 5}"})


def plan(name: str) -> plans.Plan:
    return plans.parse_plan(h.plan_body(name, [{"version": "v1", "resource": "configmaps"}]) | {
        "metadata": {"name": name, "namespace": NS, "uid": f"uid-{name}", "generation": 3}})


async def connect(server: LocalNats) -> tuple[Client, JetStreamContext]:
    nc = await streams.connect(h.nats_settings(server), name="test-mirrors")
    return nc, nc.jetstream()


async def test_every_plan_stream_is_mirrored_readable_and_kept_without_its_origin(tmp_path: Path) -> None:
    with hub_and_leaf(tmp_path) as (hub, leaf):
        hub_nc, hub_js = await connect(hub)
        leaf_nc, leaf_js = await connect(leaf)
        try:
            for name in ("shop", "books"):
                await streams.ensure_stream(hub_js, settings.NatsSettings(), NS, name, api.History(states_per_object=3))
                await records.publish(hub_js, "standby", plan(name))
                await publish(hub_js, name, range(20))
            await hub_js.add_stream(name="OTHER", subjects=["other.>"])  # not Standby's: not mirrored

            keeper = mirroring.MirrorKeeper(leaf_nc, HUB)
            await keeper.once()
            stream = subjects.stream_name(NS, "shop")

            async def caught_up() -> None:
                states = await keeper.once()
                assert set(states) == {stream, subjects.stream_name(NS, "books")}
                assert states[stream].last_sequence == (await hub_js.stream_info(stream)).state.last_seq
                assert states[stream].lag == 0 and not states[stream].error
            await h.eventually(caught_up, timeout=30)
            config = (await leaf_js.stream_info(stream)).config
            assert config.max_msgs_per_subject == 3 and not config.subjects and mirroring.is_mirror_of(config, HUB)

            # Read as the stream is: the last state of every object, and the plan itself.
            everything = subjects.plan_filter("standby", NS, "shop")
            mirrored = await streams.last_messages(leaf_js, stream, everything, headers_only=False)
            original = await streams.last_messages(hub_js, stream, everything, headers_only=False)
            assert {s: m.data for s, m in mirrored.items()} == {s: m.data for s, m in original.items()}
            assert len(mirrored) == 5
            recorded = await records.recorded(leaf_js, "standby", NS, "shop")
            assert recorded is not None and recorded.plan.generation == 3 and recorded.plan.uid == "uid-shop"

            # The origin gone: the keeper says so and goes on; the mirror keeps what it holds.
            hub.kill()
            await keeper.once()
            assert keeper.origin_lost
            again = await streams.last_messages(leaf_js, stream, everything, headers_only=False)
            assert {s: m.data for s, m in again.items()} == {s: m.data for s, m in original.items()}

            # Back: a change made since reaches the mirror.
            hub.start()
            await h.eventually(lambda: publish(hub_js, "shop", range(20, 21)), timeout=30)
            await h.eventually(caught_up, timeout=60)
            assert not keeper.origin_lost
            last = await streams.last_messages(leaf_js, stream, subject(plan="shop", name="c0"), headers_only=False)
            assert last[subject("shop", "c0")].data == b"v20"
        finally:
            await hub_nc.close()
            await leaf_nc.close()


async def test_a_stream_of_the_same_name_that_is_no_mirror_is_left_alone(tmp_path: Path) -> None:
    with hub_and_leaf(tmp_path) as (hub, leaf):
        hub_nc, hub_js = await connect(hub)
        leaf_nc, leaf_js = await connect(leaf)
        try:
            await streams.ensure_stream(hub_js, settings.NatsSettings(), NS, "shop", api.History())
            await streams.ensure_stream(leaf_js, settings.NatsSettings(), NS, "shop", api.History())  # a local one
            await publish(leaf_js, "shop", range(3))
            states = await mirroring.MirrorKeeper(leaf_nc, HUB).once()
            assert states == {}
            info = await leaf_js.stream_info(subjects.stream_name(NS, "shop"))
            assert info.config.mirror is None and info.state.messages == 3
        finally:
            await hub_nc.close()
            await leaf_nc.close()
