"""Fan-out at the edge through a real system: routers publish one edge batch per gateway
(``edge.<gateway id>``) with each frame once and that gateway's devices; a device that moves
between gateways misses nothing; a restarted router (no markers seen) delivers from presence;
a malformed edge batch is counted and the gateway keeps serving. The pure parts:
tests/unit/test_edge.py."""

import asyncio
from collections import defaultdict

import msgspec
from nats.aio.msg import Msg

from client.sdk import CourierClient
from runtime.config import load_config
from schemas.edge import EdgeBatch, EdgeItem, decode_edge_batch, encode_edge_batch
from schemas.envelopes import AttachEnvelope, encode_envelope
from schemas.subjects import ATTACH, edge_subject, msgs_stream, msgs_subject
from tests.e2e.social_helpers import call, wait_for
from tests.e2e.test_socket_memory import metrics
from tests.harness import System

MEMBERS = 20


class EdgeTap:
    """Every edge batch on the bus (a subscriber with the gateway credential: ``edge.*``)."""

    def __init__(self) -> None:
        self.batches: list[tuple[str, EdgeBatch]] = []

    async def record(self, msg: Msg) -> None:
        self.batches.append((msg.subject.removeprefix("edge."), decode_edge_batch(msg.data)))

    def carrying(self, message_id: str) -> list[tuple[str, EdgeItem]]:
        """(gateway, item) of every item whose frame is the message ``message_id``."""
        return [(gateway, item) for gateway, batch in self.batches for item in batch.items
                if msgspec.json.decode(item.frame).get("message_id") == message_id]

    def publishes_carrying(self, message_id: str) -> dict[str, int]:
        """Per gateway, how many edge batches carried the message."""
        counts: dict[str, int] = defaultdict(int)
        for gateway, batch in self.batches:
            if any(msgspec.json.decode(item.frame).get("message_id") == message_id
                   for item in batch.items):
                counts[gateway] += 1
        return dict(counts)


def metric(text: str, name: str, labels: str = "") -> float:
    prefix = f"{name}{{{labels}}} " if labels else f"{name} "
    return sum(float(line.removeprefix(prefix)) for line in text.splitlines()
               if line.startswith(prefix))


async def test_a_group_message_goes_once_per_gateway_and_reaches_every_device_once(
        system: System) -> None:
    system.add_gateway()
    urls = [system.gateway_url(0), system.gateway_url(1)]
    users = [f"u{i:02d}" for i in range(MEMBERS)]
    devices: dict[str, CourierClient] = {}
    for index, user in enumerate(users):
        devices[f"{user}-a"] = await system.connect(await system.device(user, f"{user}-a"),
                                                    urls[index % 2])
    for user in users[1:4]:  # a second device on the other gateway
        index = users.index(user) + 1
        devices[f"{user}-b"] = await system.connect(await system.device(user, f"{user}-b"),
                                                    urls[index % 2])
    gateway_of = {name: client.welcome.gateway for name, client in devices.items()
                  if client.welcome is not None}
    assert len(set(gateway_of.values())) == 2
    tap_nc = await system.nats_client("gateway")
    tap = EdgeTap()
    try:
        await tap_nc.subscribe(edge_subject("*"), cb=tap.record)
        await tap_nc.flush()
        owner = devices["u00-a"]
        await call(owner, "POST", "/v1/groups", {"id": "team", "members": users[1:]}, 201)
        receivers = [name for name in devices if name != "u00-a"]
        for name in devices:  # the group's creation message: every device, the owner's too
            assert (await devices[name].next_message()).kind == "system"
        first = await owner.send("team", b"hello", kind="group")
        second = await owner.send("team", b"again", kind="group")
        for name in receivers:
            got = [await devices[name].next_message() for _ in range(2)]
            assert [m.message_id for m in got] == [first.message_id, second.message_id], name
            assert devices[name].duplicates == 0 and devices[name].pending_messages() == 0

        await wait_for(lambda: len(tap.carrying(second.message_id)) == 2)
        # one publish per gateway, one item each: the frame encoded once for its devices
        assert tap.publishes_carrying(first.message_id) == {gw: 1 for gw in gateway_of.values()}
        items = tap.carrying(first.message_id)
        assert len(items) == 2
        for gateway, item in items:
            assert sorted(item.devices) == sorted(
                name for name in receivers if gateway_of[name] == gateway)
    finally:
        await tap_nc.close()
        for client in devices.values():
            await client.close()


async def test_a_device_moving_to_another_gateway_mid_stream_gets_every_message(
        system: System) -> None:
    system.add_gateway()
    alice = await system.connect(await system.device("alice", "alice-phone"))
    bob_creds = await system.device("bob", "bob-phone")
    on_a = await system.connect(bob_creds, system.gateway_url(0))
    sent: list[str] = []
    moved = asyncio.Event()
    after_move: list[str] = []

    async def stream() -> None:
        for index in range(60):
            accepted = await alice.send("bob", f"m{index}".encode())
            sent.append(accepted.message_id)
            if moved.is_set():
                after_move.append(accepted.message_id)
            await asyncio.sleep(0.01)

    streaming = asyncio.create_task(stream())
    try:
        got_a: list[str] = []
        while len(got_a) < 15:
            got_a.append((await on_a.next_message()).message_id)
        on_b = await system.connect(bob_creds, system.gateway_url(1))  # welcome, then sync
        moved.set()
        await streaming
        assert after_move, "the stream ended before the move"
        got_b: set[str] = set()
        while not got_b | set(got_a) >= set(sent):
            got_b.add((await on_b.next_message(timeout=15)).message_id)
        assert on_b.duplicates == 0  # the backlog and the held live frames: each once
        assert set(after_move) <= got_b  # live after the move, without syncing again
        await wait_for(lambda: on_a.closed)  # the older socket was replaced
        assert on_a.close_code == 4011
        last = await alice.send("bob", b"later")  # still live on B
        assert (await on_b.next_message()).message_id == last.message_id
        await on_b.close()
    finally:
        streaming.cancel()
        await asyncio.gather(streaming, return_exceptions=True)
        await alice.close()
        await on_a.close()


async def test_routers_follow_attach_markers_in_stream_order(system: System) -> None:
    """A marker (forged here with the gateway credential) moves bob's next messages to its
    gateway, whatever presence says; the messages before it stay where they were."""
    alice = await system.connect(await system.device("alice"))
    bob = await system.connect(await system.device("bob", "bob"))
    assert bob.welcome is not None
    home = bob.welcome.gateway
    partitions = load_config(system.env("gateway")).partitions.count
    nc = await system.nats_client("gateway")
    js = nc.jetstream()
    tap = EdgeTap()

    async def attach(gateway: str, rev: int) -> None:
        marker = encode_envelope(AttachEnvelope(
            app="default", user="bob", device="bob", gateway=gateway, session="forged",
            presence_rev=rev, ts=1))
        for partition in range(partitions):
            await js.publish(msgs_subject(partition, ATTACH), marker,
                             stream=msgs_stream(partition))

    try:
        await nc.subscribe(edge_subject("gw-tap"), cb=tap.record)
        await nc.flush()
        first = await alice.send("bob", b"one")
        assert (await bob.next_message()).message_id == first.message_id
        # markers past their bounds are refused (dead-lettered): accepted, their higher
        # revisions would win over the marker below
        for gateway, rev in (("gw.dotted", 2**62 + 1), ("gw-evil", 2**63)):
            bad = msgspec.msgpack.encode({
                "t": "att", "app": "default", "user": "bob", "device": "bob",
                "gateway": gateway, "session": "forged", "presence_rev": rev, "ts": 1})
            for partition in range(partitions):
                await js.publish(msgs_subject(partition, ATTACH), bad,
                                 stream=msgs_stream(partition))
        await attach("gw-tap", 2**62)
        second = await alice.send("bob", b"two")
        await wait_for(lambda: tap.carrying(second.message_id))
        assert [item.devices for _, item in tap.carrying(second.message_id)] == [["bob"]]
        await attach(home, 2**62 + 1)
        third = await alice.send("bob", b"three")
        # one router, in stream order: had "two" gone to bob's gateway, it would come first
        assert (await bob.next_message()).message_id == third.message_id
        assert not tap.carrying(third.message_id) and not tap.carrying(first.message_id)
        await bob.sync()  # "two" is in the backlog
        assert (await bob.next_message()).message_id == second.message_id
    finally:
        await nc.close()
        await alice.close()
        await bob.close()


async def test_a_restarted_router_delivers_live_to_devices_connected_before(
        system: System) -> None:
    """The new router has seen no attach marker of these sockets (the old one acknowledged
    them): it finds the devices' gateway in presence."""
    alice = await system.connect(await system.device("alice"))
    bob = await system.connect(await system.device("bob"))
    try:
        before = await alice.send("bob", b"before")
        assert (await bob.next_message()).message_id == before.message_id
        system.routers[0].stop()
        system.add_router()
        after = await alice.send("bob", b"after")
        assert (await bob.next_message(timeout=30)).message_id == after.message_id
        assert bob.duplicates == 0
    finally:
        await alice.close()
        await bob.close()


BAD_BATCHES = [
    b"not msgpack at all \xc1",
    msgspec.msgpack.encode({"items": []}),
    msgspec.msgpack.encode([[]]),  # no items
    msgspec.msgpack.encode([[["default", [], b"{}"]]]),  # an item for no device
    msgspec.msgpack.encode([[["default", ["d"] * 100_001, b"{}"]]]),  # past the device bound
    msgspec.msgpack.encode([[["a" * 65, ["d"], b"{}"]]]),  # app past 64
    msgspec.msgpack.encode([[["default", ["d"], "text"]]]),  # frame not bytes
]


async def test_malformed_edge_batches_are_counted_and_the_gateway_keeps_serving(
        system: System) -> None:
    alice = await system.connect(await system.device("alice"))
    bob = await system.connect(await system.device("bob"))
    forger = await system.nats_client("router")  # routers may publish edge batches
    try:
        assert bob.welcome is not None
        subject = edge_subject(bob.welcome.gateway)
        start = await metrics(system.url)
        for bad in BAD_BATCHES:
            await forger.publish(subject, bad)
        # a well-formed batch with an item the gateway refuses (not UTF-8) and a device it
        # does not hold, then one for bob: the rest of a batch is delivered
        frame = b'{"type":"pong","id":"forged"}'
        await forger.publish(subject, encode_edge_batch(EdgeBatch(items=[
            EdgeItem(app="default", devices=["bob"], frame=b"\xff\xfe"),
            EdgeItem(app="default", devices=["nobody-here"], frame=frame)])))
        await forger.flush()

        async def counted() -> bool:
            text = await metrics(system.url)
            return (metric(text, "courier_gateway_edge_batches_total", 'result="ok"')
                    > metric(start, "courier_gateway_edge_batches_total", 'result="ok"'))

        await wait_for(counted)
        text = await metrics(system.url)
        for name, labels, grew in [
            ("courier_gateway_edge_batches_total", 'result="malformed"', len(BAD_BATCHES)),
            ("courier_gateway_edge_items_total", 'result="malformed"', 1),
            ("courier_gateway_edge_misses_total", "", 1),
        ]:
            assert metric(text, name, labels) - metric(start, name, labels) == grew, name
        accepted = await alice.send("bob", b"still served")
        assert (await bob.next_message()).message_id == accepted.message_id
        assert not bob.closed
    finally:
        await forger.close()
        await alice.close()
        await bob.close()
