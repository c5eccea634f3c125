"""``MessageStore`` on Apache Cassandra through cassandra-driver, for clustered deployments.

Behaves like ``SqliteStore`` (the contract suite runs both). The tables and the reasoning
behind them are in ``cassandra_schema`` and docs/cassandra.md; in short: seq-bucketed
partitions, inbox rows that reference messages, per-device floors (one per pipeline
partition) instead of deleting delivered rows, TTLs for retention, and deterministic keys so
that every write can be replayed.

Nothing blocks the event loop: reads go out with ``execute_async`` and ``_as_future`` hands
their results back to the loop; writes are bound, batched and sent from a worker thread with
the driver's ``execute_concurrent``, which chains them on the driver's I/O thread.
"""

import asyncio
import heapq
import math
import ssl
import time
import uuid
import zlib
from collections import defaultdict
from collections.abc import (
    AsyncGenerator,
    AsyncIterator,
    Callable,
    Iterable,
    Iterator,
    Sequence,
)
from contextlib import aclosing, asynccontextmanager
from typing import Any, Final, NamedTuple, TypeVar

from cassandra import (
    ConsistencyLevel,
    CoordinationFailure,
    OperationTimedOut,
    ProtocolVersion,
    Timeout,
    Unavailable,
)
from cassandra.auth import PlainTextAuthProvider
from cassandra.cluster import (
    EXEC_PROFILE_DEFAULT,
    Cluster,
    ExecutionProfile,
    NoHostAvailable,
    Session,
)
from cassandra.concurrent import execute_concurrent, execute_concurrent_with_args
from cassandra.connection import ConnectionBusy, ConnectionException
from cassandra.policies import (
    ConstantReconnectionPolicy,
    DCAwareRoundRobinPolicy,
    TokenAwarePolicy,
)
from cassandra.protocol import IsBootstrappingErrorMessage, OverloadedErrorMessage
from cassandra.query import (
    UNSET_VALUE,
    BatchStatement,
    BatchType,
    PreparedStatement,
    SimpleStatement,
    tuple_factory,
)

from runtime.config import StoreConfig, parse_contact_point, parse_replication
from runtime.tls import client_context
from schemas.envelopes import DeviceAcks, MessageEnvelope, message_frame
from schemas.errors import ErrorCode, ProtocolError
from schemas.frames import AckItem, Destination, Sender
from schemas.ids import direct_members
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
    unavailable_on,
)
from storage_worker.store.cassandra_schema import (
    APP_USER_SHARDS,
    ARCHIVE_SHARDS,
    BOOTSTRAP,
    BUCKET_SEQS,
    MIGRATIONS,
    Migration,
)

DAY_MS: Final = 86_400_000
#: Cassandra 5.0 in its default storage compatibility mode rejects expiry after 2038-01-19.
_EXPIRY_LIMIT_S: Final = 2**31 - 1 - 86_400
_MAX_SEQ: Final = 2**63 - 1
#: Requests in flight per store: enough to keep a node busy, few enough to not time out.
_IN_FLIGHT: Final = 128
#: Writes few enough to bind and send from the event loop itself.
_INLINE_WRITES: Final = 8
#: Bucket index rows written by this process are not rewritten for this long.
_INDEXED_FOR_S: Final = 3600.0
_INDEXED_MAX: Final = 200_000
#: Rows per single-partition batch (and a soft byte budget): one mutation each.
_BATCH_ROWS: Final = 100
_BATCH_BYTES: Final = 512 * 1024
#: Seqs per ``IN`` list when fetching messages of one partition.
_IN_LIMIT: Final = 100
_BUCKET_PAGE: Final = 64
_DDL_TIMEOUT_S: Final = 120.0
_LOCK_TTL_S: Final = 120

_Row = tuple[Any, ...]
_T = TypeVar("_T")

_MESSAGE_COLUMNS: Final = (
    "seq, id, conversation, app, module, kind, sender_user, sender_device, sender_service, "
    "to_kind, to_id, client_id, ts, expires_at, receipt, delivered_at, body, payload_devices, "
    "recipients"
)
_INBOX_COLUMNS: Final = (
    "seq, conversation, sender_user, sender_device, expires_at, shared, payload_devices"
)

#: Every statement the store runs, prepared once in ``open()`` with ``{ks}`` the keyspace
#: (qualified names: Cassandra warns about prepared statements that rely on a session keyspace).
_QUERIES: Final[dict[str, str]] = {
    # registry
    "user_get": "SELECT user FROM {ks}.users_v2 WHERE app = ? AND user = ?",
    "user_insert": "INSERT INTO {ks}.users_v2 (app, user, created_at) VALUES (?, ?, ?) "
                   "IF NOT EXISTS",
    "device_get": "SELECT user, app, created_at, disabled, start_cursor FROM {ks}.devices_v2 "
                  "WHERE app = ? AND device = ?",
    "device_insert": "INSERT INTO {ks}.devices_v2 "
                     "(app, device, user, created_at, disabled, start_cursor) "
                     "VALUES (?, ?, ?, ?, false, ?) IF NOT EXISTS",
    "device_by_user_put": "INSERT INTO {ks}.devices_by_user_v2 "
                          "(app, user, device, created_at, disabled) VALUES (?, ?, ?, ?, ?)",
    "app_user_put": "INSERT INTO {ks}.app_users (app, shard, user) VALUES (?, ?, ?)",
    "app_users_get": "SELECT user FROM {ks}.app_users WHERE app = ? AND shard = ? AND user > ? "
                     "LIMIT ?",
    "devices_of_user": "SELECT device, app, created_at, disabled "
                       "FROM {ks}.devices_by_user_v2 WHERE app = ? AND user = ?",
    "floors_get": "SELECT partition, floor FROM {ks}.device_floors WHERE app = ? AND device = ?",
    "floor_put": "UPDATE {ks}.device_floors USING TIMESTAMP ? SET floor = ? "
                 "WHERE app = ? AND device = ? AND partition = ?",
    "acks_get": "SELECT seq FROM {ks}.device_acks_v2 WHERE app = ? AND device = ?",
    "ack_put": "INSERT INTO {ks}.device_acks_v2 (app, device, seq) VALUES (?, ?, ?) USING TTL ?",
    "acks_drop": "DELETE FROM {ks}.device_acks_v2 WHERE app = ? AND device = ? AND seq <= ?",
    "ack_drop": "DELETE FROM {ks}.device_acks_v2 WHERE app = ? AND device = ? AND seq = ?",
    # messages
    "ids_get": "SELECT id, seq FROM {ks}.messages_by_id WHERE id IN ?",
    "id_put": "INSERT INTO {ks}.messages_by_id (id, seq) VALUES (?, ?) USING TTL ?",
    "message_put": "INSERT INTO {ks}.messages_v2 (app, conversation, bucket, seq, id, module, "
                   "kind, sender_user, sender_device, sender_service, to_kind, to_id, body, "
                   "payload_devices, client_id, ts, expires_at, receipt, recipients) "
                   "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) USING TTL ?",
    "payload_put": "INSERT INTO {ks}.payloads (seq, device, body) VALUES (?, ?, ?) USING TTL ?",
    "payload_get": "SELECT body FROM {ks}.payloads WHERE seq = ? AND device = ?",
    "conversation_bucket_put": "INSERT INTO {ks}.conversation_buckets_v2 "
                               "(app, conversation, bucket) VALUES (?, ?, ?) USING TTL ?",
    "conversation_buckets_up": "SELECT bucket FROM {ks}.conversation_buckets_v2 "
                               "WHERE app = ? AND conversation = ? AND bucket >= ? LIMIT ?",
    "conversation_buckets_down": "SELECT bucket FROM {ks}.conversation_buckets_v2 "
                                 "WHERE app = ? AND conversation = ? AND bucket <= ? "
                                 "ORDER BY bucket DESC LIMIT ?",
    "messages_up": f"SELECT {_MESSAGE_COLUMNS} FROM {{ks}}.messages_v2 WHERE app = ? "
                   "AND conversation = ? AND bucket = ? AND seq > ? LIMIT ?",
    "messages_down": f"SELECT {_MESSAGE_COLUMNS} FROM {{ks}}.messages_v2 WHERE app = ? "
                     "AND conversation = ? AND bucket = ? AND seq < ? ORDER BY seq DESC LIMIT ?",
    "messages_get": f"SELECT {_MESSAGE_COLUMNS} FROM {{ks}}.messages_v2 WHERE app = ? "
                    "AND conversation = ? AND bucket = ? AND seq IN ?",
    "unread_up": "SELECT seq, id, recipients, sender_user FROM {ks}.messages_v2 "
                 "WHERE app = ? AND conversation = ? AND bucket = ? AND seq > ? LIMIT ?",
    "delivered_put": "UPDATE {ks}.messages_v2 USING TTL ? SET delivered_at = ? "
                     "WHERE app = ? AND conversation = ? AND bucket = ? AND seq = ?",
    # inbox
    "inbox_put": "INSERT INTO {ks}.inbox_v2 (app, user, bucket, seq, conversation, sender_user, "
                 "sender_device, expires_at, shared, payload_devices) "
                 "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) USING TTL ?",
    "inbox_up": f"SELECT {_INBOX_COLUMNS} FROM {{ks}}.inbox_v2 WHERE app = ? AND user = ? "
                "AND bucket = ? AND seq > ? LIMIT ?",
    "inbox_get": "SELECT seq, conversation, sender_user, TTL(conversation) FROM {ks}.inbox_v2 "
                 "WHERE app = ? AND user = ? AND bucket = ? AND seq IN ?",
    "inbox_bucket_put": "INSERT INTO {ks}.inbox_buckets_v2 (app, user, bucket) VALUES (?, ?, ?) "
                        "USING TTL ?",
    "inbox_buckets_up": "SELECT bucket FROM {ks}.inbox_buckets_v2 WHERE app = ? AND user = ? "
                        "AND bucket >= ? LIMIT ?",
    "user_conversation_put": "INSERT INTO {ks}.user_conversations_v2 "
                             "(app, user, conversation, last_seq) "
                             "VALUES (?, ?, ?, ?) USING TTL ? AND TIMESTAMP ?",
    "user_conversations_get": "SELECT conversation, last_seq FROM {ks}.user_conversations_v2 "
                              "WHERE app = ? AND user = ?",
    "read_marker_put": "INSERT INTO {ks}.read_markers_v2 (app, conversation, user, seq) "
                       "VALUES (?, ?, ?, ?) USING TIMESTAMP ?",
    "read_marker_get": "SELECT seq FROM {ks}.read_markers_v2 WHERE app = ? AND conversation = ? "
                       "AND user = ?",
    "read_markers_get": "SELECT user, seq FROM {ks}.read_markers_v2 WHERE app = ? "
                        "AND conversation = ?",
    # retention
    "purge_put": "INSERT INTO {ks}.purge_index (app, bucket, ts, seq, conversation, id, "
                 "recipients, sender_device, shared, payload_devices) "
                 "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) USING TTL ?",
    "purge_bucket_put": "INSERT INTO {ks}.purge_buckets (shard, app, bucket) VALUES (0, ?, ?) "
                        "USING TTL ?",
    "purge_buckets_get": "SELECT app, bucket FROM {ks}.purge_buckets WHERE shard = 0",
    "purge_bucket_drop": "DELETE FROM {ks}.purge_buckets "
                         "WHERE shard = 0 AND app = ? AND bucket = ?",
    "purge_first": "SELECT ts FROM {ks}.purge_index WHERE app = ? AND bucket = ? LIMIT 1",
    "purge_older": "SELECT ts, seq, conversation, id, recipients FROM {ks}.purge_index "
                   "WHERE app = ? AND bucket = ? AND ts < ?",
    "purge_all": "SELECT ts, seq, conversation, id, recipients, sender_device, shared, "
                 "payload_devices FROM {ks}.purge_index WHERE app = ? AND bucket = ?",
    "purge_older_drop": "DELETE FROM {ks}.purge_index WHERE app = ? AND bucket = ? AND ts < ?",
    "purge_prefix_drop": "DELETE FROM {ks}.purge_index WHERE app = ? AND bucket = ? "
                         "AND (ts, seq) <= (?, ?)",
    "purge_row_drop": "DELETE FROM {ks}.purge_index WHERE app = ? AND bucket = ? AND ts = ? "
                      "AND seq = ?",
    "message_drop": "DELETE FROM {ks}.messages_v2 WHERE app = ? AND conversation = ? "
                    "AND bucket = ? AND seq = ?",
    "payloads_drop": "DELETE FROM {ks}.payloads WHERE seq = ?",
    "inbox_drop": "DELETE FROM {ks}.inbox_v2 WHERE app = ? AND user = ? AND bucket = ? "
                  "AND seq = ?",
    "id_drop": "DELETE FROM {ks}.messages_by_id WHERE id = ?",
}
#: The archive's statements (``ArchiveStore``), prepared with the others.
_ARCHIVE_QUERIES: Final[dict[str, str]] = {
    "archive_mark_get": "SELECT archived, purged FROM {ks}.archive_marks "
                        "WHERE app = ? AND conversation = ?",
    "archive_archived_put": "UPDATE {ks}.archive_marks USING TIMESTAMP ? SET archived = ? "
                            "WHERE app = ? AND conversation = ?",
    "archive_purged_put": "UPDATE {ks}.archive_marks USING TIMESTAMP ? SET purged = ? "
                          "WHERE app = ? AND conversation = ?",
    "archive_conversation_put": "INSERT INTO {ks}.archive_conversations "
                                "(shard, app, conversation) VALUES (?, ?, ?)",
    "archive_conversations_get": "SELECT app, conversation FROM {ks}.archive_conversations "
                                 "WHERE shard = ?",
    "payloads_of": "SELECT device, body FROM {ks}.payloads WHERE seq = ?",
    "archive_bucket_drop": "DELETE FROM {ks}.messages_v2 WHERE app = ? AND conversation = ? "
                           "AND bucket = ?",
    "archive_range_drop": "DELETE FROM {ks}.messages_v2 WHERE app = ? AND conversation = ? "
                          "AND bucket = ? AND seq <= ?",
    "conversation_bucket_drop": "DELETE FROM {ks}.conversation_buckets_v2 WHERE app = ? "
                                "AND conversation = ? AND bucket = ?",
}
_QUERIES.update(_ARCHIVE_QUERIES)

#: Compare-and-set statements: the driver must not retry them blindly.
_LWT: Final = frozenset({"user_insert", "device_insert"})


class _Message(NamedTuple):
    """A row of ``_MESSAGE_COLUMNS``."""

    seq: int
    id: str | None  # None: a row left by a late status update after the message was purged
    conversation: str
    app: str
    module: str
    kind: Any
    sender_user: str | None
    sender_device: str | None
    sender_service: str | None
    to_kind: Any
    to_id: str
    client_id: str | None
    ts: int
    expires_at: int | None
    receipt: bool | None
    delivered_at: int | None
    body: bytes | None
    payload_devices: Any
    recipients: Any


class _Entry(NamedTuple):
    """A row of ``_INBOX_COLUMNS``."""

    seq: int
    conversation: str
    sender_user: str | None
    sender_device: str | None
    expires_at: int | None
    shared: bool | None
    payload_devices: Any


def _bucket(seq: int) -> int:
    return seq // BUCKET_SEQS


def _opt(value: Any) -> Any:
    """Leave a missing value unset: binding None would write a tombstone."""
    return UNSET_VALUE if value is None or value == [] else value


def _for_device(entry: _Entry, device: str, now: int) -> bool:
    """The device should receive this inbox entry (not expired, not its own send, and a body
    for it), as ``SqliteStore``'s ``_FOR_DEVICE``."""
    return ((entry.expires_at is None or entry.expires_at > now)
            and entry.sender_device != device
            and bool(entry.shared or device in (entry.payload_devices or ())))


def _visible(message: _Message, user: str) -> bool:
    return message.id is not None and user in (message.recipients or ())


def _envelope(row: _Message) -> MessageEnvelope:
    """The envelope of a stored message, without bodies (they depend on the device)."""
    return MessageEnvelope(
        id=row.id or "", conversation=row.conversation, app=row.app, module=row.module,
        kind=row.kind, sender=Sender(user=row.sender_user, device=row.sender_device,
                                     service=row.sender_service),
        to=Destination(kind=row.to_kind, id=row.to_id), client_id=row.client_id, ts=row.ts,
        expires_at=row.expires_at, receipt=bool(row.receipt),
    )


def _status(row: _Message, user: str, others_read: int, now: int) -> str:
    """Status of a message as the conversation sees it (as ``SqliteStore``)."""
    if (row.sender_user == user and direct_members(row.conversation) is not None
            and others_read >= row.seq):
        return "read"
    if row.delivered_at is not None:
        return "delivered"
    if row.expires_at is not None and row.expires_at <= now:
        return "expired"
    return "sent"


def _as_future(response: Any, loop: asyncio.AbstractEventLoop) -> "asyncio.Future[list[_Row]]":
    """Bridge a driver ``ResponseFuture`` (callbacks on the driver's I/O thread) to an asyncio
    future, fetching every page."""
    future: asyncio.Future[list[_Row]] = loop.create_future()
    rows: list[_Row] = []

    def settle(result: list[_Row] | BaseException) -> None:
        if future.done():  # the awaiting task was cancelled
            return
        if isinstance(result, BaseException):
            future.set_exception(result)
        else:
            future.set_result(result)

    def on_page(page: list[_Row] | None) -> None:
        if page:
            rows.extend(page)
        if response.has_more_pages:
            response.start_fetching_next_page()
        else:
            loop.call_soon_threadsafe(settle, rows)

    def on_error(exc: BaseException) -> None:
        loop.call_soon_threadsafe(settle, exc)

    response.add_callbacks(on_page, on_error)
    return future


_Later = tuple[PreparedStatement, tuple[Any, ...]]


class _Writes:
    """Writes grouped by partition, bound and batched off the event loop.

    A batch never spans partitions: the rows of one partition go out as single-partition
    unlogged batches (one mutation: atomic for that partition, and one request to its
    replicas), at most ``_BATCH_ROWS`` rows and about ``_BATCH_BYTES`` each. A batch of
    several partitions would make its coordinator fan the rows out to other replicas and
    hold them all until the slowest answers: the cost moves to the cluster, where it does
    not scale out.
    """

    def __init__(self) -> None:
        self.groups: dict[tuple[Any, ...], list[_Later]] = defaultdict(list)

    def add(self, partition: tuple[Any, ...], statement: _Later) -> None:
        self.groups[partition].append(statement)

    def count(self) -> int:
        return sum(len(group) for group in self.groups.values())

    def batches(self) -> list[Any]:
        return [_batch(chunk) for group in self.groups.values() for chunk in _chunked(group)]


def _chunked(group: list[_Later]) -> Iterator[list[Any]]:
    """Bound statements of one partition in chunks of at most ``_BATCH_ROWS`` rows and
    about ``_BATCH_BYTES``."""
    chunk: list[Any] = []
    budget = 0
    for prepared, params in group:
        size = _size(params)
        if chunk and (len(chunk) == _BATCH_ROWS or budget + size > _BATCH_BYTES):
            yield chunk
            chunk, budget = [], 0
        chunk.append(prepared.bind(params))
        budget += size
    yield chunk


def _size(params: tuple[Any, ...]) -> int:
    """Size of a row in a mutation as Cassandra counts batch sizes, from above: the values
    plus timestamp, TTL and expiry of each cell."""
    size = 16
    for value in params:
        size += 24
        if isinstance(value, str | bytes):
            size += len(value)
        elif isinstance(value, list):
            size += sum(len(item) for item in value)
        else:
            size += 8
    return size


def _batch(statements: list[Any]) -> Any:
    if len(statements) == 1:
        return statements[0]
    batch = BatchStatement(batch_type=BatchType.UNLOGGED)
    for statement in statements:
        batch.add(statement)
    batch.is_idempotent = True
    return batch


#: Driver errors of an unreachable, overloaded or slow cluster: ``StoreUnavailable``.
_OUTAGE: Final = (NoHostAvailable, OperationTimedOut, Unavailable, Timeout, CoordinationFailure,
                  ConnectionException, ConnectionBusy, OverloadedErrorMessage,
                  IsBootstrappingErrorMessage)


@unavailable_on(*_OUTAGE)
class CassandraStore:
    """``MessageStore`` on a Cassandra cluster. Driver errors of an outage (no host, timeouts,
    too few replicas, lost connections, overload) are raised as ``StoreUnavailable``.

    ``retention`` sets the TTL of new rows (keep N days per app). The worker's ``purge``
    passes its policy too, and the store adopts it, so rows get TTLs even when the store was
    created without one; ``purge`` still removes whatever TTLs did not (older rows, a policy
    that shortened).
    """

    def __init__(self, config: StoreConfig, retention: RetentionPolicy | None = None, *,
                 default_app: str = "default", partitions: int = 1) -> None:
        self._config = config
        self._partitions = checked_partitions(partitions)
        self._retention = retention
        self._default_app = default_app
        self._cluster: Cluster | None = None
        self._session: Session | None = None
        self._queries: dict[str, PreparedStatement] = {}
        self._slots = asyncio.Semaphore(_IN_FLIGHT)
        self._indexed: dict[tuple[Any, ...], None] = {}
        self._indexed_since = time.monotonic()

    # ------------------------------------------------------------------ lifecycle

    async def open(self) -> None:
        config = self._config
        points = [parse_contact_point(point) for point in config.cassandra_contact_points]
        level = config.cassandra_consistency
        profile = ExecutionProfile(
            load_balancing_policy=TokenAwarePolicy(DCAwareRoundRobinPolicy(
                local_dc=config.cassandra_local_dc)),
            consistency_level=ConsistencyLevel.name_to_value[level],
            serial_consistency_level=(ConsistencyLevel.LOCAL_SERIAL if level.startswith("LOCAL")
                                      else ConsistencyLevel.SERIAL),
            request_timeout=config.cassandra_request_timeout_s,
            row_factory=tuple_factory,
        )
        auth = (PlainTextAuthProvider(config.cassandra_username, config.cassandra_password)
                if config.cassandra_username else None)
        self._cluster = Cluster(
            contact_points=points,
            port=points[0][1],
            execution_profiles={EXEC_PROFILE_DEFAULT: profile},
            protocol_version=ProtocolVersion.V5,  # Cassandra 4.0+; per-statement keyspaces
            auth_provider=auth,
            ssl_context=_tls_context(config),
            # A node that comes back is used again within a second (the default backs off
            # exponentially to minutes).
            reconnection_policy=ConstantReconnectionPolicy(1.0, max_attempts=None),
            connect_timeout=config.cassandra_request_timeout_s,
            control_connection_timeout=config.cassandra_request_timeout_s,
        )
        try:
            self._session = await asyncio.to_thread(self._cluster.connect)
            await self._migrate()
            await self._prepare()
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        cluster, self._cluster, self._session = self._cluster, None, None
        if cluster is not None:
            await asyncio.to_thread(cluster.shutdown)

    @property
    def keyspace(self) -> str:
        return self._config.cassandra_keyspace

    @property
    def session(self) -> Session:
        if self._session is None:
            raise RuntimeError("store is not open")
        return self._session

    async def _migrate(self) -> None:
        """Create the keyspace (if configured to), apply pending migrations under a lease, and
        wait until every node has the new schema."""
        keyspace = self._config.cassandra_keyspace
        if self._config.cassandra_create_keyspace:
            options = parse_replication(self._config.cassandra_replication)
            replication = ", ".join(f"'{key}': '{value}'" for key, value in options.items())
            await self._cql(f"CREATE KEYSPACE IF NOT EXISTS {keyspace} "
                            f"WITH replication = {{{replication}}}", in_keyspace=False)
        for statement in BOOTSTRAP:
            await self._cql(statement)
        if await self._pending_migrations():
            async with self._migration_lease():
                for migration in await self._pending_migrations():
                    for statement in migration.statements:
                        await self._cql(statement)
                    if migration.copy is not None:
                        await asyncio.to_thread(self._copies[migration.copy])
                    await self._cql(
                        "INSERT INTO schema_migrations (version, name, applied_at) "
                        "VALUES (%s, %s, toTimestamp(now()))", (migration.version, migration.name))
        assert self._cluster is not None
        agreed = await asyncio.to_thread(
            self._cluster.control_connection.wait_for_schema_agreement)
        if not agreed:
            raise RuntimeError("Cassandra nodes do not agree on the schema; retry later")

    def _copy_to_tenancy_tables(self) -> None:
        """Migration 2's data step (a worker thread, blocking driver calls): copy the rows of
        the version-1 tables into their app-keyed ``_v2`` tables, keeping TTLs and the write
        timestamps that order cursors, conversation lists and read markers. A row's app is
        the one stored on it, else its message's (inbox), conversation's (lists, markers) or
        device's (cursors, acks), else the user's, else the default app. Re-running it
        rewrites the same rows, so a worker that dies mid-copy starts again safely."""
        scan, put, default = self._scan, self._put, self._default_app
        users = list(scan("SELECT user, app, created_at FROM {ks}.users"))
        user_app = {user: app or default for user, app, _created_at in users}
        put("INSERT INTO {ks}.users_v2 (app, user, created_at) VALUES (?, ?, ?)",
            ((user_app[user], user, created_at) for user, _app, created_at in users))
        device_app: dict[str, str] = {}
        devices = list(scan("SELECT device, user, app, created_at, disabled, start_floor "
                            "FROM {ks}.devices"))
        for device, user, app, *_ in devices:
            device_app[device] = app or user_app.get(user, default)
        put("INSERT INTO {ks}.devices_v2 (app, device, user, created_at, disabled, "
            "start_floor) VALUES (?, ?, ?, ?, ?, ?)",
            ((device_app[device], device, user, *rest) for device, user, _app, *rest in devices))
        put("INSERT INTO {ks}.devices_by_user_v2 (app, user, device, created_at, disabled, "
            "start_floor) VALUES (?, ?, ?, ?, ?, ?)",
            ((device_app.get(device, user_app.get(user, default)), user, device, *rest)
             for user, device, _app, *rest in scan(
                 "SELECT user, device, app, created_at, disabled, start_floor "
                 "FROM {ks}.devices_by_user")))
        put("UPDATE {ks}.device_cursors_v2 USING TIMESTAMP ? SET floor = ? "
            "WHERE app = ? AND device = ?",
            ((written, floor, device_app.get(device, default), device)
             for device, floor, written in scan(
                 "SELECT device, floor, WRITETIME(floor) FROM {ks}.device_cursors")))
        index_ttl = self._index_ttl(int(time.time() * 1000))
        put("INSERT INTO {ks}.device_acks_v2 (app, device, seq) VALUES (?, ?, ?) USING TTL ?",
            ((device_app.get(device, default), device, seq, index_ttl)
             for device, seq in scan("SELECT device, seq FROM {ks}.device_acks")))
        seq_app: dict[int, str] = {}
        conversation_apps: dict[str, set[str]] = defaultdict(set)
        buckets: set[tuple[str, str, int]] = set()

        def messages() -> Iterator[tuple[Any, ...]]:
            for row in scan(f"SELECT {_MESSAGE_COLUMNS}, bucket, TTL(id) FROM {{ks}}.messages"):
                message, bucket, ttl = _Message(*row[:-2]), row[-2], row[-1]
                if message.id is None:  # a late status update of a purged message
                    continue
                app = message.app or default
                seq_app[message.seq] = app
                conversation_apps[message.conversation].add(app)
                buckets.add((app, message.conversation, bucket))
                yield (app, message.conversation, bucket, message.seq, message.id,
                       message.module, message.kind, message.sender_user, message.sender_device,
                       message.sender_service, message.to_kind, message.to_id, message.body,
                       message.payload_devices, message.client_id, message.ts,
                       message.expires_at, message.receipt, message.recipients,
                       message.delivered_at, ttl or 0)

        put("INSERT INTO {ks}.messages_v2 (app, conversation, bucket, seq, id, module, kind, "
            "sender_user, sender_device, sender_service, to_kind, to_id, body, "
            "payload_devices, client_id, ts, expires_at, receipt, recipients, delivered_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) USING TTL ?",
            messages())
        put("INSERT INTO {ks}.conversation_buckets_v2 (app, conversation, bucket) "
            "VALUES (?, ?, ?) USING TTL ?", ((*key, index_ttl) for key in buckets))
        inbox_buckets: set[tuple[str, str, int]] = set()

        def inbox() -> Iterator[tuple[Any, ...]]:
            for user, bucket, seq, *rest, ttl in scan(
                    f"SELECT user, bucket, {_INBOX_COLUMNS}, TTL(conversation) "
                    "FROM {ks}.inbox"):
                app = seq_app.get(seq) or user_app.get(user, default)
                inbox_buckets.add((app, user, bucket))
                yield (app, user, bucket, seq, *rest, ttl or 0)

        put("INSERT INTO {ks}.inbox_v2 (app, user, bucket, seq, conversation, sender_user, "
            "sender_device, expires_at, shared, payload_devices) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) USING TTL ?", inbox())
        put("INSERT INTO {ks}.inbox_buckets_v2 (app, user, bucket) VALUES (?, ?, ?) "
            "USING TTL ?", ((*key, index_ttl) for key in inbox_buckets))

        def apps_of(conversation: str, user: str) -> set[str]:
            return conversation_apps.get(conversation) or {user_app.get(user, default)}

        put("INSERT INTO {ks}.user_conversations_v2 (app, user, conversation, last_seq) "
            "VALUES (?, ?, ?, ?) USING TTL ? AND TIMESTAMP ?",
            ((app, user, conversation, last_seq, ttl or 0, written)
             for user, conversation, last_seq, ttl, written in scan(
                 "SELECT user, conversation, last_seq, TTL(last_seq), WRITETIME(last_seq) "
                 "FROM {ks}.user_conversations")
             for app in apps_of(conversation, user)))
        put("INSERT INTO {ks}.read_markers_v2 (app, conversation, user, seq) "
            "VALUES (?, ?, ?, ?) USING TIMESTAMP ?",
            ((app, conversation, user, seq, written)
             for conversation, user, seq, written in scan(
                 "SELECT conversation, user, seq, WRITETIME(seq) FROM {ks}.read_markers")
             for app in apps_of(conversation, user)))

    def _copy_to_partition_floors(self) -> None:
        """Migration 4's data step (a worker thread): a device's single floor (its cursor
        row, or the floor it started at) becomes its floor of partition 0, where every seq
        written before partitions lies. Written ``USING TIMESTAMP <floor>`` like every
        floor, so the higher of the two wins and a re-run changes nothing."""
        query = ("UPDATE {ks}.device_floors USING TIMESTAMP ? SET floor = ? "
                 "WHERE app = ? AND device = ? AND partition = 0")
        self._put(query, ((floor, floor, app, device) for app, device, floor in self._scan(
            "SELECT app, device, floor FROM {ks}.device_cursors_v2") if floor))
        self._put(query, ((floor, floor, app, device) for app, device, floor in self._scan(
            "SELECT app, device, start_floor FROM {ks}.devices_v2") if floor))

    @property
    def _copies(self) -> dict[str, Callable[[], None]]:
        """The data steps of migrations (``Migration.copy``), by name."""
        return {"tenancy": self._copy_to_tenancy_tables,
                "partitions": self._copy_to_partition_floors}

    def _scan(self, query: str) -> Iterator[_Row]:
        """Every row of a one-off query (``{ks}``: the keyspace), a page at a time (blocking:
        migrations' data steps, on a worker thread)."""
        statement = SimpleStatement(query.format(ks=self.keyspace), fetch_size=1000)
        yield from self.session.execute(statement, timeout=_DDL_TIMEOUT_S)

    def _put(self, query: str, rows: Iterable[tuple[Any, ...]]) -> None:
        """Run a statement for each row, concurrently (blocking, like ``_scan``)."""
        prepared = self.session.prepare(query.format(ks=self.keyspace))
        unset = (tuple(UNSET_VALUE if value is None else value for value in row)
                 for row in rows)  # None would write a tombstone
        execute_concurrent_with_args(self.session, prepared, unset, concurrency=_IN_FLIGHT,
                                     raise_on_first_error=True)

    async def _pending_migrations(self) -> list[Migration]:
        rows = await self._cql("SELECT version FROM schema_migrations")
        applied = {row[0] for row in rows}
        return [migration for migration in MIGRATIONS if migration.version not in applied]

    @asynccontextmanager
    async def _migration_lease(self) -> AsyncIterator[None]:
        """One worker migrates at a time (concurrent DDL on one table can diverge before
        Cassandra 5.1): a row claimed by LWT, with a TTL in case its holder dies."""
        owner = uuid.uuid4()
        claim = (f"INSERT INTO schema_migrations (version, owner) VALUES (0, %s) "
                 f"IF NOT EXISTS USING TTL {_LOCK_TTL_S}")
        deadline = time.monotonic() + _LOCK_TTL_S * 2
        while not (await self._cql(claim, (owner,)))[0][0]:
            if time.monotonic() > deadline:
                raise RuntimeError("another worker holds the schema migration lease")
            await asyncio.sleep(1.0)
        try:
            yield
        finally:
            await self._cql("DELETE FROM schema_migrations WHERE version = 0 IF owner = %s",
                            (owner,))

    async def _prepare(self) -> None:
        names = list(_QUERIES)
        prepared = await asyncio.gather(
            *(asyncio.to_thread(self.session.prepare,
                                _QUERIES[name].format(ks=self._config.cassandra_keyspace))
              for name in names))
        for name, statement in zip(names, prepared, strict=True):
            statement.is_idempotent = name not in _LWT
            self._queries[name] = statement

    # ------------------------------------------------------------------ execution

    async def _execute(self, statement: Any, params: Any = None,
                       request_timeout_s: float | None = None) -> list[_Row]:
        loop = asyncio.get_running_loop()
        async with self._slots:
            kwargs = {} if request_timeout_s is None else {"timeout": request_timeout_s}
            return await _as_future(self.session.execute_async(statement, params, **kwargs),
                                    loop)

    async def _cql(self, query: str, params: Any = None, *, in_keyspace: bool = True) -> list[_Row]:
        """Run a schema or one-off statement (not prepared), by default in the keyspace."""
        keyspace = self._config.cassandra_keyspace if in_keyspace else None
        statement = SimpleStatement(query, keyspace=keyspace)
        return await self._execute(statement, params, request_timeout_s=_DDL_TIMEOUT_S)

    async def _run(self, name: str, *params: Any) -> list[_Row]:
        return await self._execute(self._queries[name], params)

    def _bind(self, name: str, *params: Any) -> Any:
        return self._queries[name].bind(params)

    def _later(self, name: str, *params: Any) -> _Later:
        """A statement for ``_Writes``, which binds it off the event loop."""
        return self._queries[name], params

    async def _write(self, writes: _Writes) -> None:
        """Bind, batch and send writes from a worker thread, with bounded concurrency: the
        driver chains the requests on its I/O thread (``execute_concurrent``), so the event
        loop does none of the per-request work. A handful of writes (a receipt) go out from
        the loop directly: handing them to a thread would cost more than it saves."""
        if writes.count() <= _INLINE_WRITES:
            await asyncio.gather(*(self._execute(batch) for batch in writes.batches()))
        else:
            await asyncio.to_thread(self._send, writes)

    def _send(self, writes: _Writes) -> None:
        execute_concurrent(self.session, [(batch, None) for batch in writes.batches()],
                           concurrency=_IN_FLIGHT, raise_on_first_error=True)

    # ------------------------------------------------------------------ retention helpers

    def _ttl(self, app: str, ts: int, wall_ms: int) -> int:
        """Seconds a message's rows live: until ``ts`` + the app's retention (0: no TTL)."""
        if self._retention is None:
            return 0
        expires_ms = ts + self._retention.days_for(app) * DAY_MS
        return max(1, min(math.ceil((expires_ms - wall_ms) / 1000),
                          _EXPIRY_LIMIT_S - wall_ms // 1000))

    def _index_ttl(self, wall_ms: int) -> int:
        """TTL of index rows (buckets, conversation lists, acks): the longest retention plus a
        day, so that an index never expires before the rows it leads to."""
        if self._retention is None:
            return 0
        days = max([self._retention.default_days, *self._retention.days.values()]) + 1
        return min(days * 86_400, _EXPIRY_LIMIT_S - wall_ms // 1000)

    # ------------------------------------------------------------------ registry

    async def register_device(self, app: str, user: str, device: str, now: int,
                              start_after: Sequence[int] = ()) -> DeviceInfo:
        start = as_cursor(start_after, self._partitions)
        known_user, rows = await asyncio.gather(self._run("user_get", app, user),
                                                self._run("device_get", app, device))
        if rows and rows[0][0] != user:
            raise _conflict(device)
        if not known_user:
            await self._run("user_insert", app, user, now)
        if not rows:
            newest = await self._newest_by_partition(app, user)
            start = [max(bound, seq) for bound, seq in zip(start, newest, strict=True)]
            applied = (await self._run("device_insert", app, device, user, now, start))[0][0]
            # Lost a race with another registration of the device: read the winner.
            rows = ([(user, app, now, False, start)] if applied
                    else await self._serial_device(app, device))
            if rows[0][0] != user:
                raise _conflict(device)
        _owner, _app, created_at, disabled, _start = rows[0]
        # The user's device list last: a device in it is registered in full, and
        # ``storage_worker.registration`` answers a reconnect of it without writing.
        await self._run("app_user_put", app, _app_shard(user), user)
        await self._run("device_by_user_put", app, user, device, created_at, bool(disabled))
        return DeviceInfo(user=user, device=device, app=app, created_at=created_at,
                          disabled=bool(disabled))

    async def _serial_device(self, app: str, device: str) -> list[_Row]:
        statement = self._bind("device_get", app, device)
        statement.consistency_level = (ConsistencyLevel.LOCAL_SERIAL
                                       if self._config.cassandra_consistency.startswith("LOCAL")
                                       else ConsistencyLevel.SERIAL)
        return await self._execute(statement)

    async def user_devices(self, app: str, user: str) -> tuple[bool, list[DeviceInfo]]:
        exists, rows = await asyncio.gather(self._run("user_get", app, user),
                                            self._run("devices_of_user", app, user))
        devices = [DeviceInfo(user=user, device=device, app=app, created_at=created_at,
                              disabled=bool(disabled))
                   for device, _app, created_at, disabled in rows]
        return bool(exists), devices

    async def app_users(self, app: str, after: str, limit: int) -> list[str]:
        """Users of ``app`` after ``after`` in id order (``AppUserListing``): a merge of
        the app's shards, each read a chunk at a time."""
        chunk = max(16, limit // APP_USER_SHARDS + 1)
        pages = list(await asyncio.gather(*(self._run("app_users_get", app, shard, after, chunk)
                                            for shard in range(APP_USER_SHARDS))))
        heads = [(rows[0][0], shard, 0) for shard, rows in enumerate(pages) if rows]
        heapq.heapify(heads)
        users: list[str] = []
        while heads and len(users) < limit:
            user, shard, index = heapq.heappop(heads)
            users.append(user)
            if index + 1 < len(pages[shard]):
                heapq.heappush(heads, (pages[shard][index + 1][0], shard, index + 1))
            elif len(pages[shard]) == chunk:
                pages[shard] = await self._run("app_users_get", app, shard, user, chunk)
                if pages[shard]:
                    heapq.heappush(heads, (pages[shard][0][0], shard, 0))
        return users

    async def device_owner(self, app: str, device: str) -> str | None:
        rows = await self._run("device_get", app, device)
        return str(rows[0][0]) if rows else None

    async def _device_state(self, app: str, device: str) -> tuple[list[int], set[int]] | None:
        """The device's floor of each partition (the higher of where it started and what
        ``record_acks`` moved it to) and its acknowledgements above them; None for no such
        device."""
        device_rows, floor_rows, ack_rows = await asyncio.gather(
            self._run("device_get", app, device), self._run("floors_get", app, device),
            self._run("acks_get", app, device))
        if not device_rows:
            return None
        count = self._partitions
        floors = empty_cursor(count)
        for partition, floor in [*enumerate(device_rows[0][4] or ()), *floor_rows]:
            if partition < count:
                floors[partition] = max(floors[partition], floor or 0)
        return floors, {seq for (seq,) in ack_rows if seq > floors[seq % count]}

    async def _newest_by_partition(self, app: str, user: str) -> list[int]:
        """The user's newest inbox entry of each partition, from its conversation list (one
        partition read; a conversation's entries are of one partition, and its ``last_seq``
        bounds them from above)."""
        newest = empty_cursor(self._partitions)
        for _conversation, last_seq in await self._run("user_conversations_get", app, user):
            partition = last_seq % self._partitions
            newest[partition] = max(newest[partition], last_seq)
        return newest

    # ------------------------------------------------------------------ writes

    async def append(self, messages: Sequence[StoredMessage]) -> None:
        unique: dict[str, StoredMessage] = {}
        for stored in messages:
            unique.setdefault(stored.envelope.id, stored)
        pages = await asyncio.gather(*(self._run("ids_get", chunk)
                                       for chunk in _chunks(list(unique), _IN_LIMIT)))
        known = {key: seq for page in pages for key, seq in page}
        # Same id at the same seq: a replay, write it all again (completes a partial write).
        fresh = [stored for key, stored in unique.items()
                 if known.get(key, stored.seq) == stored.seq]
        if not fresh:
            return
        wall_ms = int(time.time() * 1000)
        index_ttl = self._index_ttl(wall_ms)
        first, second = _Writes(), _Writes()  # second: inbox rows, after what they point to
        index: set[tuple[Any, ...]] = set()
        last_seqs: dict[tuple[str, str, str], int] = {}
        for stored in fresh:
            env, seq, bucket = stored.envelope, stored.seq, _bucket(stored.seq)
            ttl = self._ttl(env.app, env.ts, wall_ms)
            shared = env.body is not None
            devices = sorted(env.payloads or ()) if not shared else []
            recipients = sorted(stored.recipients)
            first.add(("messages", env.app, env.conversation, bucket), self._later(
                "message_put", env.app, env.conversation, bucket, seq, env.id, env.module,
                env.kind, _opt(env.sender.user), _opt(env.sender.device),
                _opt(env.sender.service), env.to.kind, env.to.id, _opt(env.body),
                _opt(devices), _opt(env.client_id), env.ts, _opt(env.expires_at), env.receipt,
                _opt(recipients), ttl))
            if not shared:
                for device, body in (env.payloads or {}).items():
                    first.add(("payloads", seq),
                              self._later("payload_put", seq, device, body, ttl))
            first.add(("messages_by_id", env.id), self._later("id_put", env.id, seq, ttl))
            first.add(("purge_index", env.app, bucket), self._later(
                "purge_put", env.app, bucket, env.ts, seq, env.conversation, env.id,
                _opt(recipients), _opt(env.sender.device), shared, _opt(devices), ttl))
            index.add(("conversation_bucket_put", env.app, env.conversation, bucket))
            index.add(("purge_bucket_put", env.app, bucket))
            for user in recipients:  # users of the message's app
                index.add(("inbox_bucket_put", env.app, user, bucket))
                second.add(("inbox", env.app, user, bucket), self._later(
                    "inbox_put", env.app, user, bucket, seq, env.conversation,
                    _opt(env.sender.user), _opt(env.sender.device), _opt(env.expires_at),
                    shared, _opt(devices), ttl))
                key = (env.app, user, env.conversation)
                last_seqs[key] = max(seq, last_seqs.get(key, 0))
        index -= self._indexed.keys()
        for name, *partition in index:  # bucket indexes before the rows they lead to
            first.add((name, *partition), self._later(name, *partition, index_ttl))
        for (app, user, conversation), seq in last_seqs.items():
            # USING TIMESTAMP seq: the highest seq wins, whatever order batches land in.
            second.add(("user_conversations", app, user), self._later(
                "user_conversation_put", app, user, conversation, seq, index_ttl, seq))
        await self._write(first)
        self._remember_indexed(index)
        await self._write(second)

    def _remember_indexed(self, written: set[tuple[Any, ...]]) -> None:
        """Bucket index rows just written need no rewrite for a while (their TTL is a day
        longer than any row they lead to); forget them all now and then to refresh TTLs and
        bound memory."""
        now = time.monotonic()
        if len(self._indexed) > _INDEXED_MAX or now > self._indexed_since + _INDEXED_FOR_S:
            self._indexed.clear()
            self._indexed_since = now
        self._indexed.update(dict.fromkeys(written))

    async def record_acks_of(self, entries: Sequence[DeviceAcks], now: int) -> None:
        """One device after the other, as separate calls would: Cassandra has no transaction
        to share, and each device's writes already go out together."""
        for entry in entries:
            await self.record_acks(entry.app, entry.user, entry.device, entry.items, now)

    async def record_acks(self, app: str, user: str, device: str, items: Sequence[AckItem],
                          now: int) -> None:
        # Only entries of this user's inbox in the named conversation count: an ack cannot
        # touch another conversation's message or move the cursor past what exists.
        claimed = {(item.seq, item.conversation) for item in items}
        state, rows = await asyncio.gather(
            self._device_state(app, device),
            self._inbox_entries(app, user, sorted({seq for seq, _ in claimed})))
        entries = [row for row in rows if (row[0], row[1]) in claimed]
        writes = _Writes()
        for seq, conversation, sender, ttl in entries:
            if sender != user:
                writes.add(("messages", app, conversation, _bucket(seq)), self._later(
                    "delivered_put", ttl or 0, now, app, conversation, _bucket(seq), seq))
        if state is not None:
            count = self._partitions
            floors, stored_acks = state
            fresh = {seq for seq, *_ in entries
                     if seq > floors[seq % count] and seq not in stored_acks}
            advanced = await self._contiguous_floors(app, user, device, floors,
                                                     stored_acks | fresh, now)
            for partition, (floor, old) in enumerate(zip(advanced, floors, strict=True)):
                if floor > old:
                    # USING TIMESTAMP floor: a floor only moves forward, whatever the order.
                    writes.add(("device_floors", app, device),
                               self._later("floor_put", floor, floor, app, device, partition))
            ack_ttl = self._index_ttl(int(time.time() * 1000))
            for seq in sorted(fresh):
                if seq > advanced[seq % count]:
                    writes.add(("device_acks", app, device),
                               self._later("ack_put", app, device, seq, ack_ttl))
            # Acks the floors now cover: one range tombstone up to the lowest floor (all of
            # them with one partition), a row tombstone for each one above it.
            lowest = min(advanced)
            covered = sorted(seq for seq in stored_acks if seq <= advanced[seq % count])
            if covered and covered[0] <= lowest:
                writes.add(("device_acks", app, device, "drop"),
                           self._later("acks_drop", app, device, lowest))
            for seq in covered:
                if seq > lowest:
                    writes.add(("device_acks", app, device, "drop"),
                               self._later("ack_drop", app, device, seq))
        await self._write(writes)

    async def _inbox_entries(self, app: str, user: str, seqs: Sequence[int]) -> list[_Row]:
        """(seq, conversation, sender_user, ttl) of the user's inbox entries among ``seqs``."""
        by_bucket: dict[int, list[int]] = defaultdict(list)
        for seq in seqs:
            by_bucket[_bucket(seq)].append(seq)
        pages = await asyncio.gather(*(
            self._run("inbox_get", app, user, bucket, chunk)
            for bucket, bucket_seqs in by_bucket.items()
            for chunk in _chunks(bucket_seqs, _IN_LIMIT)))
        return [row for page in pages for row in page]

    async def _contiguous_floors(self, app: str, user: str, device: str, floors: list[int],
                                 acked: set[int], now: int) -> list[int]:
        """Each partition's floor moved to the end of the run of its inbox entries after it
        that the device acknowledged or does not get, for the partitions with acks above
        their floor; the walk ends at the highest of those acks (beyond it a floor could only
        pass entries not for the device, which the next acks will). Only stored entries
        count: an ack for a seq the worker has not written yet stays in ``device_acks`` until
        the floor reaches it."""
        count = self._partitions
        advanced = list(floors)
        pending = sorted(seq for seq in acked if seq > floors[seq % count])
        open_partitions = {seq % count for seq in pending}
        if not pending:
            return advanced
        start = min(floors[partition] for partition in open_partitions)
        page = min(1000, len(acked) + 16)
        async with aclosing(self._inbox_after(app, user, start, page)) as pages:
            async for entries in pages:
                for entry in entries:
                    if entry.seq > pending[-1]:
                        return advanced
                    partition = entry.seq % count
                    if partition not in open_partitions or entry.seq <= advanced[partition]:
                        continue
                    if entry.seq not in acked and _for_device(entry, device, now):
                        open_partitions.discard(partition)  # its run ends here
                        if not open_partitions:
                            return advanced
                    else:
                        advanced[partition] = entry.seq
        return advanced

    async def mark_read(self, app: str, user: str, conversation: str, seq: int) -> None:
        # USING TIMESTAMP seq: a lower marker written later loses.
        await self._run("read_marker_put", app, conversation, user, seq, seq)

    # ------------------------------------------------------------------ reads

    async def _buckets(self, name: str, key: tuple[str, str], start: int,
                       descending: bool = False) -> AsyncGenerator[int, None]:
        """Bucket ids of a partition family (``key``: app and user or conversation) from
        ``start`` on, in order."""
        while True:
            rows = await self._run(name, *key, start, _BUCKET_PAGE)
            for (bucket,) in rows:
                yield bucket
            if len(rows) < _BUCKET_PAGE:
                return
            start = rows[-1][0] + (-1 if descending else 1)

    async def _inbox_after(self, app: str, user: str, after: int,
                           page: int) -> AsyncGenerator[list[_Entry], None]:
        """The user's inbox entries with seq > ``after``, oldest first, a page at a time."""
        async with aclosing(self._buckets("inbox_buckets_up", (app, user),
                                          _bucket(after + 1))) as ids:
            async for bucket in ids:
                bound = after
                while True:
                    rows = await self._run("inbox_up", app, user, bucket, bound, page)
                    if rows:
                        yield [_Entry(*row) for row in rows]
                    if len(rows) < page:
                        break
                    bound = rows[-1][0]

    async def _conversation_pages(self, app: str, conversation: str, before: int | None,
                                  after: int | None,
                                  page: int) -> AsyncGenerator[list[_Message], None]:
        """Messages of a conversation above ``after`` (oldest first) or else below ``before``
        (newest first), a page at a time."""
        descending = after is None
        if after is not None:
            bound, start, name, buckets = after, _bucket(after + 1), "messages_up", "up"
        else:
            bound = _MAX_SEQ if before is None else before
            start, name, buckets = _bucket(bound - 1), "messages_down", "down"
        async with aclosing(self._buckets(f"conversation_buckets_{buckets}",
                                          (app, conversation), start, descending)) as ids:
            async for bucket in ids:
                edge = bound
                while True:
                    rows = await self._run(name, app, conversation, bucket, edge, page)
                    if rows:
                        yield [_Message(*row) for row in rows]
                    if len(rows) < page:
                        break
                    edge = rows[-1][0]

    async def _messages(self, app: str,
                        keys: Iterable[tuple[str, int]]) -> dict[int, _Message]:
        """Stored messages by seq, for (conversation, seq) keys."""
        by_partition: dict[tuple[str, int], list[int]] = defaultdict(list)
        for conversation, seq in keys:
            by_partition[(conversation, _bucket(seq))].append(seq)
        pages = await asyncio.gather(*(
            self._run("messages_get", app, conversation, bucket, chunk)
            for (conversation, bucket), seqs in by_partition.items()
            for chunk in _chunks(seqs, _IN_LIMIT)))
        found = (_Message(*row) for page in pages for row in page)
        return {message.seq: message for message in found if message.id is not None}

    async def _bodies(self, messages: Sequence[_Message], device: str) -> list[bytes | None]:
        """Each message's body for ``device``: the shared one, else its own payload."""
        async def body(message: _Message) -> bytes | None:
            if message.body is not None:
                return message.body
            rows = await self._run("payload_get", message.seq, device)
            return rows[0][0] if rows else None

        return list(await asyncio.gather(*(body(message) for message in messages)))

    async def backlog(
        self, app: str, user: str, device: str, after: Sequence[int], limit: int, now: int
    ) -> tuple[list[DeliverableMessage], list[int]]:
        if limit < 1:
            raise ValueError("a backlog page holds at least one message")
        count = self._partitions
        cursor = as_cursor(after, count)
        state = await self._device_state(app, device)
        if state is None:  # as SqliteStore: an unknown device has no backlog
            return [], cursor
        floors, acked = state
        lows = [max(bound, floor) for bound, floor in zip(cursor, floors, strict=True)]
        cursor = list(lows)
        found: list[DeliverableMessage] = []
        # From the lowest bound: the entries of partitions further on are skipped here.
        async with aclosing(self._inbox_after(app, user, min(lows), limit)) as pages:
            async for entries in pages:
                fresh = [entry for entry in entries if entry.seq > lows[entry.seq % count]]
                wanted = [entry for entry in fresh
                          if entry.seq not in acked and _for_device(entry, device, now)]
                stored = await self._messages(app, ((entry.conversation, entry.seq)
                                                    for entry in wanted))
                rows = [stored[entry.seq] for entry in wanted if entry.seq in stored]
                bodies = dict(zip((row.seq for row in rows), await self._bodies(rows, device),
                                  strict=True))
                for entry in fresh:  # examined, in seq order: the cursor passes it
                    partition = entry.seq % count
                    cursor[partition] = max(cursor[partition], entry.seq)
                    body = bodies.get(entry.seq)
                    if body is None:  # acknowledged, not for the device, or purged
                        continue
                    found.append(DeliverableMessage(seq=entry.seq,
                                                    envelope=_envelope(stored[entry.seq]),
                                                    body=body))
                    if len(found) == limit:
                        return found, cursor
        return found, cursor

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
        rows = await self._view(app, user, device, conversation, before, after, limit)
        rows.sort(key=lambda row: row.seq)
        bodies, others_read = await asyncio.gather(self._bodies(rows, device),
                                                   self._others_read(app, user, conversation))
        return [
            HistoryItem(message=message_frame(_envelope(row), row.seq, body),
                        status=_status(row, user, others_read, now))
            for row, body in zip(rows, bodies, strict=True) if body is not None
        ]

    async def message(self, app: str, user: str, device: str, message_id: str,
                      now: int) -> HistoryItem | None:
        ids = await self._run("ids_get", [message_id])
        if not ids:
            return None
        seq = int(ids[0][1])
        # The user's inbox in its app: membership, and another app's message is not in it.
        entries = await self._inbox_entries(app, user, [seq])
        if not entries:
            return None
        conversation = str(entries[0][1])
        row = (await self._messages(app, [(conversation, seq)])).get(seq)
        if row is None or row.id != message_id or not _visible(row, user):
            return None
        [body], others_read = await asyncio.gather(self._bodies([row], device),
                                                   self._others_read(app, user, conversation))
        if body is None:
            return None
        return HistoryItem(message=message_frame(_envelope(row), row.seq, body),
                           status=_status(row, user, others_read, now))

    async def _view(self, app: str, user: str, device: str | None, conversation: str,
                    before: int | None, after: int | None, limit: int) -> list[_Message]:
        """Up to ``limit`` messages of the user's view of a conversation, in walk order; with
        ``device``, only those that carry a body for it."""
        rows: list[_Message] = []
        async with aclosing(self._conversation_pages(app, conversation, before, after,
                                                     max(limit, 16))) as pages:
            async for page in pages:
                for row in page:
                    if not _visible(row, user):
                        continue
                    if (device is not None and row.body is None
                            and device not in (row.payload_devices or ())):
                        continue
                    rows.append(row)
                    if len(rows) == limit:
                        return rows
        return rows

    async def _others_read(self, app: str, user: str, conversation: str) -> int:
        """The highest read marker of the conversation's other members."""
        rows = await self._run("read_markers_get", app, conversation)
        return max((seq for member, seq in rows if member != user), default=0)

    async def conversations(
        self, app: str, user: str, device: str, limit: int
    ) -> list[ConversationSummary]:
        # Ordered by the last message's (ts, seq). With one partition, seqs order the
        # conversations too (up to gateway clock skew), and the stored last_seq is an upper
        # bound (purge may have removed the newest messages): summarize candidates newest
        # first until the limit-th real last_seq beats the bound of every candidate left.
        # With more, positions of two conversations do not compare: summarize every one.
        candidates = sorted(await self._run("user_conversations_get", app, user),
                            key=lambda row: -int(row[1]))
        summaries: list[tuple[int, ConversationSummary]] = []
        chunk = max(1, min(limit, 32))
        for start in range(0, len(candidates), chunk):
            if len(summaries) >= limit and self._partitions == 1:
                ranked = sorted((s.last_seq for _ts, s in summaries), reverse=True)
                if ranked[limit - 1] >= candidates[start][1]:
                    break
            found = await asyncio.gather(*(
                self._summary(app, user, device, conversation)
                for conversation, _ in candidates[start:start + chunk]))
            summaries.extend(summary for summary in found if summary is not None)
        summaries.sort(key=lambda item: (-item[0], -item[1].last_seq))
        return [summary for _ts, summary in summaries[:limit]]

    async def _summary(self, app: str, user: str, device: str,
                       conversation: str) -> tuple[int, ConversationSummary] | None:
        """The conversation's summary and its last message's ts, None if it has none."""
        newest = await self._view(app, user, None, conversation, None, None, 1)
        if not newest:
            return None
        marker = await self._run("read_marker_get", app, conversation, user)
        read_seq = int(marker[0][0]) if marker else 0
        unread, last = await asyncio.gather(
            self._count_unread(app, user, conversation, read_seq),
            self.history(app, user, device, conversation, None, None, 1, 0))
        return newest[0].ts, ConversationSummary(
            conversation=conversation, last_seq=newest[0].seq, unread=unread,
            read_seq=read_seq, last_message=last[0].message if last else None)

    async def _count_unread(self, app: str, user: str, conversation: str, read_seq: int) -> int:
        """Messages after the read marker from anyone but the user: counted over the
        conversation's bounded partitions (a counter could not be replayed idempotently)."""
        count = 0
        async with aclosing(self._buckets("conversation_buckets_up", (app, conversation),
                                          _bucket(read_seq + 1))) as ids:
            async for bucket in ids:
                bound = read_seq
                while True:
                    rows = await self._run("unread_up", app, conversation, bucket, bound,
                                           5000)
                    count += sum(1 for _seq, key, recipients, sender in rows
                                 if key is not None and user in (recipients or ())
                                 and sender != user)
                    if len(rows) < 5000:
                        break
                    bound = rows[-1][0]
        return count

    # ------------------------------------------------------------------ retention

    async def purge(self, policy: RetentionPolicy, now: int) -> int:
        if policy != self._retention:
            self._retention = policy
            self._indexed.clear()  # rewrite index rows with the new policy's TTL
        buckets: dict[str, list[int]] = defaultdict(list)
        for app, bucket in await self._run("purge_buckets_get"):
            buckets[app].append(bucket)
        removed = 0
        for app, app_buckets in buckets.items():
            removed += await self._purge_older(app, app_buckets,
                                               now - policy.days_for(app) * DAY_MS)
            if app in policy.ephemeral_apps:
                removed += await self._purge_delivered(app, app_buckets)
        return removed

    async def _purge_older(self, app: str, buckets: list[int], cutoff: int) -> int:
        """Remove the app's messages older than ``cutoff``, oldest bucket first; rows of a
        bucket are ordered by ts, so one range read and one range tombstone per bucket."""
        removed = 0
        for position, bucket in enumerate(buckets):
            first = await self._run("purge_first", app, bucket)
            if not first:
                if position < len(buckets) - 1:  # the newest bucket may still grow
                    await self._run("purge_bucket_drop", app, bucket)
                continue
            if first[0][0] >= cutoff:
                break  # later buckets hold later messages
            rows = await self._run("purge_older", app, bucket, cutoff)
            await self._delete_messages(app, [(seq, conversation, key, recipients)
                                              for _ts, seq, conversation, key, recipients
                                              in rows])
            await self._run("purge_older_drop", app, bucket, cutoff)
            removed += len(rows)
        return removed

    async def _purge_delivered(self, app: str, buckets: list[int]) -> int:
        """Remove the app's messages that every device of every recipient has (acknowledged,
        or its cursor is past them, or it does not get them). Acknowledgements mostly come
        in order, so the removed rows of a bucket mostly form a prefix: one range tombstone
        for it, row tombstones only for rows removed after a message still pending."""
        states: dict[str, list[tuple[str, list[int], set[int]]]] = {}
        removed = 0
        for position, bucket in enumerate(buckets):
            doomed: list[tuple[int, int, str, str, Any]] = []
            prefix: tuple[int, int] | None = None  # the last removed row before any kept one
            kept = False
            rows = await self._run("purge_all", app, bucket)  # in (ts, seq) order
            for ts, seq, conversation, key, recipients, sender_device, shared, devices in rows:
                for user in recipients or ():
                    if user not in states:
                        states[user] = await self._user_device_states(app, user)
                partition = seq % self._partitions
                if any(floors[partition] < seq and seq not in acked and name != sender_device
                       and (shared or name in (devices or ()))
                       for user in recipients or () for name, floors, acked in states[user]):
                    kept = True
                    continue
                doomed.append((ts, seq, conversation, key, recipients))
                if not kept:
                    prefix = (ts, seq)
            await self._delete_messages(app, [row[1:] for row in doomed])
            writes = _Writes()
            if prefix is not None:
                writes.add(("purge_index", app, bucket),
                           self._later("purge_prefix_drop", app, bucket, *prefix))
            for ts, seq, *_ in doomed:
                if prefix is None or (ts, seq) > prefix:
                    writes.add(("purge_index", app, bucket),
                               self._later("purge_row_drop", app, bucket, ts, seq))
            if len(doomed) == len(rows) and position < len(buckets) - 1:
                writes.add(("purge_buckets", app, bucket),
                           self._later("purge_bucket_drop", app, bucket))
            await self._write(writes)
            removed += len(doomed)
        return removed

    async def _user_device_states(self, app: str,
                                  user: str) -> list[tuple[str, list[int], set[int]]]:
        devices = await self._run("devices_of_user", app, user)
        states = await asyncio.gather(*(self._device_state(app, row[0]) for row in devices))
        return [(row[0], *state) for row, state in zip(devices, states, strict=True)
                if state is not None]

    async def _delete_messages(self, app: str,
                               rows: Sequence[tuple[int, str, str, Any]]) -> None:
        """Delete messages of ``app`` given as (seq, conversation, id, recipients), with their
        payloads, inbox entries and id."""
        writes = _Writes()
        for seq, conversation, key, recipients in rows:
            bucket = _bucket(seq)
            for user in recipients or ():
                writes.add(("inbox", app, user, bucket),
                           self._later("inbox_drop", app, user, bucket, seq))
            writes.add(("messages", app, conversation, bucket),
                       self._later("message_drop", app, conversation, bucket, seq))
            writes.add(("payloads", seq), self._later("payloads_drop", seq))
            writes.add(("messages_by_id", key), self._later("id_drop", key))
        await self._write(writes)

    # ------------------------------------------------------------------ archive

    async def message_apps(self) -> list[str]:
        return sorted({str(app) for app, _bucket_id in await self._run("purge_buckets_get")})

    async def archive_candidates(self, app: str, before_ts: int) -> list[str]:
        buckets = sorted(bucket for row_app, bucket in await self._run("purge_buckets_get")
                         if row_app == app)
        found: set[str] = set()
        for bucket in buckets:
            first = await self._run("purge_first", app, bucket)
            if first and first[0][0] >= before_ts:
                break  # later buckets hold later messages
            found.update(str(row[2]) for row in await self._run("purge_older", app, bucket,
                                                                 before_ts))
        return sorted(found)

    async def archive_rows(self, app: str, conversation: str, after: int, before_ts: int,
                           limit: int) -> list[ArchivedMessage]:
        rows: list[_Message] = []
        async with aclosing(self._conversation_pages(app, conversation, None, after,
                                                     min(limit, 500))) as pages:
            async for page in pages:
                for row in page:
                    if row.id is None:  # a late status update of a purged message
                        continue
                    if row.ts >= before_ts or len(rows) == limit:
                        return await self._archived(rows)
                    rows.append(row)
        return await self._archived(rows)

    async def _archived(self, rows: list[_Message]) -> list[ArchivedMessage]:
        async def payloads(row: _Message) -> dict[str, bytes] | None:
            if row.body is not None:
                return None
            return {str(device): bytes(body)
                    for device, body in await self._run("payloads_of", row.seq)} or None

        found = await asyncio.gather(*(payloads(row) for row in rows))
        archived = []
        for row, by_device in zip(rows, found, strict=True):
            envelope = _envelope(row)
            envelope.body, envelope.payloads = row.body, by_device
            archived.append(ArchivedMessage(seq=row.seq, envelope=envelope,
                                            recipients=sorted(row.recipients or ()),
                                            delivered_at=row.delivered_at))
        return archived

    async def archive_mark(self, app: str, conversation: str) -> ArchiveMark:
        rows = await self._run("archive_mark_get", app, conversation)
        if not rows:
            return ArchiveMark()
        return ArchiveMark(archived=int(rows[0][0] or 0), purged=int(rows[0][1] or 0))

    async def set_archive_mark(self, app: str, conversation: str, mark: ArchiveMark) -> None:
        # USING TIMESTAMP <position>: a lower mark written later loses.
        shard = zlib.crc32(f"{app}\x00{conversation}".encode()) % ARCHIVE_SHARDS
        await asyncio.gather(
            self._run("archive_conversation_put", shard, app, conversation),
            *(self._run(name, value, value, app, conversation)
              for name, value in (("archive_archived_put", mark.archived),
                                  ("archive_purged_put", mark.purged)) if value > 0))

    async def archived_conversations(self) -> list[tuple[str, str]]:
        pages = await asyncio.gather(*(self._run("archive_conversations_get", shard)
                                       for shard in range(ARCHIVE_SHARDS)))
        return sorted((str(app), str(conversation)) for page in pages
                      for app, conversation in page)

    async def purge_archived(self, app: str, conversation: str, through: int) -> int:
        """Whole ``messages_v2`` partitions (buckets) at or below ``through`` go with one
        partition tombstone each (and their bucket index row); the bucket ``through`` falls in
        gets one range tombstone. Payloads and ids are single-row partitions, deleted whole.
        Inbox rows (small references, no bodies) are left to their TTL: deleting them would
        put row tombstones into the inbox partitions that every backlog read walks, and reads
        skip inbox entries whose message is gone (docs/cassandra.md)."""
        doomed: list[_Message] = []
        async with aclosing(self._conversation_pages(app, conversation, None, 0, 500)) as pages:
            async for page in pages:
                doomed.extend(row for row in page if row.seq <= through)
                if page[-1].seq > through:
                    break
        # Payloads and ids first: a rerun after a crash finds them through the message rows.
        first, writes = _Writes(), _Writes()
        for row in doomed:
            if row.body is None:
                first.add(("payloads", row.seq), self._later("payloads_drop", row.seq))
            if row.id is not None:
                first.add(("messages_by_id", row.id), self._later("id_drop", row.id))
        await self._write(first)
        for bucket in sorted({_bucket(row.seq) for row in doomed}):
            key = ("messages", app, conversation, bucket)
            if (bucket + 1) * BUCKET_SEQS - 1 <= through:
                writes.add(key, self._later("archive_bucket_drop", app, conversation, bucket))
                writes.add(("conversation_buckets", app, conversation), self._later(
                    "conversation_bucket_drop", app, conversation, bucket))
            else:
                writes.add(key, self._later("archive_range_drop", app, conversation, bucket,
                                            through))
        await self._write(writes)
        return sum(1 for row in doomed if row.id is not None)

    async def others_read(self, app: str, user: str, conversation: str) -> int:
        return await self._others_read(app, user, conversation)


def _app_shard(user: str) -> int:
    return zlib.crc32(user.encode()) % APP_USER_SHARDS


def _conflict(device: str) -> ProtocolError:
    return ProtocolError(ErrorCode.CONFLICT, f"device {device!r} belongs to another user")


def _chunks(items: Sequence[_T], size: int) -> list[list[_T]]:
    return [list(items[start:start + size]) for start in range(0, len(items), size)]


def _tls_context(config: StoreConfig) -> ssl.SSLContext | None:
    if not config.cassandra_tls:
        return None
    return client_context(config.cassandra_tls_ca_file, config.cassandra_tls_cert_file,
                          config.cassandra_tls_key_file, config.cassandra_tls_verify)
