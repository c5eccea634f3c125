"""Embedded ``MessageStore`` on SQLite (WAL), through aiosqlite so queries run off the event
loop. One connection, one writer: the storage worker process.

Tenancy: every table keyed by a name a tenant chooses (user, device, conversation, group) has
an ``app`` column leading its primary key and its indexes, and every query binds the app, so
the same user, device or group id in two apps is two rows that never meet. Rows keyed by what
the server assigns once for the whole deployment (a message's stream ``seq``, its server id,
derived from the app, and the payloads keyed by ``seq``) need no app column. Migration 4 moves
a database of the old schema over: each row takes the app stored on it or on the row it
belongs to (a user's, a message's, a group's), else the configured default app.

Partitions: a device's floor is one row per partition in ``device_floors`` (migration 5 moves
the single ``devices.floor`` of a database written with one partition to partition 0). A
message's partition is its ``seq % partitions``; per-partition bounds go into queries as a
``CASE seq % P`` over the partitions whose bound is above the lowest one, beside a plain
``seq >`` the lowest, which bounds the index range.
"""

import asyncio
import fcntl
import re
import sqlite3
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Final

import aiosqlite

from schemas.envelopes import DeviceAcks, MessageEnvelope, message_frame
from schemas.errors import ErrorCode, ProtocolError
from schemas.frames import AckItem, Destination, Sender
from schemas.ids import ID_PATTERN, direct_members
from schemas.partitions import empty_cursor
from schemas.rpc import ConversationSummary, DeviceInfo, HistoryItem
from storage_worker.store.base import (
    ArchivedMessage,
    ArchiveMark,
    DeliverableMessage,
    RetentionPolicy,
    StoredMessage,
    as_cursor,
    checked_partitions,
    position_before,
    unavailable_on,
)

DAY_MS: Final = 86_400_000

MIGRATIONS: Final[list[str]] = [
    """
    CREATE TABLE users (
        user TEXT PRIMARY KEY, app TEXT NOT NULL, created_at INTEGER NOT NULL
    ) WITHOUT ROWID;
    CREATE TABLE devices (
        device TEXT PRIMARY KEY, user TEXT NOT NULL, app TEXT NOT NULL,
        created_at INTEGER NOT NULL, disabled INTEGER NOT NULL DEFAULT 0,
        floor INTEGER NOT NULL DEFAULT 0
    ) WITHOUT ROWID;
    CREATE INDEX devices_by_user ON devices (user);
    CREATE TABLE messages (
        seq INTEGER PRIMARY KEY, id TEXT NOT NULL UNIQUE, conversation TEXT NOT NULL,
        app TEXT NOT NULL, module TEXT NOT NULL, kind TEXT NOT NULL,
        sender_user TEXT, sender_device TEXT, sender_service TEXT,
        to_kind TEXT NOT NULL, to_id TEXT NOT NULL, body BLOB, client_id TEXT,
        ts INTEGER NOT NULL, expires_at INTEGER, receipt INTEGER NOT NULL,
        delivered_at INTEGER
    );
    CREATE INDEX messages_by_conversation ON messages (conversation, seq);
    CREATE TABLE payloads (
        seq INTEGER NOT NULL, device TEXT NOT NULL, body BLOB NOT NULL,
        PRIMARY KEY (seq, device)
    ) WITHOUT ROWID;
    CREATE TABLE inbox (
        user TEXT NOT NULL, seq INTEGER NOT NULL, conversation TEXT NOT NULL,
        sender_user TEXT, PRIMARY KEY (user, seq)
    ) WITHOUT ROWID;
    CREATE INDEX inbox_by_conversation ON inbox (user, conversation, seq);
    CREATE TABLE device_acks (
        device TEXT NOT NULL, seq INTEGER NOT NULL, PRIMARY KEY (device, seq)
    ) WITHOUT ROWID;
    CREATE TABLE read_markers (
        user TEXT NOT NULL, conversation TEXT NOT NULL, seq INTEGER NOT NULL,
        PRIMARY KEY (user, conversation)
    ) WITHOUT ROWID;
    """,
    # app_users (broadcast fan-out): the users of an app in id order
    "CREATE INDEX devices_by_app ON devices (app, user)",
    # groups, membership intervals, group write outcomes, group receipt counters, contacts and
    # blocks (storage_worker/store/social_sqlite.py)
    """
    CREATE TABLE groups (
        group_id TEXT PRIMARY KEY, app TEXT NOT NULL, name TEXT, owner TEXT,
        created_at INTEGER NOT NULL, version INTEGER NOT NULL
    ) WITHOUT ROWID;
    CREATE TABLE group_members (
        group_id TEXT NOT NULL, user TEXT NOT NULL, joined_seq INTEGER NOT NULL,
        left_seq INTEGER, role TEXT NOT NULL, PRIMARY KEY (group_id, user, joined_seq)
    ) WITHOUT ROWID;
    CREATE INDEX group_members_by_user ON group_members (user, left_seq);
    CREATE TABLE group_events (
        seq INTEGER PRIMARY KEY, id TEXT NOT NULL, group_id TEXT NOT NULL, app TEXT NOT NULL,
        actor TEXT NOT NULL, ts INTEGER NOT NULL, code TEXT NOT NULL, detail TEXT NOT NULL,
        body BLOB
    );
    CREATE TABLE group_messages (
        group_id TEXT NOT NULL, id TEXT NOT NULL, seq INTEGER NOT NULL, sender TEXT,
        recipients INTEGER NOT NULL, PRIMARY KEY (group_id, id)
    ) WITHOUT ROWID;
    CREATE TABLE group_markers (
        group_id TEXT NOT NULL, user TEXT NOT NULL, delivered_seq INTEGER NOT NULL,
        read_seq INTEGER NOT NULL, PRIMARY KEY (group_id, user)
    ) WITHOUT ROWID;
    CREATE TABLE contacts (
        user TEXT NOT NULL, other TEXT NOT NULL, state TEXT NOT NULL, since INTEGER NOT NULL,
        PRIMARY KEY (user, other)
    ) WITHOUT ROWID;
    CREATE TABLE blocks (
        user TEXT NOT NULL, blocked TEXT NOT NULL, since INTEGER NOT NULL,
        PRIMARY KEY (user, blocked)
    ) WITHOUT ROWID;
    """,
    # tenancy: the app leads every key of a tenant-chosen name (see the module docstring).
    # Rows without an app of their own take the app of what they belong to, else the
    # default app (``__DEFAULT_APP__``, replaced when the migration runs).
    """
    CREATE TABLE users_v4 (
        app TEXT NOT NULL, user TEXT NOT NULL, created_at INTEGER NOT NULL,
        PRIMARY KEY (app, user)
    ) WITHOUT ROWID;
    INSERT INTO users_v4 SELECT app, user, created_at FROM users;
    CREATE TABLE devices_v4 (
        app TEXT NOT NULL, device TEXT NOT NULL, user TEXT NOT NULL,
        created_at INTEGER NOT NULL, disabled INTEGER NOT NULL DEFAULT 0,
        floor INTEGER NOT NULL DEFAULT 0, PRIMARY KEY (app, device)
    ) WITHOUT ROWID;
    INSERT INTO devices_v4 SELECT app, device, user, created_at, disabled, floor FROM devices;
    CREATE TABLE inbox_v4 (
        app TEXT NOT NULL, user TEXT NOT NULL, seq INTEGER NOT NULL,
        conversation TEXT NOT NULL, sender_user TEXT, PRIMARY KEY (app, user, seq)
    ) WITHOUT ROWID;
    INSERT INTO inbox_v4 SELECT COALESCE(
        (SELECT m.app FROM messages m WHERE m.seq = i.seq),
        (SELECT u.app FROM users u WHERE u.user = i.user), '__DEFAULT_APP__'),
        i.user, i.seq, i.conversation, i.sender_user FROM inbox i;
    CREATE TABLE device_acks_v4 (
        app TEXT NOT NULL, device TEXT NOT NULL, seq INTEGER NOT NULL,
        PRIMARY KEY (app, device, seq)
    ) WITHOUT ROWID;
    INSERT INTO device_acks_v4 SELECT COALESCE(
        (SELECT d.app FROM devices d WHERE d.device = a.device), '__DEFAULT_APP__'),
        a.device, a.seq FROM device_acks a;
    CREATE TABLE read_markers_v4 (
        app TEXT NOT NULL, user TEXT NOT NULL, conversation TEXT NOT NULL,
        seq INTEGER NOT NULL, PRIMARY KEY (app, user, conversation)
    ) WITHOUT ROWID;
    INSERT INTO read_markers_v4 SELECT COALESCE(
        (SELECT m.app FROM messages m WHERE m.conversation = r.conversation LIMIT 1),
        (SELECT u.app FROM users u WHERE u.user = r.user), '__DEFAULT_APP__'),
        r.user, r.conversation, r.seq FROM read_markers r;
    CREATE TABLE groups_v4 (
        app TEXT NOT NULL, group_id TEXT NOT NULL, name TEXT, owner TEXT,
        created_at INTEGER NOT NULL, version INTEGER NOT NULL, PRIMARY KEY (app, group_id)
    ) WITHOUT ROWID;
    INSERT INTO groups_v4 SELECT app, group_id, name, owner, created_at, version FROM groups;
    CREATE TABLE group_members_v4 (
        app TEXT NOT NULL, group_id TEXT NOT NULL, user TEXT NOT NULL,
        joined_seq INTEGER NOT NULL, left_seq INTEGER, role TEXT NOT NULL,
        PRIMARY KEY (app, group_id, user, joined_seq)
    ) WITHOUT ROWID;
    INSERT INTO group_members_v4 SELECT COALESCE(
        (SELECT g.app FROM groups g WHERE g.group_id = m.group_id), '__DEFAULT_APP__'),
        m.group_id, m.user, m.joined_seq, m.left_seq, m.role FROM group_members m;
    CREATE TABLE group_messages_v4 (
        app TEXT NOT NULL, group_id TEXT NOT NULL, id TEXT NOT NULL, seq INTEGER NOT NULL,
        sender TEXT, recipients INTEGER NOT NULL, PRIMARY KEY (app, group_id, id)
    ) WITHOUT ROWID;
    INSERT INTO group_messages_v4 SELECT COALESCE(
        (SELECT g.app FROM groups g WHERE g.group_id = m.group_id), '__DEFAULT_APP__'),
        m.group_id, m.id, m.seq, m.sender, m.recipients FROM group_messages m;
    CREATE TABLE group_markers_v4 (
        app TEXT NOT NULL, group_id TEXT NOT NULL, user TEXT NOT NULL,
        delivered_seq INTEGER NOT NULL, read_seq INTEGER NOT NULL,
        PRIMARY KEY (app, group_id, user)
    ) WITHOUT ROWID;
    INSERT INTO group_markers_v4 SELECT COALESCE(
        (SELECT g.app FROM groups g WHERE g.group_id = k.group_id), '__DEFAULT_APP__'),
        k.group_id, k.user, k.delivered_seq, k.read_seq FROM group_markers k;
    CREATE TABLE contacts_v4 (
        app TEXT NOT NULL, user TEXT NOT NULL, other TEXT NOT NULL, state TEXT NOT NULL,
        since INTEGER NOT NULL, PRIMARY KEY (app, user, other)
    ) WITHOUT ROWID;
    INSERT INTO contacts_v4 SELECT COALESCE(
        (SELECT u.app FROM users u WHERE u.user = c.user), '__DEFAULT_APP__'),
        c.user, c.other, c.state, c.since FROM contacts c;
    CREATE TABLE blocks_v4 (
        app TEXT NOT NULL, user TEXT NOT NULL, blocked TEXT NOT NULL, since INTEGER NOT NULL,
        PRIMARY KEY (app, user, blocked)
    ) WITHOUT ROWID;
    INSERT INTO blocks_v4 SELECT COALESCE(
        (SELECT u.app FROM users u WHERE u.user = b.user), '__DEFAULT_APP__'),
        b.user, b.blocked, b.since FROM blocks b;
    DROP TABLE users; DROP TABLE devices; DROP TABLE inbox; DROP TABLE device_acks;
    DROP TABLE read_markers; DROP TABLE groups; DROP TABLE group_members;
    DROP TABLE group_messages; DROP TABLE group_markers; DROP TABLE contacts;
    DROP TABLE blocks;
    ALTER TABLE users_v4 RENAME TO users;
    ALTER TABLE devices_v4 RENAME TO devices;
    ALTER TABLE inbox_v4 RENAME TO inbox;
    ALTER TABLE device_acks_v4 RENAME TO device_acks;
    ALTER TABLE read_markers_v4 RENAME TO read_markers;
    ALTER TABLE groups_v4 RENAME TO groups;
    ALTER TABLE group_members_v4 RENAME TO group_members;
    ALTER TABLE group_messages_v4 RENAME TO group_messages;
    ALTER TABLE group_markers_v4 RENAME TO group_markers;
    ALTER TABLE contacts_v4 RENAME TO contacts;
    ALTER TABLE blocks_v4 RENAME TO blocks;
    CREATE INDEX devices_by_user ON devices (app, user);
    CREATE INDEX inbox_by_conversation ON inbox (app, user, conversation, seq);
    CREATE INDEX read_markers_by_conversation ON read_markers (app, conversation);
    CREATE INDEX group_members_by_user ON group_members (app, user, left_seq);
    DROP INDEX messages_by_conversation;
    CREATE INDEX messages_by_conversation ON messages (app, conversation, seq)
    """,
    # partitions: a device's floor per partition (``seq % partitions``); the databases
    # before were written with one partition, so the old floor is partition 0's.
    """
    CREATE TABLE device_floors (
        app TEXT NOT NULL, device TEXT NOT NULL, partition INTEGER NOT NULL,
        floor INTEGER NOT NULL, PRIMARY KEY (app, device, partition)
    ) WITHOUT ROWID;
    INSERT INTO device_floors SELECT app, device, 0, floor FROM devices WHERE floor > 0;
    ALTER TABLE devices DROP COLUMN floor
    """,
    # archive (docs/archive.md): how far each conversation is archived and purged
    """
    CREATE TABLE IF NOT EXISTS archive_marks (
        app TEXT NOT NULL, conversation TEXT NOT NULL, archived INTEGER NOT NULL,
        purged INTEGER NOT NULL, PRIMARY KEY (app, conversation)
    ) WITHOUT ROWID
    """,
]

#: Stands for the configured default app in migration scripts.
_DEFAULT_APP_TOKEN: Final = "__DEFAULT_APP__"
_APP_RE: Final = re.compile(ID_PATTERN)

#: Columns of ``messages`` read back into an envelope, in this order.
_MESSAGE_COLUMNS: Final = (
    "m.seq, m.id, m.conversation, m.app, m.module, m.kind, m.sender_user, m.sender_device, "
    "m.sender_service, m.to_kind, m.to_id, m.client_id, m.ts, m.expires_at, m.receipt, "
    "m.delivered_at"
)

#: A message is for device :device of user :user when it is not expired, not the device's
#: own send, and either has a shared body or a payload for that device.
_FOR_DEVICE: Final = """
    (m.expires_at IS NULL OR m.expires_at > :now)
    AND (m.sender_device IS NULL OR m.sender_device != :device)
    AND (m.body IS NOT NULL
         OR EXISTS (SELECT 1 FROM payloads p WHERE p.seq = m.seq AND p.device = :device))
"""


def _by_partition(column: str, bounds: Sequence[int], name: str) -> tuple[str, dict[str, int]]:
    """SQL for ``bounds[column % P]`` and its parameters (named ``name``...): a ``CASE`` over
    the partitions whose bound differs from the lowest, which is the ``ELSE`` (and the whole
    expression when every bound is the same: always with one partition)."""
    lowest = min(bounds)
    params = {f"{name}_min": lowest}
    arms = []
    for partition, bound in enumerate(bounds):
        if bound != lowest:
            arms.append(f"WHEN {partition} THEN :{name}_{partition}")
            params[f"{name}_{partition}"] = bound
    if not arms:
        return f":{name}_min", params
    return (f"(CASE {column} % {len(bounds)} {' '.join(arms)} ELSE :{name}_min END)",
            params)


def _above(column: str, bounds: Sequence[int], name: str) -> tuple[str, dict[str, int]]:
    """SQL for ``column > bounds[column % P]``: with ``column > lowest`` first, the range an
    index on ``column`` can seek."""
    bound, params = _by_partition(column, bounds, name)
    if bound == f":{name}_min":
        return f"{column} > {bound}", params
    return f"{column} > :{name}_min AND {column} > {bound}", params


@unavailable_on(sqlite3.OperationalError)
class SqliteStore:
    """``MessageStore`` on one SQLite file. ``sqlite3.OperationalError`` (locked, full or
    unreadable file) is raised as ``StoreUnavailable``."""

    def __init__(self, path: str | Path, default_app: str = "default", *,
                 partitions: int = 1) -> None:
        self._path = Path(path)
        self._default_app = default_app
        self._partitions = checked_partitions(partitions)
        self._db: aiosqlite.Connection | None = None
        self._writing = asyncio.Lock()

    @property
    def db(self) -> aiosqlite.Connection:
        if self._db is None:
            raise RuntimeError("store is not open")
        return self._db

    @asynccontextmanager
    async def atomic(self) -> AsyncIterator[aiosqlite.Connection]:
        """The connection for one write transaction, one at a time (the consumer, the RPC
        handlers and the social store share the connection): committed when the block ends,
        rolled back when it raises. A failed statement leaves the statements before it in
        the open transaction, and without the rollback the next commit would keep them (a
        message row without its inbox rows, skipped as stored when the batch is retried)."""
        async with self._writing:
            db = self.db
            try:
                yield db
            except BaseException:
                await db.rollback()
                raise
            await db.commit()

    async def open(self) -> None:
        if str(self._path) != ":memory:":
            self._path.parent.mkdir(parents=True, exist_ok=True)
        self._db = await aiosqlite.connect(self._path)
        await self._db.execute("PRAGMA journal_mode=WAL")
        await self._db.execute("PRAGMA synchronous=NORMAL")
        await self._db.execute("PRAGMA foreign_keys=OFF")
        await self._migrate()

    async def close(self) -> None:
        if self._db is not None:
            await self._db.close()
            self._db = None

    async def _migrate(self) -> None:
        """Apply pending migrations, one process at a time: storage workers and the archive
        worker open the same file, and two reading the same version would both apply it."""
        if not _APP_RE.match(self._default_app):
            raise ValueError(f"bad default app {self._default_app!r}")
        if str(self._path) == ":memory:":
            await self._migrate_locked()
            return
        lock = await asyncio.to_thread(open, f"{self._path}.migrate-lock", "a")
        try:
            await asyncio.to_thread(fcntl.flock, lock, fcntl.LOCK_EX)
            await self._migrate_locked()
        finally:
            lock.close()  # releases the lock

    async def _migrate_locked(self) -> None:
        await self.db.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER)")
        async with self.db.execute("SELECT MAX(version) FROM schema_version") as cur:
            row = await cur.fetchone()
        current = (row[0] if row else None) or 0
        for version, script in enumerate(MIGRATIONS[current:], start=current + 1):
            script = script.replace(_DEFAULT_APP_TOKEN, self._default_app)
            await self.db.executescript(
                f"BEGIN; {script}; INSERT INTO schema_version VALUES ({version}); COMMIT;"
            )

    # ------------------------------------------------------------------ registry

    async def register_device(self, app: str, user: str, device: str, now: int,
                              start_after: Sequence[int] = ()) -> DeviceInfo:
        start = as_cursor(start_after, self._partitions)
        async with self.atomic() as db:
            await db.execute(
                "INSERT OR IGNORE INTO users (app, user, created_at) VALUES (?, ?, ?)",
                (app, user, now),
            )
            async with db.execute(
                "SELECT user, created_at, disabled FROM devices WHERE app = ? AND device = ?",
                (app, device),
            ) as cur:
                row = await cur.fetchone()
            if row is not None and row[0] != user:
                raise ProtocolError(ErrorCode.CONFLICT,
                                    f"device {device!r} belongs to another user")
            if row is None:
                for partition, newest in enumerate(await self._newest(app, user, None)):
                    start[partition] = max(start[partition], newest)
                await db.execute(
                    "INSERT INTO devices (app, device, user, created_at) VALUES (?,?,?,?)",
                    (app, device, user, now),
                )
                await db.executemany(
                    "INSERT INTO device_floors (app, device, partition, floor) VALUES (?,?,?,?)",
                    [(app, device, partition, floor)
                     for partition, floor in enumerate(start) if floor > 0],
                )
                return DeviceInfo(user=user, device=device, app=app, created_at=now)
            return DeviceInfo(user=row[0], device=device, app=app, created_at=row[1],
                              disabled=bool(row[2]))

    async def user_devices(self, app: str, user: str) -> tuple[bool, list[DeviceInfo]]:
        async with self.db.execute("SELECT 1 FROM users WHERE app = ? AND user = ?",
                                   (app, user)) as cur:
            exists = await cur.fetchone() is not None
        async with self.db.execute(
            "SELECT device, created_at, disabled FROM devices WHERE app = ? AND user = ? "
            "ORDER BY device",
            (app, user),
        ) as cur:
            rows = await cur.fetchall()
        devices = [
            DeviceInfo(user=user, device=r[0], app=app, created_at=r[1], disabled=bool(r[2]))
            for r in rows
        ]
        return exists, devices

    async def app_users(self, app: str, after: str, limit: int) -> list[str]:
        async with self.db.execute(
            "SELECT DISTINCT user FROM devices WHERE app = ? AND user > ? ORDER BY user LIMIT ?",
            (app, after, limit),
        ) as cur:
            return [str(row[0]) for row in await cur.fetchall()]

    async def device_owner(self, app: str, device: str) -> str | None:
        async with self.db.execute("SELECT user FROM devices WHERE app = ? AND device = ?",
                                   (app, device)) as cur:
            row = await cur.fetchone()
        return None if row is None else str(row[0])

    # ------------------------------------------------------------------ writes

    async def append(self, messages: Sequence[StoredMessage]) -> None:
        message_rows: list[tuple[Any, ...]] = []
        payload_rows: list[tuple[int, str, bytes]] = []
        inbox_rows: list[tuple[str, str, int, str, str | None]] = []
        seen = await self._stored_ids([stored.envelope.id for stored in messages])
        for stored in messages:
            env = stored.envelope
            if env.id in seen:  # a retry stored earlier, or twice in this batch
                continue
            seen.add(env.id)
            message_rows.append(
                (stored.seq, env.id, env.conversation, env.app, env.module, env.kind,
                 env.sender.user, env.sender.device, env.sender.service, env.to.kind,
                 env.to.id, env.body, env.client_id, env.ts, env.expires_at, int(env.receipt))
            )
            for device, body in (env.payloads or {}).items():
                payload_rows.append((stored.seq, device, body))
            for user in stored.recipients:  # users of the message's app
                inbox_rows.append((env.app, user, stored.seq, env.conversation, env.sender.user))
        async with self.atomic() as db:
            await db.executemany(
                "INSERT OR IGNORE INTO messages (seq, id, conversation, app, module, kind, "
                "sender_user, sender_device, sender_service, to_kind, to_id, body, client_id, "
                "ts, expires_at, receipt) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                message_rows,
            )
            await db.executemany("INSERT OR IGNORE INTO payloads VALUES (?,?,?)", payload_rows)
            await db.executemany(
                "INSERT OR IGNORE INTO inbox (app, user, seq, conversation, sender_user) "
                "VALUES (?,?,?,?,?)", inbox_rows)

    async def _stored_ids(self, ids: list[str]) -> set[str]:
        """Which of these message ids are already stored (one query per chunk)."""
        found: set[str] = set()
        for start in range(0, len(ids), 500):
            chunk = ids[start:start + 500]
            marks = ",".join("?" * len(chunk))
            async with self.db.execute(
                f"SELECT id FROM messages WHERE id IN ({marks})", chunk
            ) as cur:
                found.update(str(row[0]) for row in await cur.fetchall())
        return found

    async def record_acks(self, app: str, user: str, device: str, items: Sequence[AckItem],
                          now: int) -> None:
        await self.record_acks_of([DeviceAcks(app=app, user=user, device=device,
                                               items=list(items))], now)

    async def record_acks_of(self, entries: Sequence[DeviceAcks], now: int) -> None:
        """Every device's acks in one transaction: two statements for the whole flush (one
        thread hop each), not two and a commit per device."""
        count = self._partitions
        ack_rows: list[tuple[Any, ...]] = []
        delivered_rows: list[tuple[Any, ...]] = []
        for entry in entries:
            app, user, device = entry.app, entry.user, entry.device
            for seq, conversation in sorted({(item.seq, item.conversation)
                                             for item in entry.items}):
                ack_rows.append((app, device, app, user, seq, conversation, app, device, app,
                                 device, seq % count))
                delivered_rows.append((now, seq, conversation, user, app, user, seq))
        if not ack_rows:
            return
        async with self.atomic() as db:
            # Only entries of this user's inbox in the named conversation count: an ack cannot
            # touch another conversation's message or move the cursor past what exists.
            await db.executemany(
                "INSERT OR IGNORE INTO device_acks (app, device, seq) "
                "SELECT ?, ?, seq FROM inbox WHERE app = ? AND user = ? AND seq = ? "
                "AND conversation = ? "
                "AND EXISTS (SELECT 1 FROM devices WHERE app = ? AND device = ?) "
                "AND seq > COALESCE((SELECT floor FROM device_floors WHERE app = ? "
                "AND device = ? AND partition = ?), 0)", ack_rows)
            await db.executemany(
                "UPDATE messages SET delivered_at = ? WHERE seq = ? AND conversation = ? "
                "AND delivered_at IS NULL AND (sender_user IS NULL OR sender_user != ?) "
                "AND EXISTS (SELECT 1 FROM inbox WHERE app = ? AND user = ? AND seq = ?)",
                delivered_rows)

    async def _floors(self, app: str, device: str) -> list[int] | None:
        """The device's floor of each partition, or None for no such device."""
        async with self.db.execute("SELECT 1 FROM devices WHERE app = ? AND device = ?",
                                   (app, device)) as cur:
            if await cur.fetchone() is None:
                return None
        floors = empty_cursor(self._partitions)
        async with self.db.execute(
            "SELECT partition, floor FROM device_floors WHERE app = ? AND device = ?",
            (app, device),
        ) as cur:
            for partition, floor in await cur.fetchall():
                if partition < self._partitions:
                    floors[partition] = int(floor)
        return floors

    async def _newest(self, app: str, user: str, above: Sequence[int] | None,
                      up_to: int | None = None) -> list[int]:
        """The newest inbox entry of the user in each partition (0: none), among those above
        ``above`` (per partition) and at most ``up_to`` when given."""
        newest = empty_cursor(self._partitions)
        condition, params = _above("seq", above or newest, "above")
        if up_to is not None:
            condition += " AND seq <= :up_to"
        async with self.db.execute(
            f"SELECT seq % {self._partitions}, MAX(seq) FROM inbox "
            f"WHERE app = :app AND user = :user AND {condition} GROUP BY 1",
            {"app": app, "user": user, "up_to": up_to, **params},
        ) as cur:
            for partition, seq in await cur.fetchall():
                newest[partition] = int(seq)
        return newest

    async def _advance_floor(self, app: str, user: str, device: str, floors: list[int],
                             now: int) -> list[int]:
        """Move the device's floor of each partition over every acknowledged (or not-for-it)
        inbox entry of that partition at its start, forget the acknowledgements the floors
        now cover, and return the floors.

        Run when the device syncs, not per ack: acks arrive with every message, syncs once
        per connection, and the backlog query excludes acknowledged entries either way."""
        count = self._partitions
        above, params = _above("i.seq", floors, "floor")
        async with self.db.execute(
            f"""SELECT i.seq % {count},
                       MIN(CASE WHEN {_FOR_DEVICE} AND NOT EXISTS (
                               SELECT 1 FROM device_acks a WHERE a.app = :app
                               AND a.device = :device AND a.seq = i.seq) THEN i.seq END),
                       MAX(i.seq)
                FROM inbox i JOIN messages m ON m.seq = i.seq
                WHERE i.app = :app AND i.user = :user AND {above}
                GROUP BY 1""",
            {"app": app, "user": user, "device": device, "now": now, **params},
        ) as cur:
            rows = await cur.fetchall()
        advanced = list(floors)
        for partition, first_missing, newest in rows:
            # every entry of the partition below its first missing one is done: the floor is
            # the position before it (of the same partition), else the newest entry
            done = (int(newest) if first_missing is None
                    else position_before(int(first_missing), count))
            advanced[partition] = max(advanced[partition], done)
        moved = [(app, device, partition, floor)
                 for partition, (floor, old) in enumerate(zip(advanced, floors, strict=True))
                 if floor > old]
        if moved:
            await self.db.executemany(
                "INSERT INTO device_floors (app, device, partition, floor) VALUES (?,?,?,?) "
                "ON CONFLICT (app, device, partition) "
                "DO UPDATE SET floor = MAX(floor, excluded.floor)",
                moved,
            )
            covered, params = _by_partition("seq", advanced, "floor")
            await self.db.execute(
                "DELETE FROM device_acks WHERE app = :app AND device = :device "
                f"AND seq <= {covered}",
                {"app": app, "device": device, **params},
            )
        return advanced

    async def mark_read(self, app: str, user: str, conversation: str, seq: int) -> None:
        async with self.atomic() as db:
            await db.execute(
                "INSERT INTO read_markers (app, user, conversation, seq) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (app, user, conversation) "
                "DO UPDATE SET seq = MAX(seq, excluded.seq)",
                (app, user, conversation, seq),
            )

    # ------------------------------------------------------------------ reads

    async def backlog(
        self, app: str, user: str, device: str, after: Sequence[int], limit: int, now: int
    ) -> tuple[list[DeliverableMessage], list[int]]:
        if limit < 1:
            raise ValueError("a backlog page holds at least one message")
        cursor = as_cursor(after, self._partitions)
        # One transaction: no append lands between the page and the cursor's reads.
        async with self.atomic():
            floors = await self._floors(app, device)
            if floors is None:  # an unknown device has no backlog
                return [], cursor
            floors = await self._advance_floor(app, user, device, floors, now)
            lows = [max(bound, floor) for bound, floor in zip(cursor, floors, strict=True)]
            above, params = _above("i.seq", lows, "low")
            async with self.db.execute(
                f"""SELECT {_MESSAGE_COLUMNS}, COALESCE(m.body, p.body)
                    FROM inbox i JOIN messages m ON m.seq = i.seq
                    LEFT JOIN payloads p ON m.body IS NULL AND p.seq = m.seq
                                        AND p.device = :device
                    WHERE i.app = :app AND i.user = :user AND {above}
                      AND {_FOR_DEVICE}
                      AND NOT EXISTS (SELECT 1 FROM device_acks a WHERE a.app = :app
                                      AND a.device = :device AND a.seq = i.seq)
                    ORDER BY i.seq LIMIT :limit""",
                {"app": app, "user": user, "device": device, "now": now, "limit": limit,
                 **params},
            ) as cur:
                rows = list(await cur.fetchall())
            # Examined: the inbox above the bounds, up to the last message of a full page.
            up_to = int(rows[-1][0]) if len(rows) == limit else None
            examined = await self._newest(app, user, lows, up_to)
        messages = [
            DeliverableMessage(seq=row[0], envelope=_envelope(row), body=row[-1]) for row in rows
        ]
        return messages, [max(low, seen) for low, seen in zip(lows, examined, strict=True)]

    async def history(
        self,
        app: str,
        user: str,
        device: str,
        conversation: str,
        before: int | None,
        after: int | None,
        limit: int,
        now: int,
    ) -> list[HistoryItem]:
        params = {"app": app, "user": user, "device": device, "conversation": conversation,
                  "now": now, "limit": limit, "before": before, "after": after}
        if after is not None:
            bound, order = "i.seq > :after", "ASC"
        else:
            bound = "i.seq < :before" if before is not None else "1"
            order = "DESC"
        async with self.db.execute(
            f"""SELECT {_MESSAGE_COLUMNS}, COALESCE(m.body, p.body)
                FROM inbox i JOIN messages m ON m.seq = i.seq
                LEFT JOIN payloads p ON m.body IS NULL AND p.seq = m.seq AND p.device = :device
                WHERE i.app = :app AND i.user = :user AND i.conversation = :conversation
                  AND {bound} AND (m.body IS NOT NULL OR p.body IS NOT NULL)
                ORDER BY i.seq {order} LIMIT :limit""",
            params,
        ) as cur:
            rows = list(await cur.fetchall())
        rows.sort(key=lambda r: int(r[0]))
        others_read = await self._others_read(app, user, conversation)
        return [
            HistoryItem(
                message=message_frame(_envelope(row), row[0], row[-1]),
                status=_status(row, user, others_read, now),
            )
            for row in rows
        ]

    async def message(self, app: str, user: str, device: str, message_id: str,
                      now: int) -> HistoryItem | None:
        async with self.db.execute(
            f"""SELECT {_MESSAGE_COLUMNS}, COALESCE(m.body, p.body)
                FROM messages m JOIN inbox i
                  ON i.seq = m.seq AND i.app = :app AND i.user = :user
                LEFT JOIN payloads p ON m.body IS NULL AND p.seq = m.seq AND p.device = :device
                WHERE m.id = :id AND (m.body IS NOT NULL OR p.body IS NOT NULL)""",
            {"app": app, "user": user, "device": device, "id": message_id},
        ) as cur:
            row = await cur.fetchone()
        if row is None:
            return None
        others_read = await self._others_read(app, user, row[2])
        return HistoryItem(message=message_frame(_envelope(row), row[0], row[-1]),
                           status=_status(row, user, others_read, now))

    async def _others_read(self, app: str, user: str, conversation: str) -> int:
        """The highest read marker of the conversation's other members."""
        async with self.db.execute(
            "SELECT MAX(seq) FROM read_markers WHERE app = ? AND conversation = ? AND user != ?",
            (app, conversation, user),
        ) as cur:
            row = await cur.fetchone()
        return int((row[0] if row else None) or 0)

    async def conversations(
        self, app: str, user: str, device: str, limit: int
    ) -> list[ConversationSummary]:
        # A conversation's positions are of one partition; across conversations only the
        # messages' timestamps compare.
        async with self.db.execute(
            """SELECT c.conversation, c.last, c.read_seq FROM (
                   SELECT i.conversation AS conversation, MAX(i.seq) AS last,
                          COALESCE(r.seq, 0) AS read_seq
                   FROM inbox i LEFT JOIN read_markers r
                     ON r.app = i.app AND r.user = i.user AND r.conversation = i.conversation
                   WHERE i.app = ? AND i.user = ? GROUP BY i.conversation) c
               JOIN messages m ON m.seq = c.last
               ORDER BY m.ts DESC, c.last DESC LIMIT ?""",
            (app, user, limit),
        ) as cur:
            rows = await cur.fetchall()
        summaries = []
        for conversation, last_seq, read_seq in rows:
            async with self.db.execute(
                "SELECT COUNT(*) FROM inbox WHERE app = ? AND user = ? AND conversation = ? "
                "AND seq > ? AND (sender_user IS NULL OR sender_user != ?)",
                (app, user, conversation, read_seq, user),
            ) as cur:
                unread_row = await cur.fetchone()
            last = await self.history(app, user, device, conversation, None, None, 1, 0)
            summaries.append(
                ConversationSummary(
                    conversation=conversation,
                    last_seq=last_seq,
                    unread=int(unread_row[0]) if unread_row else 0,
                    read_seq=read_seq,
                    last_message=last[0].message if last else None,
                )
            )
        return summaries

    # ------------------------------------------------------------------ retention

    async def purge(self, policy: RetentionPolicy, now: int) -> int:
        removed = 0
        async with self.atomic() as db:
            async with db.execute("SELECT DISTINCT app FROM messages") as cur:
                apps = [str(r[0]) for r in await cur.fetchall()]
            for app in apps:
                cutoff = now - policy.days_for(app) * DAY_MS
                removed += await self._delete_where("m.app = :app AND m.ts < :cutoff",
                                                    {"app": app, "cutoff": cutoff, "now": now})
                if app in policy.ephemeral_apps:
                    removed += await self._delete_where(
                        """m.app = :app AND NOT EXISTS (
                             SELECT 1 FROM inbox i
                             JOIN devices d ON d.app = i.app AND d.user = i.user
                             WHERE i.seq = m.seq AND m.seq > COALESCE((
                                   SELECT f.floor FROM device_floors f WHERE f.app = d.app
                                   AND f.device = d.device
                                   AND f.partition = m.seq % :partitions), 0)
                               AND (m.sender_device IS NULL OR m.sender_device != d.device)
                               AND (m.body IS NOT NULL OR EXISTS (
                                    SELECT 1 FROM payloads p WHERE p.seq = m.seq
                                    AND p.device = d.device))
                               AND NOT EXISTS (SELECT 1 FROM device_acks a
                                               WHERE a.app = d.app AND a.device = d.device
                                                 AND a.seq = m.seq))""",
                        {"app": app, "cutoff": cutoff, "now": now,
                         "partitions": self._partitions},
                    )
        return removed

    async def _delete_where(self, condition: str, params: dict[str, Any]) -> int:
        async with self.db.execute(
            f"SELECT m.seq FROM messages m WHERE {condition}", params
        ) as cur:
            seqs = [(int(r[0]),) for r in await cur.fetchall()]
        if seqs:
            await self.db.executemany("DELETE FROM inbox WHERE seq = ?", seqs)
            await self.db.executemany("DELETE FROM payloads WHERE seq = ?", seqs)
            await self.db.executemany("DELETE FROM messages WHERE seq = ?", seqs)
        return len(seqs)

    # ------------------------------------------------------------------ archive

    async def message_apps(self) -> list[str]:
        async with self.db.execute("SELECT DISTINCT app FROM messages ORDER BY app") as cur:
            return [str(row[0]) for row in await cur.fetchall()]

    async def archive_candidates(self, app: str, before_ts: int) -> list[str]:
        async with self.db.execute(
            "SELECT DISTINCT conversation FROM messages WHERE app = ? AND ts < ? "
            "ORDER BY conversation", (app, before_ts),
        ) as cur:
            return [str(row[0]) for row in await cur.fetchall()]

    async def archive_rows(self, app: str, conversation: str, after: int, before_ts: int,
                           limit: int) -> list[ArchivedMessage]:
        async with self.db.execute(
            f"""SELECT {_MESSAGE_COLUMNS}, m.body FROM messages m
                WHERE m.app = ? AND m.conversation = ? AND m.seq > ?
                ORDER BY m.seq LIMIT ?""",
            (app, conversation, after, limit),
        ) as cur:
            rows = list(await cur.fetchall())
        cut = next((index for index, row in enumerate(rows) if row[12] >= before_ts), len(rows))
        rows = rows[:cut]
        seqs = [int(row[0]) for row in rows]
        payloads: dict[int, dict[str, bytes]] = {}
        recipients: dict[int, list[str]] = {}
        for start in range(0, len(seqs), 500):
            chunk = seqs[start:start + 500]
            marks = ",".join("?" * len(chunk))
            async with self.db.execute(
                f"SELECT seq, device, body FROM payloads WHERE seq IN ({marks}) "
                "ORDER BY seq, device", chunk,
            ) as cur:
                for seq, device, body in await cur.fetchall():
                    payloads.setdefault(int(seq), {})[str(device)] = bytes(body)
            async with self.db.execute(
                f"SELECT seq, user FROM inbox WHERE app = ? AND seq IN ({marks}) "
                "ORDER BY seq, user", [app, *chunk],
            ) as cur:
                for seq, user in await cur.fetchall():
                    recipients.setdefault(int(seq), []).append(str(user))
        archived = []
        for row in rows:
            envelope = _envelope(row)
            envelope.body = row[-1]
            envelope.payloads = payloads.get(int(row[0]))
            archived.append(ArchivedMessage(seq=int(row[0]), envelope=envelope,
                                            recipients=recipients.get(int(row[0]), []),
                                            delivered_at=row[15]))
        return archived

    async def archive_mark(self, app: str, conversation: str) -> ArchiveMark:
        async with self.db.execute(
            "SELECT archived, purged FROM archive_marks WHERE app = ? AND conversation = ?",
            (app, conversation),
        ) as cur:
            row = await cur.fetchone()
        return ArchiveMark() if row is None else ArchiveMark(archived=int(row[0]),
                                                             purged=int(row[1]))

    async def set_archive_mark(self, app: str, conversation: str, mark: ArchiveMark) -> None:
        async with self.atomic() as db:
            await db.execute(
                "INSERT INTO archive_marks (app, conversation, archived, purged) "
                "VALUES (?, ?, ?, ?) ON CONFLICT (app, conversation) DO UPDATE SET "
                "archived = MAX(archived, excluded.archived), "
                "purged = MAX(purged, excluded.purged)",
                (app, conversation, mark.archived, mark.purged),
            )

    async def archived_conversations(self) -> list[tuple[str, str]]:
        async with self.db.execute(
            "SELECT app, conversation FROM archive_marks ORDER BY app, conversation"
        ) as cur:
            return [(str(app), str(conversation)) for app, conversation in await cur.fetchall()]

    async def purge_archived(self, app: str, conversation: str, through: int) -> int:
        async with self.atomic():
            return await self._delete_where(
                "m.app = :app AND m.conversation = :conversation AND m.seq <= :through",
                {"app": app, "conversation": conversation, "through": through})

    async def others_read(self, app: str, user: str, conversation: str) -> int:
        return await self._others_read(app, user, conversation)


def _envelope(row: Any) -> MessageEnvelope:
    """Rebuild an envelope (without per-device payloads) from ``_MESSAGE_COLUMNS``."""
    return MessageEnvelope(
        id=row[1], conversation=row[2], app=row[3], module=row[4], kind=row[5],
        sender=Sender(user=row[6], device=row[7], service=row[8]),
        to=Destination(kind=row[9], id=row[10]), client_id=row[11], ts=row[12],
        expires_at=row[13], receipt=bool(row[14]),
    )


def _status(row: Any, user: str, others_read: int, now: int) -> str:
    """Status of a message as the conversation sees it."""
    seq, sender, expires_at, delivered_at = row[0], row[6], row[13], row[15]
    if sender == user and direct_members(row[2]) is not None and others_read >= seq:
        return "read"
    if delivered_at is not None:
        return "delivered"
    if expires_at is not None and expires_at <= now:
        return "expired"
    return "sent"
