"""Pipelined sends on one socket and acks aggregated per gateway (issue 17), through a real
system: the order and the failures a client can rely on (docs/protocol.md §3, §5.2, §6)."""

import asyncio
import itertools
import os
import re
import signal
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
import pytest

from client.sdk import CourierClient
from schemas.codec import decode_server_frame, encode_frame
from schemas.frames import Accepted, Ack, AckItem, Destination, Error, Message, Ping, Send
from schemas.subjects import RECEIPT, msgs_stream, msgs_subject
from tests.conftest import store_env
from tests.e2e.social_helpers import wait_for
from tests.harness import System
from tests.rawws import raw_socket

PARTITIONS = 4  # the default of the test systems


async def metric(url: str, name: str) -> float:
    """The value of one sample on a gateway's /metrics (0 when absent)."""
    async with aiohttp.ClientSession() as session, session.get(f"{url}/metrics") as response:
        text = await response.text()
    found = re.search(rf"^{re.escape(name)} ([0-9.e+]+)$", text, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


async def receipt_envelopes(system: System) -> int:
    """Receipt envelopes stored in all partition streams so far."""
    nc = await system.nats_client("admin")
    try:
        js = nc.jetstream()
        total = 0
        for partition in range(PARTITIONS):
            subject = msgs_subject(partition, RECEIPT)
            info = await js.stream_info(msgs_stream(partition), subjects_filter=subject)
            total += (info.state.subjects or {}).get(subject, 0)
        return total
    finally:
        await nc.close()


@asynccontextmanager
async def max_msg_size(system: System, size: int) -> AsyncIterator[None]:
    """Make every partition stream refuse messages over ``size`` bytes (JetStream's own
    refusal, as for a stream past its limits), restored on exit."""
    nc = await system.nats_client("storage_worker")  # the credential that owns the streams
    js = nc.jetstream()

    async def set_size(value: int) -> None:
        for partition in range(PARTITIONS):
            config = (await js.stream_info(msgs_stream(partition))).config
            config.max_msg_size = value
            await js.update_stream(config)

    try:
        await set_size(size)
        yield
    finally:
        await set_size(-1)
        await nc.close()


def send_frame(to: str, body: bytes, request_id: str, client_id: str | None = None) -> str:
    return encode_frame(Send(client_id=client_id or uuid.uuid4().hex,
                             to=Destination(kind="user", id=to), body=body,
                             id=request_id)).decode()


async def replies(ws: aiohttp.ClientWebSocketResponse, count: int,
                  within_s: float = 30.0) -> list[Accepted | Error]:
    """The next ``count`` replies (``accepted`` or ``error``), skipping live frames."""
    got: list[Accepted | Error] = []
    async with asyncio.timeout(within_s):
        while len(got) < count:
            frame = decode_server_frame((await ws.receive()).data)
            if isinstance(frame, Accepted | Error):
                got.append(frame)
    return got


async def test_acks_of_many_sockets_become_few_envelopes_and_coalesced_receipts(
        tmp_path: Path, request: pytest.FixtureRequest) -> None:
    """5 readers each ack 6 messages in 6 frames (30 ack frames) within one flush tick: a
    handful of receipt envelopes (one per partition per tick), every ack recorded (nothing
    comes again, on the same socket or after a reconnect), and the sender gets one receipt
    per reader with all 6 ids instead of 6 receipts."""
    readers = [f"r{i}" for i in range(5)]
    with System(tmp_path, {**store_env(request), "COURIER_GATEWAY_ACK_FLUSH_MS": "500"}) as system:
        alice = await system.connect(await system.device("alice"))
        clients = {}
        for user in readers:
            client = CourierClient(system.url, await system.device(user), auto_ack=False)
            await client.connect()
            await client.sync()
            clients[user] = client
        try:
            for user in readers:
                for i in range(6):
                    await alice.send(user, f"{user}-{i}".encode())
            received = {user: [await clients[user].next_message() for _ in range(6)]
                        for user in readers}
            before = await receipt_envelopes(system)
            frames = [(clients[user], encode_frame(Ack(messages=[AckItem(
                id=m.message_id, seq=m.seq, conversation=m.conversation, sender=m.sender.user)])))
                for user in readers for m in received[user]]
            for client, data in frames:
                await client.send_raw(data)
            for user in readers:  # a sync after acks on the same socket waits for their flush
                assert (await clients[user].sync()).count == 0
            envelopes = await receipt_envelopes(system) - before
            assert 1 <= envelopes <= 2 * PARTITIONS < len(frames), envelopes

            ids: dict[str, set[str]] = defaultdict(set)
            receipts_per_reader: dict[str, int] = defaultdict(int)
            while any(len(ids[user]) < 6 for user in readers):
                receipt = await asyncio.wait_for(alice.receipts.get(), 10)
                assert receipt.status == "delivered" and receipt.by in readers
                ids[receipt.by].update(receipt.message_ids or [])
                receipts_per_reader[receipt.by] += 1
            for user in readers:
                assert ids[user] == {m.message_id for m in received[user]}
                assert receipts_per_reader[user] <= 2, receipts_per_reader  # 6 without coalescing

            for user in readers:  # reconnect: every ack was recorded
                await clients[user].close()
                clients[user] = await system.connect(clients[user].credentials, sync=False)
                assert (await clients[user].sync()).count == 0
        finally:
            for client in (alice, *clients.values()):
                await client.close()


async def test_500_pipelined_sends_on_one_socket_are_accepted_in_order(system: System) -> None:
    alice = await system.device("alice")
    bob = await system.connect(await system.device("bob"))
    depth_before = await metric(system.url, "courier_gateway_send_window_depth_count")
    single_before = await metric(system.url,
                                 'courier_gateway_send_window_depth_bucket{le="1.0"}')
    async with raw_socket(system.url, alice.token) as ws:
        for i in range(500):
            await ws.send_str(send_frame("bob", f"p{i}".encode(), str(i)))
        got = await replies(ws, 500)
    assert all(isinstance(reply, Accepted) for reply in got), [r for r in got
                                                                if isinstance(r, Error)][:3]
    assert [reply.id for reply in got] == [str(i) for i in range(500)]
    seqs = [reply.seq for reply in got if isinstance(reply, Accepted)]
    assert all(a < b for a, b in itertools.pairwise(seqs))
    messages = [await bob.next_message() for _ in range(500)]
    assert [m.body for m in messages] == [f"p{i}".encode() for i in range(500)]
    assert [m.seq for m in messages] == seqs
    # the publishes overlapped: some started with others of the socket in flight
    depth = await metric(system.url, "courier_gateway_send_window_depth_count") - depth_before
    single = await metric(system.url,
                          'courier_gateway_send_window_depth_bucket{le="1.0"}') - single_before
    assert depth == 500 and single < 500, (depth, single)
    await bob.close()


async def test_a_send_in_a_full_window_waits_instead_of_failing(
        tmp_path: Path, request: pytest.FixtureRequest) -> None:
    """A window of 2 while JetStream does not answer (nats-server stopped with SIGSTOP): the
    third send waits for a slot (the socket is not read), then all are accepted in order."""
    with System(tmp_path, {**store_env(request), "COURIER_GATEWAY_SEND_WINDOW": "2"}) as system:
        alice = await system.device("alice")
        bob = await system.connect(await system.device("bob"))
        assert system.nats.pid is not None
        async with raw_socket(system.url, alice.token) as ws:
            await ws.send_str(send_frame("bob", b"warm", "warm"))  # caches that bob exists
            assert isinstance((await replies(ws, 1))[0], Accepted)
            full_before = await metric(system.url, "courier_gateway_send_window_full_total")
            os.kill(system.nats.pid, signal.SIGSTOP)
            try:
                for i in range(5):
                    await ws.send_str(send_frame("bob", f"w{i}".encode(), str(i)))
                await wait_for(lambda: _above(system.url, "courier_gateway_send_window_full_total",
                                              full_before), within=3.0)
                assert await metric(system.url, "courier_gateway_sends_in_flight") == 2
            finally:
                os.kill(system.nats.pid, signal.SIGCONT)
            got = await replies(ws, 5)
        assert [type(reply) for reply in got] == [Accepted] * 5, got
        assert [reply.id for reply in got] == [str(i) for i in range(5)]
        seqs = [reply.seq for reply in got if isinstance(reply, Accepted)]
        assert seqs == sorted(seqs)
        warm = await bob.next_message()
        assert [(await bob.next_message()).body for _ in range(5)] == [
            f"w{i}".encode() for i in range(5)] and warm.body == b"warm"
        await bob.close()


async def test_sends_of_all_sockets_wait_for_the_gateway_publish_window(
        tmp_path: Path, request: pytest.FixtureRequest) -> None:
    """A gateway-wide window of 3 while JetStream does not answer: of 4 sends on 2 sockets,
    3 are published and the 4th waits (it does not time out inside JetStream's round trip);
    all are accepted once JetStream answers."""
    with System(tmp_path, {**store_env(request),
                           "COURIER_GATEWAY_PUBLISH_WINDOW": "3"}) as system:
        alice, carol = await system.device("alice"), await system.device("carol")
        await system.device("bob")
        assert system.nats.pid is not None
        async with raw_socket(system.url, alice.token) as a, \
                raw_socket(system.url, carol.token) as c:
            for ws in (a, c):
                await ws.send_str(send_frame("bob", b"warm", "warm"))
                assert isinstance((await replies(ws, 1))[0], Accepted)
            full_before = await metric(system.url,
                                       "courier_gateway_publish_window_full_total")
            os.kill(system.nats.pid, signal.SIGSTOP)
            try:
                for i in range(2):
                    await a.send_str(send_frame("bob", f"a{i}".encode(), f"a{i}"))
                    await c.send_str(send_frame("bob", f"c{i}".encode(), f"c{i}"))
                await wait_for(lambda: _above(
                    system.url, "courier_gateway_publish_window_full_total", full_before),
                    within=3.0)
                assert await metric(system.url, "courier_gateway_sends_in_flight") == 3
            finally:
                os.kill(system.nats.pid, signal.SIGCONT)
            got = [*(await replies(a, 2)), *(await replies(c, 2))]
        assert [type(reply) for reply in got] == [Accepted] * 4, got
        assert [reply.id for reply in got] == ["a0", "a1", "c0", "c1"]


async def _above(url: str, name: str, value: float) -> bool:
    return await metric(url, name) > value


async def test_a_send_jetstream_refuses_mid_window_fails_alone(system: System) -> None:
    """docs/protocol.md §6: replies come in frame order; a refused send gets `unavailable`
    while the sends after it in the window are accepted, in order; its retry (same client_id)
    is stored after them."""
    alice = await system.device("alice")
    bob = await system.connect(await system.device("bob"))
    big = b"B" * 6000
    async with raw_socket(system.url, alice.token) as ws:
        await ws.send_str(send_frame("bob", b"warm", "warm"))
        assert isinstance((await replies(ws, 1))[0], Accepted)
        async with max_msg_size(system, 4096):
            await ws.send_str(send_frame("bob", b"s0", "s0"))
            await ws.send_str(send_frame("bob", big, "big", client_id="big-1"))
            for i in (2, 3):
                await ws.send_str(send_frame("bob", f"s{i}".encode(), f"s{i}"))
            got = await replies(ws, 4)
        assert [reply.id for reply in got] == ["s0", "big", "s2", "s3"]
        s0, refused, s2, s3 = got
        assert isinstance(refused, Error) and refused.code == "unavailable" and refused.retry
        assert isinstance(s0, Accepted) and isinstance(s2, Accepted) and isinstance(s3, Accepted)
        assert s0.seq < s2.seq < s3.seq
        await ws.send_str(send_frame("bob", big, "retry", client_id="big-1"))
        (retried,) = await replies(ws, 1)
    assert isinstance(retried, Accepted) and retried.seq > s3.seq
    got_messages: list[Message] = [await bob.next_message() for _ in range(5)]
    assert [m.body[:2] for m in got_messages] == [b"wa", b"s0", b"s2", b"s3", b"BB"]
    await bob.close()


async def test_a_failed_ack_flush_is_kept_and_retried(system: System) -> None:
    """The receipt batch is refused (the streams take nothing that large for a while): the
    acks stay with the gateway, are published once the stream takes them again, and the
    message is not sent again."""
    alice = await system.connect(await system.device("alice"))
    bob_creds = await system.device("bob")
    bob = CourierClient(system.url, bob_creds, auto_ack=False)
    await bob.connect()
    await bob.sync()
    try:
        await alice.send("bob", b"acked once")
        message = await bob.next_message()
        failed = 'courier_gateway_ack_flushes_total{result="failed"}'
        ok = 'courier_gateway_ack_flushes_total{result="ok"}'
        failed_before = await metric(system.url, failed)
        async with max_msg_size(system, 64):
            await bob.send_raw(encode_frame(Ack(messages=[AckItem(
                id=message.message_id, seq=message.seq, conversation=message.conversation,
                sender="alice")])))
            await wait_for(lambda: _above(system.url, failed, failed_before))
            ok_during = await metric(system.url, ok)
        await wait_for(lambda: _above(system.url, ok, ok_during))
        receipt = await asyncio.wait_for(alice.receipts.get(), 10)
        assert receipt.message_ids == [message.message_id]
        await bob.close()
        bob = await system.connect(bob_creds, sync=False)
        assert (await bob.sync()).count == 0  # nothing comes again
    finally:
        await alice.close()
        await bob.close()


async def test_acks_pending_at_shutdown_are_published(tmp_path: Path,
                                                      request: pytest.FixtureRequest) -> None:
    """A gateway that stops (SIGTERM) with acks in its batcher publishes them first."""
    env = {**store_env(request), "COURIER_GATEWAY_ACK_FLUSH_MS": "1000"}
    with System(tmp_path, env) as system:
        second = system.add_gateway()
        alice = await system.connect(await system.device("alice"), url=second)
        bob_creds = await system.device("bob")
        bob = CourierClient(system.url, bob_creds, auto_ack=False)
        await bob.connect()
        await bob.sync()
        try:
            await alice.send("bob", b"acked before shutdown")
            message = await bob.next_message()
            await bob.send_raw(encode_frame(Ack(messages=[AckItem(
                id=message.message_id, seq=message.seq, conversation=message.conversation)])))
            await bob.ping()  # answered in frame order: the ack was taken
            gateway, _ = system.gateways[0]
            gateway.stop()  # SIGTERM: drain, within the flush tick
            assert gateway.returncode() == 0
            await bob.close()
            bob = await system.connect(bob_creds, url=second, sync=False)
            assert (await bob.sync()).count == 0
        finally:
            await alice.close()
            await bob.close()


async def test_replies_of_other_frames_keep_their_place_among_sends(system: System) -> None:
    """A ping between sends is answered after the sends before it and before the ones after."""
    alice = await system.device("alice")
    await system.device("bob")
    async with raw_socket(system.url, alice.token) as ws:
        for i in range(10):
            await ws.send_str(send_frame("bob", b"x", f"a{i}"))
        await ws.send_str(encode_frame(Ping(id="ping")).decode())
        for i in range(10):
            await ws.send_str(send_frame("bob", b"y", f"b{i}"))
        order: list[str | None] = []
        async with asyncio.timeout(30):
            while len(order) < 21:
                frame = decode_server_frame((await ws.receive()).data)
                if frame is not None and hasattr(frame, "id") and not isinstance(frame, Message):
                    order.append(frame.id)
    assert order == [f"a{i}" for i in range(10)] + ["ping"] + [f"b{i}" for i in range(10)]
