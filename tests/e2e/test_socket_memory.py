"""Socket memory is bounded in bytes: readers that never read, before, during and after a
sync, with large bodies. The gateway process's RSS (``/proc/<pid>/status``, sampled all along)
stays under a stated bound, the reader gets 4008 in a close frame, and every message waits
in its inbox for the next sync (nothing was acked).

Per socket the gateway holds at most ``send_buffer_bytes`` (send queue and transport) plus
``sync_buffer_bytes`` (live frames held for a sync) plus one backlog page; the defaults are
4 MiB and 4 MiB. Without the byte budgets, the first test held ~180 MB and the second one
waited for room forever with ~40 MB queued (issue 11, finding 2).
"""

import asyncio
from collections.abc import Iterator
from contextlib import AbstractAsyncContextManager
from pathlib import Path

import aiohttp
import pytest

from client.sdk import CourierClient
from schemas.errors import CloseCode
from tests.conftest import store_env
from tests.harness import System
from tests.pushkit import wait_until
from tests.rawws import background, close_frame, raw_socket, read_until

#: Growth of the gateway's RSS over its level before the traffic, allowed in every test here:
#: three sockets' full budgets (24 MiB) plus room for the sender's traffic, the NATS client
#: and the allocator; well below what each test's traffic would cost if it were held.
RSS_GROWTH_BOUND_MB = 40
SENDERS = 16  # sends in flight at once


def rss_mb(pid: int) -> float:
    """Resident set size of a process, from ``/proc/<pid>/status``."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS for pid {pid}")


class PeakRss:
    """The highest RSS of a process seen while the ``sampling`` block runs."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.baseline = rss_mb(pid)
        self.peak = self.baseline

    def sampling(self) -> AbstractAsyncContextManager[None]:
        async def sample() -> None:
            while True:
                self.peak = max(self.peak, rss_mb(self.pid))
                await asyncio.sleep(0.02)

        return background(sample())

    def check(self) -> None:
        self.peak = max(self.peak, rss_mb(self.pid))
        growth = self.peak - self.baseline
        assert growth < RSS_GROWTH_BOUND_MB, (
            f"gateway RSS grew {growth:.0f} MB ({self.baseline:.0f} -> {self.peak:.0f} MB), "
            f"bound {RSS_GROWTH_BOUND_MB} MB")


@pytest.fixture
def memory_system(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[System]:
    """A system of its own per test, so one test's heap does not hide the next one's growth."""
    env = {**store_env(request), "COURIER_GATEWAY_MAX_FRAME_BYTES": str(200_000),
           "COURIER_GATEWAY_WRITE_STALL_S": "3"}
    system = System(tmp_path, env)
    try:
        system.start()
        yield system
    finally:
        system.stop()


def gateway_pid(system: System) -> int:
    pid = system.gateways[0][0].pid
    assert pid is not None
    return pid


async def send_many(sender: CourierClient, to: str, count: int, size: int,
                    tag: str = "m") -> None:
    """``count`` sends of ``size`` bytes, ``SENDERS`` in flight; bodies end with their index."""
    async def one(index: int) -> None:
        suffix = f"{tag}{index}".encode()
        await sender.send(to, b"x" * (size - len(suffix)) + suffix, timeout=60)

    for start in range(0, count, SENDERS):
        await asyncio.gather(*(one(i) for i in range(start, min(count, start + SENDERS))))


async def metrics(url: str) -> str:
    async with aiohttp.ClientSession() as session, session.get(f"{url}/metrics") as response:
        return await response.text()


async def buffers_empty(url: str) -> bool:
    text = await metrics(url)
    return all(f'courier_gateway_buffered_bytes{{buffer="{buffer}"}} 0.0' in text
               for buffer in ("send", "held"))


def slow_consumers(text: str, cause: str) -> float:
    prefix = f'courier_gateway_slow_consumers_total{{cause="{cause}"}} '
    return sum(float(line.removeprefix(prefix)) for line in text.splitlines()
               if line.startswith(prefix))


async def closed_slow(url: str) -> bool:
    """Whether the gateway has closed a socket with 4008 (a test's reader reads after)."""
    return 'courier_gateway_closes_total{code="4008"} 1.0' in await metrics(url)


async def stored(url: str, token: str, conversation: str) -> bool:
    """Whether storage has caught up with the stream (a history read waits for it, up to the
    store's barrier timeout)."""
    async with aiohttp.ClientSession() as session, session.get(
            f"{url}/v1/conversations/{conversation}/messages?limit=1",
            headers={"Authorization": f"Bearer {token}"}) as response:
        return response.status == 200


async def backlog_count(system: System, url: str, token_user: str, device: str) -> int:
    """Sync a device from the start with the SDK: how many messages wait for it."""
    client = CourierClient(url, await system.device(token_user, device))
    await client.connect()
    try:
        return (await client.sync(timeout=120)).count
    finally:
        await client.close()


async def test_sockets_that_never_sync_are_closed_within_their_byte_budget(
        memory_system: System) -> None:
    system = memory_system
    count, size = 1500, 30_000
    bob = [await system.device("bob", f"bob-{i}") for i in range(3)]
    alice = await system.connect(await system.device("alice"))
    rss = PeakRss(gateway_pid(system))
    try:
        async with (raw_socket(system.url, bob[0].token) as ws0,
                    raw_socket(system.url, bob[1].token) as ws1,
                    raw_socket(system.url, bob[2].token) as ws2, rss.sampling()):
            await send_many(alice, "bob", count, size)  # each of bob's sockets gets all
            for ws in (ws0, ws1, ws2):  # nothing was written to them before the close
                assert await close_frame(ws) == CloseCode.SLOW_CONSUMER
        rss.check()
        assert slow_consumers(await metrics(system.url), "held_budget") == 3
    finally:
        await alice.close()
    assert await backlog_count(system, system.url, "bob", "bob-0") == count


async def test_a_reader_that_stops_during_a_sync_is_closed(memory_system: System) -> None:
    system = memory_system
    backlog, live, size = 1100, 20, 40_000  # more frames than a send queue holds
    creds = await system.device("carol", "carol-phone")
    alice = await system.connect(await system.device("alice", "alice-1"))
    alice_other = await system.connect(await system.device("alice", "alice-2"))
    try:
        await send_many(alice, "carol", backlog, size, tag="b")
        while not (await alice_other.next_message()).body.endswith(f"b{backlog - 1}".encode()):
            pass  # the router has routed the whole backlog: none of it arrives live
        await wait_until(lambda: stored(system.url, alice.credentials.token, "d:alice:carol"),
                         within_s=120)  # and the sync need not wait for storage
        rss = PeakRss(gateway_pid(system))
        async with raw_socket(system.url, creds.token) as ws, rss.sampling():
            await ws.send_str('{"type": "sync", "id": "the-sync"}')  # then reads nothing
            await send_many(alice, "carol", live, size, tag="l")  # held during the sync
            await wait_until(lambda: closed_slow(system.url), within_s=60)
            assert await close_frame(ws) == CloseCode.SLOW_CONSUMER  # reads only now
        rss.check()
        assert slow_consumers(await metrics(system.url), "stalled") == 1  # write_stall_s
    finally:
        await alice.close()
        await alice_other.close()
    assert await backlog_count(system, system.url, "carol", "carol-phone") == backlog + live


async def test_a_reader_that_stops_after_its_sync_is_closed(memory_system: System) -> None:
    system = memory_system
    count, size = 800, 60_000
    creds = await system.device("dave", "dave-phone")
    alice = await system.connect(await system.device("alice"))
    try:
        rss = PeakRss(gateway_pid(system))
        async with raw_socket(system.url, creds.token) as ws, rss.sampling():
            await ws.send_str('{"type": "sync", "id": "the-sync"}')
            await read_until(ws, b'"the-sync"')  # synced; from now on it reads nothing
            await send_many(alice, "dave", count, size)
            await wait_until(lambda: closed_slow(system.url), within_s=60)
            assert await close_frame(ws) == CloseCode.SLOW_CONSUMER  # reads only now
        rss.check()
        text = await metrics(system.url)
        assert slow_consumers(text, "send_budget") + slow_consumers(text, "stalled") == 1
        await wait_until(lambda: buffers_empty(system.url))  # the closed socket let go
    finally:
        await alice.close()
    assert await backlog_count(system, system.url, "dave", "dave-phone") == count
