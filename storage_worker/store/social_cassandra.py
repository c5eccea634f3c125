"""``SocialStore`` on Cassandra: the tables of migration 3 in ``cassandra_schema``, used through
the session of a ``CassandraStore`` (which creates them), so groups and contacts live in the
cluster with the messages and any number of storage workers share them.

Two kinds of write need an order, and the database keeps it, not the process:

- **Group writes** apply in seq order. ``social_groups.version`` (the seq of the group's latest
  applied write) moves only by compare-and-set (``IF NOT EXISTS`` at creation, ``IF version <=
  seq`` after), before anything else of the write: a write that meets a later version raises
  ``GroupWriteOutOfOrder`` and changes nothing. The rest of the write is idempotent: the
  membership rows of one group are one partition (one single-partition batch), the per-user
  index rows are written ``USING TIMESTAMP <seq>``, and the outcome record goes last.
- **Contact writes** are compare-and-set on one row per pair (``contact_pairs``, the truth:
  both users' states, blocks and a ``version``). Per-user rows for listing
  (``contacts_by_user``) are derived from it, ``USING TIMESTAMP <version>`` so that the latest
  version wins whichever writer lands last; ``synced`` records the version they were written
  from, and a pair read with ``synced < version`` (its writer died in between) writes them
  again.

docs/cassandra.md ("Groups and contacts") explains the choice.
"""

import asyncio
from collections.abc import Sequence
from typing import Any, Final, NamedTuple

from cassandra.query import UNSET_VALUE, BatchStatement, BatchType, PreparedStatement

from schemas.contacts import ContactEntry, Relation
from schemas.frames import ContactState
from schemas.groups import GroupReceipts, GroupSummary, Role
from schemas.ids import group_conversation
from storage_worker.store.base import unavailable_on
from storage_worker.store.cassandra import _OUTAGE, CassandraStore, _as_future
from storage_worker.store.social import (
    GroupChange,
    GroupEventRecord,
    GroupMessageMeta,
    GroupState,
    GroupWriteOutOfOrder,
    MemberState,
)

#: Requests in flight from this store (the message store has its own budget).
_IN_FLIGHT: Final = 32

_QUERIES: Final[dict[str, str]] = {
    # groups
    "group_get": "SELECT name, owner, created_at, version FROM {ks}.social_groups "
                 "WHERE app = ? AND group_id = ?",
    "group_create": "INSERT INTO {ks}.social_groups (app, group_id, name, owner, created_at, "
                    "version) VALUES (?, ?, ?, ?, ?, ?) IF NOT EXISTS",
    "group_update": "UPDATE {ks}.social_groups SET version = ?, name = ?, owner = ? "
                    "WHERE app = ? AND group_id = ? IF version <= ?",
    "members_get": "SELECT user, joined_seq, left_seq, role FROM {ks}.group_members "
                   "WHERE app = ? AND group_id = ?",
    "member_put": "INSERT INTO {ks}.group_members (app, group_id, user, joined_seq, role) "
                  "VALUES (?, ?, ?, ?, ?)",
    "member_leave": "UPDATE {ks}.group_members SET left_seq = ? WHERE app = ? AND group_id = ? "
                    "AND user = ? AND joined_seq = ?",
    "member_role": "UPDATE {ks}.group_members SET role = ? WHERE app = ? AND group_id = ? "
                   "AND user = ? AND joined_seq = ?",
    "user_group_put": "INSERT INTO {ks}.user_groups (app, user, group_id) VALUES (?, ?, ?) "
                      "USING TIMESTAMP ?",
    "user_group_drop": "DELETE FROM {ks}.user_groups USING TIMESTAMP ? WHERE app = ? "
                       "AND user = ? AND group_id = ?",
    "user_groups_get": "SELECT group_id FROM {ks}.user_groups WHERE app = ? AND user = ?",
    "event_get": "SELECT seq, id, group_id, app, actor, ts, code, detail, body "
                 "FROM {ks}.group_events WHERE seq = ?",
    "event_put": "INSERT INTO {ks}.group_events (seq, id, group_id, app, actor, ts, code, "
                 "detail, body) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
    "group_message_put": "INSERT INTO {ks}.group_messages (app, group_id, id, seq, sender, "
                         "recipients) VALUES (?, ?, ?, ?, ?, ?)",
    "group_message_get": "SELECT seq, sender, recipients FROM {ks}.group_messages "
                         "WHERE app = ? AND group_id = ? AND id = ?",
    "delivered_put": "UPDATE {ks}.group_markers USING TIMESTAMP ? SET delivered_seq = ? "
                     "WHERE app = ? AND group_id = ? AND user = ?",
    "read_put": "UPDATE {ks}.group_markers USING TIMESTAMP ? SET read_seq = ? "
                "WHERE app = ? AND group_id = ? AND user = ?",
    "markers_get": "SELECT user, delivered_seq, read_seq FROM {ks}.group_markers "
                   "WHERE app = ? AND group_id = ?",
    # contacts
    "pair_get": "SELECT version, low_state, high_state, low_since, high_since, low_blocks, "
                "high_blocks, low_block_since, high_block_since, synced "
                "FROM {ks}.contact_pairs WHERE app = ? AND low = ? AND high = ?",
    "pair_insert": "INSERT INTO {ks}.contact_pairs (app, low, high, version, low_state, "
                   "high_state, low_since, high_since, low_blocks, high_blocks, "
                   "low_block_since, high_block_since) "
                   "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) IF NOT EXISTS",
    "pair_update": "UPDATE {ks}.contact_pairs SET version = ?, low_state = ?, high_state = ?, "
                   "low_since = ?, high_since = ?, low_blocks = ?, high_blocks = ?, "
                   "low_block_since = ?, high_block_since = ? "
                   "WHERE app = ? AND low = ? AND high = ? IF version = ?",
    "pair_synced": "UPDATE {ks}.contact_pairs USING TIMESTAMP ? SET synced = ? "
                   "WHERE app = ? AND low = ? AND high = ?",
    "contact_put": "INSERT INTO {ks}.contacts_by_user (app, user, other, state, since, "
                   "blocked, block_since) VALUES (?, ?, ?, ?, ?, ?, ?) USING TIMESTAMP ?",
    "contact_drop": "DELETE FROM {ks}.contacts_by_user USING TIMESTAMP ? WHERE app = ? "
                    "AND user = ? AND other = ?",
    "contacts_get": "SELECT other, state, since, blocked, block_since "
                    "FROM {ks}.contacts_by_user WHERE app = ? AND user = ?",
}
#: Compare-and-set statements: the driver must not retry them blindly.
_LWT: Final = frozenset({"group_create", "group_update", "pair_insert", "pair_update"})


class _Side(NamedTuple):
    """One user's half of a contact pair."""

    state: ContactState = "none"
    since: int = 0
    blocks: bool = False
    block_since: int = 0


class _Pair(NamedTuple):
    """A ``contact_pairs`` row: ``low`` < ``high``; version 0: no row yet."""

    low: str
    high: str
    version: int = 0
    low_side: _Side = _Side()
    high_side: _Side = _Side()
    synced: int = 0

    @classmethod
    def of(cls, a: str, b: str, row: Any | None) -> "_Pair":
        low, high = sorted((a, b))
        if row is None:
            return cls(low, high)
        (version, low_state, high_state, low_since, high_since, low_blocks, high_blocks,
         low_block_since, high_block_since, synced) = row
        return cls(low, high, version,
                   _Side(low_state or "none", low_since or 0, bool(low_blocks),
                         low_block_since or 0),
                   _Side(high_state or "none", high_since or 0, bool(high_blocks),
                         high_block_since or 0),
                   synced or 0)

    def side(self, user: str) -> _Side:
        return self.low_side if user == self.low else self.high_side

    def relation(self, a: str) -> Relation:
        b = self.high if a == self.low else self.low
        mine, theirs = self.side(a), self.side(b)
        return Relation(a=a, b=b, state=mine.state, a_blocks_b=mine.blocks,
                        b_blocks_a=theirs.blocks)


def _moved(side: _Side, state: ContactState, block: bool | None, now: int) -> _Side:
    """``side`` with a new state (its ``since`` kept when the state stays) and block."""
    since = side.since if state == side.state else now
    if block is None or block == side.blocks:
        return _Side(state, since, side.blocks, side.block_since)
    return _Side(state, since, block, now if block else 0)


class _Interval(NamedTuple):
    """A ``group_members`` row: ``left_seq`` None while it lasts."""

    user: str
    joined_seq: int
    left_seq: int | None
    role: Role


def _unset(value: Any) -> Any:
    """A missing value left unset: binding None would write a tombstone."""
    return UNSET_VALUE if value is None else value


@unavailable_on(*_OUTAGE)
class CassandraSocialStore:
    """Groups and contacts in the keyspace of ``messages`` (open that first: its migrations
    create the tables). Driver errors of an outage raise ``StoreUnavailable``."""

    def __init__(self, messages: CassandraStore) -> None:
        self._messages = messages
        self._queries: dict[str, PreparedStatement] = {}
        self._slots = asyncio.Semaphore(_IN_FLIGHT)

    async def open(self) -> None:
        session, keyspace = self._messages.session, self._messages.keyspace
        names = list(_QUERIES)
        prepared = await asyncio.gather(*(
            asyncio.to_thread(session.prepare, _QUERIES[name].format(ks=keyspace))
            for name in names))
        for name, statement in zip(names, prepared, strict=True):
            statement.is_idempotent = name not in _LWT
            self._queries[name] = statement

    async def close(self) -> None:
        self._queries.clear()  # the session is the message store's

    async def _execute(self, statement: Any) -> list[Any]:
        async with self._slots:
            return await _as_future(self._messages.session.execute_async(statement),
                                    asyncio.get_running_loop())

    async def _run(self, name: str, *params: Any) -> list[Any]:
        return await self._execute(self._queries[name].bind(params))

    async def _batch(self, statements: Sequence[tuple[str, tuple[Any, ...]]]) -> None:
        """Statements of ONE partition as one unlogged batch (one mutation, atomic)."""
        if not statements:
            return
        batch = BatchStatement(batch_type=BatchType.UNLOGGED)
        for name, params in statements:
            batch.add(self._queries[name].bind(params))
        batch.is_idempotent = True
        await self._execute(batch)

    # ------------------------------------------------------------------ groups

    async def _intervals(self, app: str, group: str) -> list[_Interval]:
        """Every membership interval of the group."""
        return [_Interval(*row) for row in await self._run("members_get", app, group)]

    async def group(self, app: str, group: str) -> GroupState | None:
        row, intervals = await asyncio.gather(self._run("group_get", app, group),
                                              self._intervals(app, group))
        if not row:
            return None
        name, owner, created_at, version = row[0]
        current = sorted((joined, user, role) for user, joined, left, role in intervals
                         if left is None)
        members = {user for _joined, user, _role in current}
        former = sorted({user for user, _joined, left, _role in intervals
                         if left is not None and user not in members})
        return GroupState(id=group, app=app, name=name, owner=owner, created_at=created_at,
                          version=version, former=former,
                          members=[MemberState(user=user, role=role, joined_seq=joined)
                                   for joined, user, role in current])

    async def members_at(self, app: str, group: str, seq: int) -> list[str]:
        return _members_at(await self._intervals(app, group), seq)

    async def user_groups(self, app: str, user: str) -> list[GroupSummary]:
        ids = [row[0] for row in await self._run("user_groups_get", app, user)]
        states = await asyncio.gather(*(self.group(app, group) for group in ids))
        summaries = []
        for state in states:
            role = None if state is None else state.role_of(user)
            if state is None or role is None:  # an index row its writer has not dropped yet
                continue
            summaries.append(GroupSummary(
                id=state.id, conversation=group_conversation(state.id), name=state.name,
                role=role, version=state.version, members=len(state.members)))
        summaries.sort(key=lambda summary: (-summary.version, summary.id))
        return summaries

    async def group_event(self, seq: int) -> GroupEventRecord | None:
        rows = await self._run("event_get", seq)
        if not rows:
            return None
        seq, key, group, app, actor, ts, code, detail, body = rows[0]
        return GroupEventRecord(seq=seq, id=key, group=group, app=app, actor=actor, ts=ts,
                                code=code or "", detail=detail or "", body=body)

    async def apply_group_event(self, record: GroupEventRecord,
                                change: GroupChange | None) -> None:
        if await self.group_event(record.seq) is not None:
            return
        if change is not None:
            await self._apply(change)
        # The record goes last: a redelivery finds no record and completes the change.
        await self._run("event_put", record.seq, record.id, record.group, record.app,
                        record.actor, record.ts, record.code, record.detail,
                        _unset(record.body))

    async def _apply(self, change: GroupChange) -> None:
        app, group, seq = change.app, change.group, change.seq
        # The fence first: the version moves to seq only from below (or equal: a replay of a
        # write that failed half-way, which is completed).
        if change.created:
            result = await self._run("group_create", app, group, _unset(change.name),
                                     _unset(change.owner), change.ts, seq)
        else:
            result = await self._run("group_update", seq, _unset(change.name),
                                     _unset(change.owner), app, group, seq)
        applied, *existing = result[0]
        # ``group_create`` that lost returns the whole row, ``group_update`` the version.
        version = None if applied or not existing else existing[-1]
        if version is not None and version > seq:
            raise GroupWriteOutOfOrder(app, group, seq, int(version))
        intervals = await self._intervals(app, group)
        writes: list[tuple[str, tuple[Any, ...]]] = []
        open_joined = {user: joined for user, joined, left, _role in intervals if left is None}
        for user in change.removed:
            joined = open_joined.get(user)
            if joined is not None and joined < seq:
                writes.append(("member_leave", (seq, app, group, user, joined)))
                del open_joined[user]
        known = {(user, joined) for user, joined, _left, _role in intervals}
        for user, role in change.added.items():
            if (user, seq) not in known and user not in open_joined:
                writes.append(("member_put", (app, group, user, seq, role)))
                open_joined[user] = seq
        for user, role in change.roles.items():
            if user in open_joined:
                writes.append(("member_role", (role, app, group, user, open_joined[user])))
        await self._batch(writes)  # one partition: the group's intervals
        await asyncio.gather(
            *(self._run("user_group_drop", seq, app, user, group) for user in change.removed),
            *(self._run("user_group_put", app, user, group, seq) for user in change.added))

    async def record_group_messages(self, messages: Sequence[GroupMessageMeta]) -> None:
        by_group: dict[tuple[str, str], list[tuple[str, tuple[Any, ...]]]] = {}
        for meta in messages:
            by_group.setdefault((meta.app, meta.group), []).append((
                "group_message_put", (meta.app, meta.group, meta.id, meta.seq,
                                      _unset(meta.sender), meta.recipients)))
        await asyncio.gather(*(self._batch(writes) for writes in by_group.values()))

    async def advance_markers(self, app: str, group: str, user: str, delivered: int,
                              read: int) -> None:
        # Each marker's write timestamp is its value: the highest wins, in any order.
        await asyncio.gather(
            *([self._run("delivered_put", delivered, delivered, app, group, user)]
              if delivered > 0 else []),
            *([self._run("read_put", read, read, app, group, user)] if read > 0 else []))

    async def receipts(self, app: str, group: str, message_id: str) -> GroupReceipts | None:
        meta, intervals, markers = await asyncio.gather(
            self._run("group_message_get", app, group, message_id),
            self._intervals(app, group), self._run("markers_get", app, group))
        if not meta:
            return None
        seq, sender, recipients = int(meta[0][0]), meta[0][1], int(meta[0][2])
        members = set(_members_at(intervals, seq)) - {sender}
        delivered = read = 0
        for user, delivered_seq, read_seq in markers:
            if user in members:
                delivered += max(delivered_seq or 0, read_seq or 0) >= seq
                read += (read_seq or 0) >= seq
        return GroupReceipts(
            conversation=group_conversation(group), message_id=message_id, seq=seq,
            recipients=recipients, delivered=delivered, read=read,
            delivered_to_all=delivered >= recipients, read_by_all=read >= recipients)

    # ------------------------------------------------------------------ contacts

    async def _pair(self, app: str, a: str, b: str) -> _Pair:
        low, high = sorted((a, b))
        rows = await self._run("pair_get", app, low, high)
        pair = _Pair.of(a, b, rows[0] if rows else None)
        if pair.synced < pair.version:  # its writer stopped before the per-user rows
            await self._sync(app, pair)
        return pair

    async def _sync(self, app: str, pair: _Pair) -> None:
        """Write the per-user rows of ``pair`` (at its version), then record that."""
        writes = []
        for user, other in ((pair.low, pair.high), (pair.high, pair.low)):
            side = pair.side(user)
            if side.state == "none" and not side.blocks:
                writes.append(self._run("contact_drop", pair.version, app, user, other))
            else:
                writes.append(self._run("contact_put", app, user, other, side.state,
                                        side.since, side.blocks, side.block_since,
                                        pair.version))
        await asyncio.gather(*writes)
        await self._run("pair_synced", pair.version, pair.version, app, pair.low, pair.high)

    async def relation(self, app: str, a: str, b: str) -> Relation:
        return (await self._pair(app, a, b)).relation(a)

    async def contacts(self, app: str, user: str) -> list[ContactEntry]:
        entries = []
        for other, state, since, blocked, block_since in await self._run("contacts_get", app,
                                                                          user):
            if state == "none":  # blocked only: since the block
                entries.append(ContactEntry(user=other, state="none", blocked=True,
                                            since=block_since))
            else:
                entries.append(ContactEntry(user=other, state=state, blocked=bool(blocked),
                                            since=since))
        return entries  # clustered by ``other``: in user id order

    async def change_relation(self, app: str, before: Relation, mine: ContactState,
                              theirs: ContactState, block: bool | None, now: int) -> bool:
        a, b = before.a, before.b
        pair = await self._pair(app, a, b)
        if pair.relation(a) != before:
            return False
        sides = {a: _moved(pair.side(a), mine, block, now),
                 b: _moved(pair.side(b), theirs, None, now)}
        moved = pair._replace(version=pair.version + 1, low_side=sides[pair.low],
                              high_side=sides[pair.high])
        fields = (moved.low_side.state, moved.high_side.state, moved.low_side.since,
                  moved.high_side.since, moved.low_side.blocks, moved.high_side.blocks,
                  moved.low_side.block_since, moved.high_side.block_since)
        if pair.version == 0:
            result = await self._run("pair_insert", app, pair.low, pair.high, moved.version,
                                     *fields)
        else:
            result = await self._run("pair_update", moved.version, *fields, app, pair.low,
                                     pair.high, pair.version)
        if not result[0][0]:  # another writer moved the pair since we read it
            return False
        await self._sync(app, moved)
        return True


def _members_at(intervals: Sequence[_Interval], seq: int) -> list[str]:
    return sorted({user for user, joined, left, _role in intervals
                   if joined <= seq and (left is None or left > seq)})
