"""Migrating data written before partitions: a device's single floor (SQLite ``devices.floor``;
Cassandra ``device_cursors_v2`` and ``devices_v2.start_floor``) becomes its floor of partition
0, where every seq written with one partition lies, and the backlog still starts there."""

import sqlite3
from pathlib import Path

import pytest

from infra.cassandra_node import CassandraNode
from runtime.config import StoreConfig
from schemas.envelopes import MessageEnvelope
from schemas.frames import Destination, Sender
from schemas.ids import direct_conversation
from storage_worker.store.base import StoredMessage
from storage_worker.store.cassandra import CassandraStore
from storage_worker.store.sqlite import MIGRATIONS, SqliteStore
from tests.harness import fresh_keyspace

NOW = 1_800_000_000_000
APP = "shop"
AB = direct_conversation("alice", "bob")


def message(seq: int) -> StoredMessage:
    return StoredMessage(seq=seq, recipients=["alice", "bob"], envelope=MessageEnvelope(
        id=f"m{seq}", kind="chat", app=APP, module="chat", sender=Sender(user="alice",
                                                                        device="a1"),
        to=Destination(kind="user", id="bob"), conversation=AB, ts=NOW, receipt=True,
        body=b"hi"))


async def test_sqlite_floor_becomes_partition_zeros(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE schema_version (version INTEGER)")
    for version, script in enumerate(MIGRATIONS[:4], start=1):
        db.executescript(f"BEGIN; {script}; INSERT INTO schema_version VALUES ({version}); "
                         "COMMIT;")
    db.executescript(f"""
        INSERT INTO users VALUES ('{APP}', 'bob', {NOW});
        INSERT INTO devices VALUES ('{APP}', 'b1', 'bob', {NOW}, 0, 2),
                                   ('{APP}', 'b2', 'bob', {NOW}, 0, 0);
    """)
    db.commit()
    db.close()
    store = SqliteStore(path, default_app="legacy")
    await store.open()
    try:
        await store.append([message(seq) for seq in (1, 2, 3)])
        b1, cursor = await store.backlog(APP, "bob", "b1", [], 10, NOW)
        assert ([m.seq for m in b1], cursor) == ([3], [3])
        b2, _ = await store.backlog(APP, "bob", "b2", [], 10, NOW)
        assert [m.seq for m in b2] == [1, 2, 3]
        async with store.db.execute("SELECT device, partition, floor FROM device_floors "
                                    "ORDER BY device") as cur:
            assert [tuple(row) for row in await cur.fetchall()] == [("b1", 0, 2)]
    finally:
        await store.close()


@pytest.mark.cassandra
async def test_cassandra_floors_become_partition_zeros(cassandra_node: CassandraNode) -> None:
    config = StoreConfig(backend="cassandra",
                         cassandra_contact_points=[cassandra_node.contact_point],
                         cassandra_keyspace=fresh_keyspace())
    old = CassandraStore(config)
    await old.open()  # every migration: then roll the keyspace back to version 3
    ks = config.cassandra_keyspace
    statements = [
        f"DELETE FROM {ks}.schema_migrations WHERE version = 4",
        f"INSERT INTO {ks}.users_v2 (app, user, created_at) VALUES ('{APP}', 'bob', 1)",
        # b1: moved by acks to 2; b2: started at 1, never moved; b3: from the start
        *(f"INSERT INTO {ks}.devices_v2 (app, device, user, created_at, disabled, "
          f"start_floor) VALUES ('{APP}', '{device}', 'bob', 1, false, {start})"
          for device, start in (("b1", 0), ("b2", 1), ("b3", 0))),
        f"UPDATE {ks}.device_cursors_v2 USING TIMESTAMP 2 SET floor = 2 "
        f"WHERE app = '{APP}' AND device = 'b1'",
    ]
    for statement in statements:
        await old._cql(statement)
    await old.append([message(seq) for seq in (1, 2, 3)])
    await old.close()
    store = CassandraStore(config, default_app="legacy")
    await store.open()  # runs migration 4 and its copy
    try:
        backlogs = {device: [m.seq for m in (await store.backlog(APP, "bob", device, [], 10,
                                                                 NOW))[0]]
                    for device in ("b1", "b2", "b3")}
        assert backlogs == {"b1": [3], "b2": [2, 3], "b3": [1, 2, 3]}
    finally:
        await store.close()
