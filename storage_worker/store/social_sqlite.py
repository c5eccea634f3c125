"""``SocialStore`` on SQLite: the tables of migration 3 in ``sqlite.py`` (re-keyed by app in
migration 4: ``app`` leads every primary key and index), used through the connection of a
``SqliteStore`` (one file, one writer: the storage worker process)."""

import sqlite3
from collections.abc import Sequence
from typing import Any

from schemas.contacts import ContactEntry, Relation
from schemas.frames import ContactState
from schemas.groups import GroupReceipts, GroupSummary
from schemas.ids import group_conversation
from storage_worker.store.base import unavailable_on
from storage_worker.store.social import (
    GroupChange,
    GroupEventRecord,
    GroupMessageMeta,
    GroupState,
    GroupWriteOutOfOrder,
    MemberState,
)
from storage_worker.store.sqlite import SqliteStore

#: Membership at ``:seq``: an interval that started at or before it and had not ended.
_MEMBER_AT = "m.joined_seq <= :seq AND (m.left_seq IS NULL OR m.left_seq > :seq)"


@unavailable_on(sqlite3.OperationalError)
class SqliteSocialStore:
    """Groups and contacts in the database of ``sqlite`` (opened and closed by its owner)."""

    def __init__(self, sqlite: SqliteStore) -> None:
        self._sqlite = sqlite

    async def open(self) -> None:
        """Nothing to do: the message store's migrations create the tables."""

    async def close(self) -> None:
        """Nothing to do: the connection is the message store's."""

    async def _all(self, sql: str, params: Sequence[Any] | dict[str, Any]) -> list[Any]:
        async with self._sqlite.db.execute(sql, params) as cur:
            return list(await cur.fetchall())

    async def _one(self, sql: str, params: Sequence[Any] | dict[str, Any]) -> Any:
        async with self._sqlite.db.execute(sql, params) as cur:
            return await cur.fetchone()

    # ------------------------------------------------------------------ groups

    async def group(self, app: str, group: str) -> GroupState | None:
        row = await self._one(
            "SELECT name, owner, created_at, version FROM groups WHERE app = ? AND group_id = ?",
            (app, group))
        if row is None:
            return None
        members = await self._all(
            "SELECT user, role, joined_seq FROM group_members WHERE app = ? AND group_id = ? "
            "AND left_seq IS NULL ORDER BY joined_seq, user", (app, group))
        former = await self._all(
            """SELECT DISTINCT m.user FROM group_members m
               WHERE m.app = :app AND m.group_id = :group AND m.left_seq IS NOT NULL
                 AND NOT EXISTS (SELECT 1 FROM group_members c WHERE c.app = m.app
                                 AND c.group_id = m.group_id AND c.user = m.user
                                 AND c.left_seq IS NULL)
               ORDER BY m.user""", {"app": app, "group": group})
        return GroupState(
            id=group, app=app, name=row[0], owner=row[1], created_at=row[2],
            version=row[3], members=[MemberState(user=r[0], role=r[1], joined_seq=r[2])
                                     for r in members],
            former=[r[0] for r in former])

    async def members_at(self, app: str, group: str, seq: int) -> list[str]:
        rows = await self._all(
            f"SELECT DISTINCT m.user FROM group_members m WHERE m.app = :app "
            f"AND m.group_id = :group AND {_MEMBER_AT} ORDER BY m.user",
            {"app": app, "group": group, "seq": seq})
        return [r[0] for r in rows]

    async def user_groups(self, app: str, user: str) -> list[GroupSummary]:
        rows = await self._all(
            """SELECT g.group_id, g.name, m.role, g.version,
                      (SELECT COUNT(*) FROM group_members c WHERE c.app = g.app
                       AND c.group_id = g.group_id AND c.left_seq IS NULL)
               FROM group_members m JOIN groups g ON g.app = m.app AND g.group_id = m.group_id
               WHERE m.app = ? AND m.user = ? AND m.left_seq IS NULL
               ORDER BY g.version DESC, g.group_id""", (app, user))
        return [GroupSummary(id=r[0], conversation=group_conversation(r[0]), name=r[1],
                             role=r[2], version=r[3], members=r[4]) for r in rows]

    async def group_event(self, seq: int) -> GroupEventRecord | None:
        row = await self._one(
            "SELECT seq, id, group_id, app, actor, ts, code, detail, body FROM group_events "
            "WHERE seq = ?", (seq,))
        if row is None:
            return None
        return GroupEventRecord(seq=row[0], id=row[1], group=row[2], app=row[3], actor=row[4],
                                ts=row[5], code=row[6], detail=row[7], body=row[8])

    async def apply_group_event(self, record: GroupEventRecord,
                                change: GroupChange | None) -> None:
        if await self.group_event(record.seq) is not None:
            return
        async with self._sqlite.atomic() as db:
            if change is not None:
                await self._apply(change)
            # The record goes last: a redelivery finds no record and completes the change
            # (every statement of ``_apply`` is idempotent).
            await db.execute(
                "INSERT OR IGNORE INTO group_events (seq, id, group_id, app, actor, ts, code, "
                "detail, body) VALUES (?,?,?,?,?,?,?,?,?)",
                (record.seq, record.id, record.group, record.app, record.actor, record.ts,
                 record.code, record.detail, record.body))

    async def _apply(self, change: GroupChange) -> None:
        db = self._sqlite.db
        params: dict[str, Any] = {"app": change.app, "group": change.group, "seq": change.seq}
        version = await self._one("SELECT version FROM groups WHERE app = ? AND group_id = ?",
                                  (change.app, change.group))
        if version is not None and version[0] > change.seq:
            raise GroupWriteOutOfOrder(change.app, change.group, change.seq, version[0])
        if change.created:
            await db.execute(
                "INSERT OR IGNORE INTO groups (app, group_id, name, owner, created_at, version) "
                "VALUES (?,?,?,?,?,?)",
                (change.app, change.group, change.name, change.owner, change.ts, change.seq))
        else:
            await db.execute(
                "UPDATE groups SET version = MAX(version, :seq), name = COALESCE(:name, name), "
                "owner = COALESCE(:owner, owner) WHERE app = :app AND group_id = :group",
                {**params, "name": change.name, "owner": change.owner})
        await db.executemany(
            "UPDATE group_members SET left_seq = :seq WHERE app = :app AND group_id = :group "
            "AND user = :user AND left_seq IS NULL AND joined_seq < :seq",
            [{**params, "user": user} for user in change.removed])
        await db.executemany(
            "INSERT OR IGNORE INTO group_members (app, group_id, user, joined_seq, left_seq, "
            "role) VALUES (:app, :group, :user, :seq, NULL, :role)",
            [{**params, "user": user, "role": role} for user, role in change.added.items()])
        await db.executemany(
            "UPDATE group_members SET role = :role WHERE app = :app AND group_id = :group "
            "AND user = :user AND left_seq IS NULL",
            [{**params, "user": user, "role": role} for user, role in change.roles.items()])

    async def record_group_messages(self, messages: Sequence[GroupMessageMeta]) -> None:
        if not messages:
            return
        async with self._sqlite.atomic() as db:
            await db.executemany(
                "INSERT OR IGNORE INTO group_messages (app, group_id, id, seq, sender, "
                "recipients) VALUES (?,?,?,?,?,?)",
                [(m.app, m.group, m.id, m.seq, m.sender, m.recipients) for m in messages])

    async def advance_markers(self, app: str, group: str, user: str, delivered: int,
                              read: int) -> None:
        async with self._sqlite.atomic() as db:
            await db.execute(
                "INSERT INTO group_markers (app, group_id, user, delivered_seq, read_seq) "
                "VALUES (?,?,?,?,?) ON CONFLICT (app, group_id, user) DO UPDATE SET "
                "delivered_seq = MAX(delivered_seq, excluded.delivered_seq), "
                "read_seq = MAX(read_seq, excluded.read_seq)",
                (app, group, user, delivered, read))

    async def receipts(self, app: str, group: str, message_id: str) -> GroupReceipts | None:
        meta = await self._one(
            "SELECT seq, sender, recipients FROM group_messages "
            "WHERE app = ? AND group_id = ? AND id = ?", (app, group, message_id))
        if meta is None:
            return None
        seq, sender, recipients = int(meta[0]), meta[1], int(meta[2])
        counts = await self._one(
            f"""SELECT COUNT(DISTINCT m.user),
                       COUNT(DISTINCT CASE WHEN k.read_seq >= :seq THEN m.user END)
                FROM group_members m JOIN group_markers k
                  ON k.app = m.app AND k.group_id = m.group_id AND k.user = m.user
                WHERE m.app = :app AND m.group_id = :group AND {_MEMBER_AT}
                  AND m.user != :sender AND MAX(k.delivered_seq, k.read_seq) >= :seq""",
            {"app": app, "group": group, "seq": seq, "sender": sender or ""})
        delivered, read = (int(counts[0]), int(counts[1])) if counts else (0, 0)
        return GroupReceipts(
            conversation=group_conversation(group), message_id=message_id, seq=seq,
            recipients=recipients, delivered=delivered, read=read,
            delivered_to_all=delivered >= recipients, read_by_all=read >= recipients)

    # ------------------------------------------------------------------ contacts

    async def relation(self, app: str, a: str, b: str) -> Relation:
        row = await self._one("SELECT state FROM contacts WHERE app = ? AND user = ? "
                              "AND other = ?", (app, a, b))
        blockers = {r[0] for r in await self._all(
            "SELECT user FROM blocks WHERE app = ? "
            "AND ((user = ? AND blocked = ?) OR (user = ? AND blocked = ?))",
            (app, a, b, b, a))}
        return Relation(a=a, b=b, state=row[0] if row else "none", a_blocks_b=a in blockers,
                        b_blocks_a=b in blockers)

    async def contacts(self, app: str, user: str) -> list[ContactEntry]:
        entries = {r[0]: ContactEntry(user=r[0], state=r[1], since=r[2]) for r in await self._all(
            "SELECT other, state, since FROM contacts WHERE app = ? AND user = ?", (app, user))}
        for blocked, since in await self._all(
                "SELECT blocked, since FROM blocks WHERE app = ? AND user = ?", (app, user)):
            entry = entries.get(blocked)
            entries[blocked] = ContactEntry(user=blocked, state="none", blocked=True, since=since) \
                if entry is None else ContactEntry(user=blocked, state=entry.state, blocked=True,
                                                   since=entry.since)
        return [entries[key] for key in sorted(entries)]

    async def change_relation(self, app: str, before: Relation, mine: ContactState,
                              theirs: ContactState, block: bool | None, now: int) -> bool:
        a, b = before.a, before.b
        # One transaction of the one writer of this file: the comparison and the writes
        # cannot interleave with another contact write.
        async with self._sqlite.atomic() as db:
            if await self.relation(app, a, b) != before:
                return False
            for user, other, state in ((a, b, mine), (b, a, theirs)):
                if state == "none":
                    await db.execute("DELETE FROM contacts WHERE app = ? AND user = ? "
                                     "AND other = ?", (app, user, other))
                    continue
                await db.execute(
                    "INSERT INTO contacts (app, user, other, state, since) VALUES (?,?,?,?,?) "
                    "ON CONFLICT (app, user, other) DO UPDATE SET since = CASE WHEN state = "
                    "excluded.state THEN since ELSE excluded.since END, state = excluded.state",
                    (app, user, other, state, now))
            if block is True:
                await db.execute(
                    "INSERT OR IGNORE INTO blocks (app, user, blocked, since) VALUES (?,?,?,?)",
                    (app, a, b, now))
            elif block is False:
                await db.execute("DELETE FROM blocks WHERE app = ? AND user = ? "
                                 "AND blocked = ?", (app, a, b))
        return True
