"""The partitioned pipeline end to end: several routers and storage workers active-active on
disjoint partitions, per-conversation order on every device, and the takeover of a killed
router's and storage worker's partitions (issue 13)."""

import asyncio
import base64
import time
from pathlib import Path

import aiohttp
import pytest

from client.sdk import CourierClient
from schemas.frames import Message
from schemas.partitions import partition_of
from tests.conftest import store_env
from tests.e2e.social_helpers import wait_for
from tests.harness import System

PARTITIONS = 8
LEASE_TTL_S = 3.0
SENDERS = [f"s{i}" for i in range(6)]
ROUNDS = 25


async def leases(system: System) -> dict[str, str]:
    """Current lease keys and their holders (``lease.<service>.<p>`` -> member id), read as
    an operator does (``admin``: read-only)."""
    nc = await system.nats_client("admin")
    try:
        kv = await nc.jetstream().key_value("leases")
        held: dict[str, str] = {}
        for partition in range(PARTITIONS):
            for service in ("router", "storage"):
                key = f"lease.{service}.{partition}"
                try:
                    entry = await kv.get(key)
                except Exception:  # no holder now
                    continue
                if entry.value:
                    held[key] = entry.value.decode()
        return held
    finally:
        await nc.close()


def holders(held: dict[str, str], service: str) -> dict[str, int]:
    """Member id -> partitions it holds, for one service."""
    counts: dict[str, int] = {}
    for key, member in held.items():
        if key.startswith(f"lease.{service}."):
            counts[member] = counts.get(member, 0) + 1
    return counts


async def history(system: System, client: CourierClient, conversation: str) -> list[bytes]:
    url = f"{system.url}/v1/conversations/{conversation}/messages?limit=200"
    headers = {"Authorization": f"Bearer {client.credentials.token}"}
    async with aiohttp.ClientSession() as session:
        async with session.get(url, headers=headers) as response:
            assert response.status == 200
            page = await response.json()
    return [base64.b64decode(item["message"]["body"]) for item in page["items"]]


class Inbox:
    """What one device received, in arrival order, per conversation."""

    def __init__(self, client: CourierClient) -> None:
        self.client = client
        self.by_conversation: dict[str, list[Message]] = {}

    async def take(self, count: int) -> None:
        for _ in range(count):
            message = await self.client.next_message(timeout=60)
            self.by_conversation.setdefault(message.conversation, []).append(message)


async def send_rounds(senders: dict[str, CourierClient], start: int, rounds: int) -> None:
    async def one(user: str, client: CourierClient) -> None:
        for i in range(start, start + rounds):
            await client.send("r", f"{user}-{i}".encode())

    await asyncio.gather(*(one(user, client) for user, client in senders.items()))


def check_order(inbox: Inbox, total: int) -> None:
    """Every conversation arrived complete and in send order, with increasing seq."""
    for user in SENDERS:
        conversation = f"d:r:{user}"
        got = inbox.by_conversation.get(conversation, [])
        assert [m.body for m in got] == [f"{user}-{i}".encode() for i in range(total)], [
            (m.body, m.seq) for m in got]
        assert [m.body for m in got] == [f"{user}-{i}".encode() for i in range(total)]
        seqs = [m.seq for m in got]
        assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)


@pytest.fixture
def partitioned(tmp_path: Path, request: pytest.FixtureRequest) -> System:
    return System(tmp_path, extra_env={**store_env(request),
                                       "COURIER_PARTITIONS_COUNT": str(PARTITIONS),
                                       "COURIER_PARTITIONS_LEASE_TTL_S": str(LEASE_TTL_S),
                                       "COURIER_NATS_ACK_WAIT_S": "2"})


async def test_three_routers_and_two_storage_workers_share_the_partitions_and_survive_kills(
        partitioned: System) -> None:
    with partitioned as system:
        system.add_router()
        system.add_router()
        system.add_storage_worker()
        # the conversations of this test spread over several partitions
        assert len({partition_of("default", f"d:r:{u}", PARTITIONS) for u in SENDERS}) >= 3

        async def balanced() -> bool:
            held = await leases(system)
            routers, storage = holders(held, "router"), holders(held, "storage")
            return (sorted(routers.values()) == [2, 3, 3]
                    and sorted(storage.values()) == [4, 4])

        await wait_for(balanced, within=30)
        r1 = Inbox(await system.connect(await system.device("r", "r1")))
        r2 = Inbox(await system.connect(await system.device("r", "r2")))
        senders = {user: await system.connect(await system.device(user)) for user in SENDERS}
        try:
            await send_rounds(senders, 0, ROUNDS)
            await asyncio.gather(r1.take(len(SENDERS) * ROUNDS), r2.take(len(SENDERS) * ROUNDS))
            for inbox in (r1, r2):
                check_order(inbox, ROUNDS)
                assert inbox.client.duplicates == 0  # one router per partition: once each

            # SIGKILL a router and a storage worker mid-flow (no lease handed back)
            router, worker = system.routers[1], system.more_storage[0]
            dead = {f"-{router.pid}-", f"-{worker.pid}-"}
            sending = asyncio.create_task(send_rounds(senders, ROUNDS, ROUNDS))
            await r1.take(len(SENDERS) * 5)
            router.kill()
            worker.kill()
            killed_at = time.monotonic()

            async def taken_over() -> bool:
                held = await leases(system)
                return (len(held) == 2 * PARTITIONS
                        and not any(mark in member for member in held.values()
                                    for mark in dead))

            await wait_for(taken_over, within=30)
            takeover_s = time.monotonic() - killed_at
            await sending
            await asyncio.gather(r1.take(len(SENDERS) * (ROUNDS - 5)),
                                 r2.take(len(SENDERS) * ROUNDS))
            for inbox in (r1, r2):
                check_order(inbox, 2 * ROUNDS)
            # stored once: each conversation's history is the sends, each once, in order
            for user in SENDERS:
                assert await history(system, r1.client, f"d:r:{user}") == [
                    f"{user}-{i}".encode() for i in range(2 * ROUNDS)]
            print(f"partitions of the killed router and storage worker taken over in "
                  f"{takeover_s:.1f} s (lease TTL {LEASE_TTL_S} s)")
        finally:
            for client in (r1.client, r2.client, *senders.values()):
                await client.close()
