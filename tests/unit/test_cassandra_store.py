"""What the Cassandra store does beyond the shared contract: partitions walked across seq
buckets, replays that complete a partial write, TTLs from retention, app user listing over
shards, conversation order after a purge, ephemeral purges, migrations, and no server
warnings on the write path, against the session's real Cassandra node."""

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from cassandra.cluster import NoHostAvailable
from cassandra.query import BatchStatement

from infra.cassandra_node import CassandraNode
from infra.nats_server import free_port
from runtime.config import StoreConfig
from schemas.frames import AckItem
from storage_worker.store.base import RetentionPolicy, StoreUnavailable
from storage_worker.store.cassandra import CassandraStore, _Writes
from storage_worker.store.cassandra_schema import BUCKET_SEQS, MIGRATIONS
from tests.contract.test_store_contract import AB, APP, DAY, NOW, envelope, setup_users
from tests.harness import fresh_keyspace

pytestmark = pytest.mark.cassandra

B = BUCKET_SEQS


def config(node: CassandraNode, keyspace: str | None = None) -> StoreConfig:
    return StoreConfig(backend="cassandra", cassandra_contact_points=[node.contact_point],
                       cassandra_keyspace=keyspace or fresh_keyspace())


@pytest.fixture
async def store(cassandra_node: CassandraNode) -> AsyncIterator[CassandraStore]:
    backend = CassandraStore(config(cassandra_node))
    await backend.open()
    try:
        yield backend
    finally:
        await backend.close()


async def cql(store: CassandraStore, query: str,
              params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Run a statement on the store's session, ``{ks}`` standing for its keyspace."""
    result = await asyncio.to_thread(store.session.execute, query.format(ks=store.keyspace),
                                     params)
    return list(result)


def ack(seq: int) -> AckItem:
    return AckItem(id=f"m{seq}", seq=seq, conversation=AB, sender="alice")


async def test_reads_walk_seq_buckets_in_order(store: CassandraStore) -> None:
    await setup_users(store)
    seqs = [B - 2, B - 1, B, B + 1, 3 * B + 5]  # buckets 0, 1 and 3; 2 has no rows
    await store.append([envelope(seq) for seq in seqs])
    pages: list[list[int]] = []
    cursor: list[int] = []
    while True:
        page, cursor = await store.backlog(APP, "bob", "b1", cursor, 2, NOW)
        if not page:
            break
        pages.append([m.seq for m in page])
    assert pages == [[B - 2, B - 1], [B, B + 1], [3 * B + 5]] and cursor == [3 * B + 5]
    newest = await store.history(APP, "bob", "b1", AB, None, None, 3, NOW)
    assert [i.message.seq for i in newest] == [B, B + 1, 3 * B + 5]
    older = await store.history(APP, "bob", "b1", AB, B, None, 3, NOW)
    assert [i.message.seq for i in older] == [B - 2, B - 1]
    forward = await store.history(APP, "bob", "b1", AB, None, B - 1, 10, NOW)
    assert [i.message.seq for i in forward] == [B, B + 1, 3 * B + 5]
    [summary] = await store.conversations(APP, "bob", "b1", 10)
    assert (summary.last_seq, summary.unread) == (3 * B + 5, 5)
    await store.register_device(APP, "bob", "b3", NOW)
    assert (await store.backlog(APP, "bob", "b3", [], 10, NOW))[0] == []
    await store.record_acks(APP, "bob", "b1", [ack(seq) for seq in seqs], NOW)
    assert (await store.backlog(APP, "bob", "b1", [], 10, NOW))[0] == []
    assert [m.seq for m in (await store.backlog(APP, "bob", "b2", [], 10, NOW))[0]] == seqs


async def test_a_replay_completes_a_partial_write(store: CassandraStore) -> None:
    await setup_users(store)
    await store.append([envelope(1), envelope(2)])
    # as if the worker died after writing the messages but before their inbox entries
    await cql(store, "DELETE FROM {ks}.inbox_v2 WHERE app = 'app' AND user = 'bob' AND bucket = 0 "
                     "AND seq = 2")
    assert [m.seq for m in (await store.backlog(APP, "bob", "b1", [], 10, NOW))[0]] == [1]
    await store.append([envelope(1), envelope(2)])  # JetStream redelivers the batch
    assert [m.seq for m in (await store.backlog(APP, "bob", "b1", [], 10, NOW))[0]] == [1, 2]


async def test_rows_expire_with_their_apps_retention(cassandra_node: CassandraNode) -> None:
    policy = RetentionPolicy(default_days=30, days={"short": 2}, ephemeral_apps=frozenset())
    store = CassandraStore(config(cassandra_node), retention=policy)
    await store.open()
    try:
        await setup_users(store)
        now = int(time.time() * 1000)
        await store.append([envelope(1, app="short", ts=now), envelope(2, ts=now),
                            envelope(3, app="short", ts=now - 3 * DAY)])
        ttls = {seq: ttl for app in ("short", APP) for seq, ttl in await cql(
            store, "SELECT seq, TTL(body) FROM {ks}.messages_v2 WHERE app = %s "
            "AND conversation = %s AND bucket = 0", (app, AB))}
        assert 2 * 86_400 - 60 < ttls[1] <= 2 * 86_400
        assert 30 * 86_400 - 60 < ttls[2] <= 30 * 86_400
        assert ttls.get(3, 0) <= 1  # already past its retention: gone within a second
        [(index_ttl,)] = await cql(
            store, "SELECT TTL(last_seq) FROM {ks}.user_conversations_v2 WHERE app = 'app' "
            "AND user = 'bob'")
        assert 31 * 86_400 - 60 < index_ttl <= 31 * 86_400
    finally:
        await store.close()


async def test_app_users_merge_their_shards_in_id_order(store: CassandraStore) -> None:
    users = sorted(f"user{index:03d}" for index in range(60))
    for user in users:
        await store.register_device("shop", user, f"{user}-phone", NOW)
        await store.register_device("shop", user, f"{user}-tablet", NOW)
    await store.register_device("news", "other", "other-phone", NOW)
    listed, after = [], ""
    while page := await store.app_users("shop", after, 7):
        listed += page
        after = page[-1]
    assert listed == users
    assert await store.app_users("news", "", 10) == ["other"]


async def test_conversation_order_follows_what_purge_left(store: CassandraStore) -> None:
    await setup_users(store)
    await store.register_device(APP, "carol", "c1", NOW)
    await store.append([envelope(1, sender="carol", device="c1", to="bob"), envelope(2, app="eph"),
                        envelope(3, sender="carol", device="c1", to="bob")])
    for user, device in (("bob", "b1"), ("bob", "b2"), ("alice", "a2")):
        await store.record_acks(APP, user, device, [ack(2)], NOW)
    policy = RetentionPolicy(default_days=30, days={}, ephemeral_apps=frozenset({"eph"}))
    assert await store.purge(policy, NOW) == 1
    summaries = await store.conversations(APP, "bob", "b1", 10)
    assert [(s.conversation, s.last_seq) for s in summaries] == [("d:bob:carol", 3)]
    await store.append([envelope(4)])
    summaries = await store.conversations(APP, "bob", "b1", 1)
    assert [(s.conversation, s.last_seq) for s in summaries] == [(AB, 4)]


async def test_writes_draw_no_server_warnings(store: CassandraStore,
                                              caplog: pytest.LogCaptureFixture) -> None:
    await setup_users(store)
    devices = {f"dev{index}": bytes(300) for index in range(40)}
    with caplog.at_level(logging.WARNING, logger="cassandra"):
        await store.append([envelope(seq, body=bytes(seq * 37 % 2000)) for seq in range(1, 400)])
        await store.append([envelope(400, body=bytes(60_000)),
                            envelope(401, payloads=devices)])
        await store.record_acks(APP, "bob", "b1", [ack(seq) for seq in range(1, 300)], NOW)
    assert [r.getMessage() for r in caplog.records] == []


async def test_migrations_run_once_even_when_workers_start_together(
        cassandra_node: CassandraNode) -> None:
    keyspace = fresh_keyspace()
    stores = [CassandraStore(config(cassandra_node, keyspace)) for _ in range(3)]
    await asyncio.gather(*(store.open() for store in stores))
    try:
        rows = await cql(stores[0], "SELECT version, name FROM {ks}.schema_migrations")
        assert sorted(rows) == [(m.version, m.name) for m in MIGRATIONS]
        await stores[0].register_device(APP, "alice", "a1", NOW)
        assert await stores[2].device_owner(APP, "a1") == "alice"
    finally:
        await asyncio.gather(*(store.close() for store in stores))


async def test_an_unreachable_cluster_fails_fast() -> None:
    store = CassandraStore(StoreConfig(
        backend="cassandra", cassandra_contact_points=[f"127.0.0.1:{free_port()}"],
        cassandra_request_timeout_s=2.0))
    started = time.monotonic()
    with pytest.raises(StoreUnavailable) as raised:  # the worker's loop waits it out
        await store.open()
    assert isinstance(raised.value.__cause__, NoHostAvailable)
    assert time.monotonic() - started < 10


async def test_ephemeral_purge_removes_acknowledged_rows_in_any_order(
        store: CassandraStore) -> None:
    await setup_users(store, "eph")
    await store.append([envelope(seq, app="eph") for seq in range(1, 6)])
    policy = RetentionPolicy(default_days=30, days={}, ephemeral_apps=frozenset({"eph"}))
    devices = (("bob", "b1"), ("bob", "b2"), ("alice", "a2"))
    for user, device in devices:
        await store.record_acks("eph", user, device, [ack(1), ack(2), ack(4)], NOW)
    assert await store.purge(policy, NOW) == 3  # 1-2 as a range, 4 on its own
    history = await store.history("eph", "alice", "a1", AB, None, None, 10, NOW)
    assert [i.message.seq for i in history] == [3, 5]
    for user, device in devices:
        await store.record_acks("eph", user, device, [ack(3), ack(5)], NOW)
    assert await store.purge(policy, NOW) == 2
    assert await store.history("eph", "alice", "a1", AB, None, None, 10, NOW) == []
    assert await cql(store, "SELECT seq FROM {ks}.purge_index WHERE app = 'eph'"
                            " AND bucket = 0") == []
    assert await store.purge(policy, NOW) == 0


async def test_a_batch_never_spans_partitions(store: CassandraStore) -> None:
    """Writes of many small partitions go out as one request per partition (a batch of
    several partitions would make its coordinator fan out and wait for every replica); a
    big partition goes out in chunks of at most 100 rows, each one mutation."""
    writes = _Writes()
    for user in range(30):
        writes.add(("inbox", APP, f"u{user}", 0), store._later(
            "inbox_put", APP, f"u{user}", 0, 1, AB, "alice", "a1", None, True, None, 0))
    for seq in range(250):
        writes.add(("inbox", APP, "bob", 0), store._later(
            "inbox_put", APP, "bob", 0, seq, AB, "alice", "a1", None, True, None, 0))
    batches = writes.batches()
    partitions = [{tuple(values[:3]) for values in _rows(batch)} for batch in batches]
    assert all(len(keys) == 1 for keys in partitions)  # (app, user, bucket), serialized
    assert len(batches) == 30 + 3
    assert sorted(len(_rows(batch)) for batch in batches)[-3:] == [50, 100, 100]


def _rows(request: Any) -> list[list[bytes]]:
    """The bound values of each row a request carries (one statement, or a batch's)."""
    if isinstance(request, BatchStatement):
        return [list(values) for _prepared, _id, values in request._statements_and_parameters]
    return [list(request.values)]
