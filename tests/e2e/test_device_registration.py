"""``register_device`` as the storage worker serves it (``storage_worker.registration``): a
device registered already is answered without a write, without stream positions and without
``dir.changed``; new devices share one read of the positions; conflicts still refused.
Real SQLite store and nats-server; the stream positions are an injected reader."""

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from nats.aio.client import Client
from nats.aio.msg import Msg

from infra.nats_server import NatsServer
from runtime.config import NatsConfig
from runtime.natsconn import close, connect
from schemas import rpc
from schemas.errors import ErrorCode, ProtocolError
from schemas.ids import scoped
from schemas.subjects import DIRECTORY_CHANGED
from storage_worker.registration import Registrar, SharedRound
from storage_worker.store.keys_factory import create_key_store
from storage_worker.store.sqlite import SqliteStore
from tests.e2e.social_helpers import wait_for

PARTITIONS = 2


class Positions:
    """The partition positions a registration reads, counting the reads; ``gate`` holds a
    read until it is set."""

    def __init__(self, positions: list[int]) -> None:
        self.positions = positions
        self.reads = 0
        self.gate = asyncio.Event()
        self.gate.set()

    async def __call__(self) -> list[int]:
        self.reads += 1
        read = list(self.positions)  # what the streams held when the read started
        await self.gate.wait()
        return read


@pytest.fixture
async def nc(tmp_path: Path) -> AsyncIterator[Client]:
    with NatsServer(tmp_path / "nats") as server:
        client = await connect(NatsConfig(url=server.url), "test", "storage_worker")
        try:
            yield client
        finally:
            await close(client)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    sqlite = SqliteStore(tmp_path / "store.db", partitions=PARTITIONS)
    await sqlite.open()
    try:
        yield sqlite
    finally:
        await sqlite.close()


async def _registrar(store: SqliteStore, nc: Client, positions: Positions) -> Registrar:
    keys = create_key_store(store)
    await keys.open()
    return Registrar(store, keys, nc, positions, PARTITIONS)


def _request(user: str, device: str) -> rpc.RegisterDevice:
    return rpc.RegisterDevice(user=user, device=device, app="default")


async def test_a_registered_device_is_answered_without_writing(
        store: SqliteStore, nc: Client) -> None:
    changed: list[str] = []

    async def on_changed(msg: Msg) -> None:
        changed.append(msg.data.decode())

    await nc.subscribe(DIRECTORY_CHANGED, cb=on_changed)
    await nc.flush()
    positions = Positions([5, 0])
    registrar = await _registrar(store, nc, positions)
    first = await registrar.register(_request("alice", "a1"))
    again = await registrar.register(_request("alice", "a1"))
    assert again == first and first.one_time_keys_left == 0
    assert positions.reads == 1  # the second call read no stream positions
    await registrar.register(_request("bob", "b1"))
    # One publisher, one subscriber: a dir.changed of the second call would come before bob's.
    await wait_for(lambda: len(changed) >= 2, 5.0)
    assert changed == [scoped("default", "alice"), scoped("default", "bob")]
    _, devices = await store.user_devices("default", "alice")
    assert [d.device for d in devices] == ["a1"]


async def test_a_device_of_another_user_is_still_a_conflict(
        store: SqliteStore, nc: Client) -> None:
    registrar = await _registrar(store, nc, Positions([0, 0]))
    await registrar.register(_request("alice", "shared"))
    with pytest.raises(ProtocolError) as refused:
        await registrar.register(_request("mallory", "shared"))
    assert refused.value.code == ErrorCode.CONFLICT


async def test_concurrent_new_devices_share_one_read_of_the_positions(
        store: SqliteStore, nc: Client) -> None:
    positions = Positions([0, 0])
    registrar = await _registrar(store, nc, positions)
    positions.gate.clear()  # the first read is held: every other registration queues for one
    everyone = asyncio.gather(*(registrar.register(_request(f"u{i}", f"d{i}"))
                                for i in range(20)))
    await wait_for(lambda: positions.reads == 1, 5.0)
    positions.gate.set()
    infos = await everyone
    assert sorted(info.device for info in infos) == sorted(f"d{i}" for i in range(20))
    assert positions.reads == 2  # the first read, and one shared by all who came during it


async def test_a_shared_round_starts_after_each_of_its_callers() -> None:
    source = Positions([1])
    rounds = SharedRound(source)
    source.gate.clear()
    first = asyncio.create_task(rounds.get())
    await wait_for(lambda: source.reads == 1, 5.0)
    source.positions = [2]  # a caller arriving now must see a read that starts after it
    late = [asyncio.create_task(rounds.get()) for _ in range(3)]
    await asyncio.sleep(0)  # they call get() while the first read is held
    source.gate.set()
    assert await first == [1]
    assert [await task for task in late] == [[2]] * 3
    assert source.reads == 2


async def test_a_failed_round_fails_its_callers_and_the_next_round_reads_again() -> None:
    source = Positions([1])
    calls = 0

    async def second_read_fails() -> list[int]:
        nonlocal calls
        calls += 1
        result = await source()
        if calls == 2:
            raise ConnectionError("stream unavailable")
        return result

    rounds = SharedRound(second_read_fails)
    source.gate.clear()
    first = asyncio.create_task(rounds.get())
    await wait_for(lambda: source.reads == 1, 5.0)
    joined = [asyncio.create_task(rounds.get()) for _ in range(2)]  # both in round two
    await asyncio.sleep(0)
    source.gate.set()
    assert await first == [1]
    results = await asyncio.gather(*joined, return_exceptions=True)
    assert [type(result) for result in results] == [ConnectionError, ConnectionError]
    assert calls == 2
    assert await rounds.get() == [1] and calls == 3


async def test_a_round_whose_fetching_caller_is_cancelled_still_serves_the_others() -> None:
    source = Positions([7])
    rounds = SharedRound(source)
    source.gate.clear()
    running = asyncio.create_task(rounds.get())
    await wait_for(lambda: source.reads == 1, 5.0)
    fetcher = asyncio.create_task(rounds.get())  # leads round two, waits for round one
    await asyncio.sleep(0)
    joined = asyncio.create_task(rounds.get())  # joins round two
    await asyncio.sleep(0)
    fetcher.cancel()
    source.gate.set()
    assert await running == [7]
    assert await joined == [7]  # served by a round of its own
    assert fetcher.cancelled() and source.reads == 2
