"""Cassandra stops for 30 s while messages flow: the gateway keeps accepting (JetStream holds
them), the storage worker fails, backs off and retries, catches up once Cassandra is back,
and an offline device then gets every accepted message once, in order."""

import asyncio
import time
from pathlib import Path

import aiohttp
import pytest

from client.sdk import ClientError, CourierClient
from infra.cassandra_node import CassandraNode
from schemas.frames import Synced
from tests.harness import System, cassandra_env

pytestmark = pytest.mark.cassandra

OUTAGE_S = 30.0
SEND_INTERVAL_S = 0.01


class Sender:
    """Sends numbered messages until stopped; a refused send is retried with the same client
    id, so the list of accepted bodies has no gaps and no duplicates. (Sends are refused
    once the gateway's cached "bob exists" answer expires while the store is down; after
    ``max_strikes`` refusals the gateway closes the socket and the sender reconnects.)"""

    def __init__(self, client: CourierClient, to: str) -> None:
        self.client = client
        self.to = to
        self.accepted: list[str] = []
        self.accepted_at: list[float] = []
        self.refused = 0
        self.stop = asyncio.Event()

    async def run(self) -> None:
        while not self.stop.is_set():
            body = f"m{len(self.accepted)}"
            try:
                await self.client.send(self.to, body.encode(), client_id=body, timeout=5.0)
            except (ClientError, ConnectionError, TimeoutError) as exc:
                if isinstance(exc, ClientError) and not exc.retry:
                    raise
                self.refused += 1
                await asyncio.sleep(0.5)
                if self.client.closed:
                    await self.reconnect()
                continue
            self.accepted.append(body)
            self.accepted_at.append(time.monotonic())
            await asyncio.sleep(SEND_INTERVAL_S)

    async def reconnect(self) -> None:
        """Open a new socket; on failure the next send attempt tries again."""
        await self.client.close()
        try:
            await self.client.connect()
        except (aiohttp.ClientError, ConnectionError, TimeoutError):
            pass


async def sync_when_caught_up(client: CourierClient, within_s: float) -> Synced:
    """Sync, retrying while the storage worker is still catching up (``unavailable``)."""
    deadline = time.monotonic() + within_s
    while True:
        try:
            return await client.sync()
        except ClientError as exc:
            if not exc.retry or time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.5)


@pytest.mark.timeout(300)
async def test_nothing_accepted_is_lost_while_cassandra_is_down(
    tmp_path: Path, cassandra_node: CassandraNode
) -> None:
    try:
        with System(tmp_path, extra_env=cassandra_env(cassandra_node.contact_point)) as system:
            offline = await system.device("bob", "bob-phone")
            alice = await system.connect(await system.device("alice"))
            sender = Sender(alice, "bob")
            sending = asyncio.create_task(sender.run())
            await asyncio.sleep(2.0)

            await asyncio.to_thread(cassandra_node.pause)
            down_at = time.monotonic()
            await asyncio.sleep(OUTAGE_S)
            await asyncio.to_thread(cassandra_node.resume)
            up_at = time.monotonic()
            await asyncio.sleep(2.0)
            sender.stop.set()
            await sending
            await alice.close()

            during = sum(1 for at in sender.accepted_at if down_at <= at <= up_at)
            assert during > 100, f"only {during} messages accepted while Cassandra was down"

            bob = await system.connect(offline, sync=False)
            synced = await sync_when_caught_up(bob, within_s=120)
            print(f"accepted {len(sender.accepted)} messages, {during} of them during the "
                  f"{up_at - down_at:.0f} s outage; {sender.refused} sends refused and retried; "
                  f"backlog synced {time.monotonic() - up_at:.1f} s after Cassandra was back")
            assert synced.count == len(sender.accepted)
            got = [await bob.next_message(timeout=30) for _ in sender.accepted]
            assert [m.body.decode() for m in got] == sender.accepted
            seqs = [m.seq for m in got]
            assert seqs == sorted(set(seqs))
            await asyncio.sleep(0.5)
            assert bob.pending_messages() == 0
            await bob.close()
    finally:
        if not cassandra_node.is_running:  # the session's other tests need it back
            cassandra_node.resume()
