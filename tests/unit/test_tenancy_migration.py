"""Migrating data written before the app was part of every key: each row keeps the app stored
on it (or on its message, user, group or device), else the configured default app, and every
read afterwards finds it under that app only. The old database is built by the old schema
itself (the migrations before the tenancy one), filled with raw rows as the old code wrote them.
"""

import sqlite3
from pathlib import Path

import pytest

from infra.cassandra_node import CassandraNode
from runtime.config import StoreConfig
from schemas.ids import direct_conversation
from storage_worker.store.cassandra import CassandraStore
from storage_worker.store.cassandra_schema import MIGRATIONS as CASSANDRA_MIGRATIONS
from storage_worker.store.social_sqlite import SqliteSocialStore
from storage_worker.store.sqlite import MIGRATIONS, SqliteStore
from tests.harness import fresh_keyspace

NOW = 1_800_000_000_000
AB = direct_conversation("alice", "bob")


def old_sqlite(path: Path) -> None:
    """A database of schema version 3 with a user, devices, a message, inbox rows, an ack, a
    read marker, a group and contacts, written as the version-3 code wrote them."""
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE schema_version (version INTEGER)")
    for version, script in enumerate(MIGRATIONS[:3], start=1):
        db.executescript(f"BEGIN; {script}; INSERT INTO schema_version VALUES ({version}); "
                         "COMMIT;")
    db.executescript(f"""
        INSERT INTO users VALUES ('alice', 'shop', {NOW}), ('bob', 'shop', {NOW});
        INSERT INTO devices VALUES ('a1', 'alice', 'shop', {NOW}, 0, 0),
                                   ('b1', 'bob', 'shop', {NOW}, 0, 0),
                                   ('b2', 'bob', 'shop', {NOW}, 0, 0);
        INSERT INTO messages (seq, id, conversation, app, module, kind, sender_user,
                              sender_device, to_kind, to_id, body, ts, receipt)
            VALUES (1, 'm1', '{AB}', 'shop', 'chat', 'chat', 'alice', 'a1', 'user', 'bob',
                    x'6869', {NOW}, 1),
                   (2, 'm2', '{AB}', 'shop', 'chat', 'chat', 'alice', 'a1', 'user', 'bob',
                    x'6869', {NOW}, 1);
        INSERT INTO inbox VALUES ('alice', 1, '{AB}', 'alice'), ('bob', 1, '{AB}', 'alice'),
                                 ('alice', 2, '{AB}', 'alice'), ('bob', 2, '{AB}', 'alice');
        INSERT INTO device_acks VALUES ('b1', 1);
        INSERT INTO read_markers VALUES ('bob', '{AB}', 1);
        INSERT INTO groups VALUES ('team', 'shop', 'Team', 'alice', {NOW}, 5);
        INSERT INTO group_members VALUES ('team', 'alice', 5, NULL, 'owner'),
                                         ('team', 'bob', 5, NULL, 'member');
        INSERT INTO contacts VALUES ('alice', 'bob', 'contact', {NOW}),
                                    ('bob', 'alice', 'contact', {NOW}),
                                    ('ghost', 'alice', 'outgoing', {NOW});
        INSERT INTO blocks VALUES ('bob', 'mallory', {NOW});
    """)
    db.commit()
    db.close()


async def test_sqlite_rows_move_to_their_app(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    old_sqlite(path)
    store = SqliteStore(path, default_app="legacy")
    social = SqliteSocialStore(store)
    await store.open()
    try:
        exists, devices = await store.user_devices("shop", "bob")
        assert exists and [d.device for d in devices] == ["b1", "b2"]
        assert await store.user_devices("legacy", "bob") == (False, [])
        assert await store.device_owner("shop", "a1") == "alice"
        b1, _ = await store.backlog("shop", "bob", "b1", [], 10, NOW)  # its ack moved too
        b2, _ = await store.backlog("shop", "bob", "b2", [], 10, NOW)
        assert ([m.seq for m in b1], [m.seq for m in b2]) == ([2], [1, 2])
        history = await store.history("shop", "alice", "a1", AB, None, None, 10, NOW)
        assert [(i.message.seq, i.status) for i in history] == [(1, "read"), (2, "sent")]
        [summary] = await store.conversations("shop", "bob", "b1", 10)
        assert (summary.read_seq, summary.unread) == (1, 1)
        assert await store.message("shop", "bob", "b1", "m1", NOW) is not None
        assert await store.message("other", "bob", "b1", "m1", NOW) is None
        group = await social.group("shop", "team")
        assert group is not None and [m.user for m in group.members] == ["alice", "bob"]
        assert await social.group("legacy", "team") is None
        assert (await social.relation("shop", "alice", "bob")).state == "contact"
        assert (await social.relation("shop", "bob", "mallory")).a_blocks_b
        # a row whose user the registry never knew goes to the default app
        assert [e.user for e in await social.contacts("legacy", "ghost")] == ["alice"]
    finally:
        await store.close()
    reopened = SqliteStore(path, default_app="legacy")  # applied once: opening again is a no-op
    await reopened.open()
    try:
        assert await reopened.device_owner("shop", "b2") == "bob"
    finally:
        await reopened.close()


@pytest.mark.cassandra
async def test_cassandra_rows_move_to_their_app(cassandra_node: CassandraNode) -> None:
    config = StoreConfig(backend="cassandra",
                         cassandra_contact_points=[cassandra_node.contact_point],
                         cassandra_keyspace=fresh_keyspace())
    old = CassandraStore(config)
    await old.open()  # every migration: then roll the keyspace back to version 1
    ks = config.cassandra_keyspace
    cql = old._cql
    await cql(f"DELETE FROM {ks}.schema_migrations WHERE version = 2")
    await cql(f"DELETE FROM {ks}.schema_migrations WHERE version = 4")  # floors: from v2's
    await cql(f"TRUNCATE {ks}.device_floors")
    for table in ("users", "devices", "devices_by_user", "device_cursors", "device_acks",
                  "messages", "conversation_buckets", "inbox", "inbox_buckets",
                  "user_conversations", "read_markers"):
        await cql(f"TRUNCATE {ks}.{table}_v2")
    statements = [
        "INSERT INTO {ks}.users (user, app, created_at) VALUES ('alice', 'shop', 1)",
        "INSERT INTO {ks}.users (user, app, created_at) VALUES ('bob', 'shop', 1)",
        "INSERT INTO {ks}.devices (device, user, app, created_at, disabled, start_floor) "
        "VALUES ('a1', 'alice', 'shop', 1, false, 0)",
        "INSERT INTO {ks}.devices (device, user, app, created_at, disabled, start_floor) "
        "VALUES ('b1', 'bob', 'shop', 1, false, 0)",
        "INSERT INTO {ks}.devices_by_user (user, device, app, created_at, disabled, "
        "start_floor) VALUES ('alice', 'a1', 'shop', 1, false, 0)",
        "INSERT INTO {ks}.devices_by_user (user, device, app, created_at, disabled, "
        "start_floor) VALUES ('bob', 'b1', 'shop', 1, false, 0)",
        "UPDATE {ks}.device_cursors USING TIMESTAMP 1 SET floor = 1 WHERE device = 'b1'",
        f"INSERT INTO {{ks}}.messages (conversation, bucket, seq, id, app, module, kind, "
        f"sender_user, sender_device, to_kind, to_id, body, ts, receipt, recipients) "
        f"VALUES ('{AB}', 0, 1, 'm1', 'shop', 'chat', 'chat', 'alice', 'a1', 'user', 'bob', "
        f"0x6869, {NOW}, true, {{'alice', 'bob'}}) USING TTL 86400",
        f"INSERT INTO {{ks}}.messages (conversation, bucket, seq, id, app, module, kind, "
        f"sender_user, sender_device, to_kind, to_id, body, ts, receipt, recipients) "
        f"VALUES ('{AB}', 0, 2, 'm2', 'shop', 'chat', 'chat', 'alice', 'a1', 'user', 'bob', "
        f"0x6869, {NOW}, true, {{'alice', 'bob'}})",
        "INSERT INTO {ks}.messages_by_id (id, seq) VALUES ('m1', 1)",
        "INSERT INTO {ks}.messages_by_id (id, seq) VALUES ('m2', 2)",
        f"INSERT INTO {{ks}}.conversation_buckets (conversation, bucket) VALUES ('{AB}', 0)",
        *(f"INSERT INTO {{ks}}.inbox (user, bucket, seq, conversation, sender_user, "
          f"sender_device, shared) VALUES ('{user}', 0, {seq}, '{AB}', 'alice', 'a1', true)"
          for user in ("alice", "bob") for seq in (1, 2)),
        "INSERT INTO {ks}.inbox_buckets (user, bucket) VALUES ('alice', 0)",
        "INSERT INTO {ks}.inbox_buckets (user, bucket) VALUES ('bob', 0)",
        *(f"INSERT INTO {{ks}}.user_conversations (user, conversation, last_seq) "
          f"VALUES ('{user}', '{AB}', 2) USING TIMESTAMP 2" for user in ("alice", "bob")),
        f"INSERT INTO {{ks}}.read_markers (conversation, user, seq) VALUES ('{AB}', 'bob', 1) "
        f"USING TIMESTAMP 1",
    ]
    for statement in statements:
        await cql(statement.replace("{ks}", ks))
    await old.close()
    store = CassandraStore(config, default_app="legacy")
    await store.open()  # runs migrations 2 and 4 and their copies
    try:
        rows = await store._cql(f"SELECT version FROM {ks}.schema_migrations")
        assert sorted(row[0] for row in rows) == [m.version for m in CASSANDRA_MIGRATIONS]
        exists, devices = await store.user_devices("shop", "bob")
        assert exists and [d.device for d in devices] == ["b1"]
        assert await store.user_devices("legacy", "bob") == (False, [])
        assert await store.device_owner("shop", "a1") == "alice"
        backlog, _ = await store.backlog("shop", "bob", "b1", [], 10, NOW)  # cursor kept
        assert [m.seq for m in backlog] == [2]
        history = await store.history("shop", "alice", "a1", AB, None, None, 10, NOW)
        assert [(i.message.seq, i.status) for i in history] == [(1, "read"), (2, "sent")]
        [summary] = await store.conversations("shop", "bob", "b1", 10)
        assert (summary.last_seq, summary.read_seq, summary.unread) == (2, 1, 1)
        assert await store.message("shop", "bob", "b1", "m1", NOW) is not None
        assert await store.message("legacy", "bob", "b1", "m1", NOW) is None
        [(ttl,)] = await store._cql(
            f"SELECT TTL(body) FROM {ks}.messages_v2 WHERE app = 'shop' AND conversation = "
            f"'{AB}' AND bucket = 0 AND seq = 1")
        assert 0 < ttl <= 86_400
    finally:
        await store.close()
