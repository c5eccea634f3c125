"""Offline delivery: the backlog arrives complete, in order, once, whatever happens meanwhile."""

import asyncio
import os
import signal

from client.sdk import ClientError, CourierClient
from schemas.frames import Message
from tests.harness import System

N = 1000


async def send_all(sender: CourierClient, to: str, count: int, prefix: str = "m",
                   start: int = 0) -> list[int]:
    """Send messages ``start..start+count-1`` in order, retrying with the same client id on
    retryable errors."""
    seqs = []
    for i in range(start, start + count):
        for _attempt in range(100):
            try:
                accepted = await sender.send(to, f"{prefix}{i}".encode(), client_id=f"{prefix}{i}")
                seqs.append(accepted.seq)
                break
            except (ClientError, ConnectionError, TimeoutError) as exc:
                if isinstance(exc, ClientError) and not exc.retry:
                    raise
                if sender.closed:
                    await sender.connect()
                await asyncio.sleep(0.05)
        else:
            raise AssertionError(f"message {i} never accepted")
    return seqs


def assert_complete(messages: list[Message], count: int, prefix: str = "m") -> None:
    seqs = [m.seq for m in messages]
    assert seqs == sorted(seqs), "out of order"
    assert len(set(seqs)) == len(seqs), "duplicates"
    assert [m.body.decode() for m in messages] == [f"{prefix}{i}" for i in range(count)]


async def test_offline_device_gets_everything_in_order_once(system: System) -> None:
    bob_creds = await system.device("bob", "bob-phone")
    alice = await system.connect(await system.device("alice"))
    await send_all(alice, "bob", N)
    bob = await system.connect(bob_creds, sync=False)
    synced = await bob.sync()
    assert synced.count == N
    messages = [await bob.next_message() for _ in range(N)]
    assert_complete(messages, N)
    assert bob.duplicates == 0
    await bob.close()
    # acknowledged: a later reconnect has nothing left
    again = await system.connect(bob_creds, sync=False)
    assert (await again.sync()).count == 0
    await again.close()
    await alice.close()


async def test_backlog_survives_three_cuts(system: System) -> None:
    bob_creds = await system.device("bob", "bob-phone")
    alice = await system.connect(await system.device("alice"))
    await send_all(alice, "bob", N)
    bob = CourierClient(system.url, bob_creds)
    received: list[Message] = []
    for cut in range(3):
        await bob.connect()
        await bob.start_sync()
        for _ in range(200):
            received.append(await bob.next_message())
        await asyncio.sleep(0.05 * cut)  # let some acks out, sometimes
        await bob.abort()
    await bob.connect()
    await bob.sync()
    while len(received) < N:
        received.append(await bob.next_message())
    assert_complete(received, N)
    await asyncio.sleep(0.2)
    assert bob.pending_messages() == 0
    await bob.close()
    await alice.close()


async def test_live_messages_during_backlog_are_not_lost(system: System) -> None:
    bob_creds = await system.device("bob", "bob-phone")
    alice = await system.connect(await system.device("alice"))
    await send_all(alice, "bob", 300, "old")
    bob = await system.connect(bob_creds, sync=False)
    sync = asyncio.create_task(bob.sync())
    await send_all(alice, "bob", 300, "new")
    await sync
    messages = [await bob.next_message() for _ in range(600)]
    assert [m.body.decode() for m in messages[:300]] == [f"old{i}" for i in range(300)]
    assert sorted(m.body.decode() for m in messages[300:]) == sorted(
        f"new{i}" for i in range(300))
    assert len({m.message_id for m in messages}) == 600
    await bob.close()
    await alice.close()


async def test_router_and_storage_killed_mid_stream(system: System) -> None:
    online_creds = await system.device("bob", "bob-online")
    offline_creds = await system.device("bob", "bob-offline")
    alice = await system.connect(await system.device("alice"))
    bob = await system.connect(online_creds)
    assert system.storage is not None
    router = system.routers[0]

    await send_all(alice, "bob", 200)
    router.kill()
    await send_all(alice, "bob", 200, start=200)
    router.start()
    await send_all(alice, "bob", 100, start=400)
    system.storage.kill()
    await send_all(alice, "bob", 200, start=500)
    system.storage.start()
    await send_all(alice, "bob", 300, start=700)
    live = [await bob.next_message(timeout=30) for _ in range(N)]
    assert sorted(m.body.decode() for m in live) == sorted(f"m{i}" for i in range(N))
    assert len({m.message_id for m in live}) == N
    offline = await system.connect(offline_creds, sync=False)
    await offline.sync()
    backlog = [await offline.next_message(timeout=30) for _ in range(N)]
    assert_complete(backlog, N)
    for client in (alice, bob, offline):
        await client.close()


async def test_new_device_starts_after_messages_accepted_before_it(system: System) -> None:
    """protocol.md §2.6: a device registered after a message was accepted never gets it in its
    backlog, even when storage had not stored that message yet. The storage worker is stopped
    while the messages are accepted and while the new device registers, so the registration is
    answered before those messages are stored."""
    assert system.storage is not None and system.storage.pid is not None
    phone = await system.connect(await system.device("bob", "bob-phone"))
    alice = await system.connect(await system.device("alice"))
    await send_all(alice, "bob", 1, prefix="warm")  # the gateway caches what a send checks
    # ... and the router what a delivery looks up: once the phone has the message, no device
    # look-up of the router is still waiting for the storage worker about to be stopped
    assert (await phone.next_message()).body == b"warm0"
    os.kill(system.storage.pid, signal.SIGSTOP)
    try:
        await send_all(alice, "bob", 3, prefix="before")
        registering = asyncio.create_task(system.device("bob", "bob-new-tablet"))
        await asyncio.sleep(0.3)  # let the registration reach the stopped worker's socket
    finally:
        os.kill(system.storage.pid, signal.SIGCONT)
    tablet = await system.connect(await registering, sync=False)
    try:
        assert (await tablet.sync()).count == 0
        await send_all(alice, "bob", 1, prefix="after")
        assert (await tablet.next_message()).body == b"after0"
    finally:
        for client in (tablet, alice, phone):
            await client.close()
