"""Versioned schema of the Cassandra message store, applied in order at start-up.

A migration is applied once per keyspace and recorded in ``schema_migrations``. Statements
must be idempotent (``IF NOT EXISTS``, ``ALTER ... ADD IF NOT EXISTS``): a worker that dies
mid-migration runs it again from the start. Never edit a released migration; append one.
Why the tables look like this: docs/cassandra.md.
"""

from typing import Final, NamedTuple


class Migration(NamedTuple):
    version: int
    name: str
    statements: tuple[str, ...]
    #: A data step the store runs after ``statements`` (idempotent too), by name.
    copy: str | None = None


#: Stream sequences per partition of the seq-bucketed tables (inbox, messages, purge_index):
#: part of their primary keys, so it can never change once data is written.
BUCKET_SEQS: Final = 1 << 17

#: Partitions of ``archive_conversations`` (by a hash of app and conversation).
ARCHIVE_SHARDS: Final = 16

#: Partitions per app of ``app_users`` (by a hash of the user id); also part of the key.
APP_USER_SHARDS: Final = 16

#: Tables holding message data: TTL'd rows, appended in time order, so whole SSTables
#: expire together under time-window compaction.
_TIME_SERIES: Final = (
    "compaction = {'class': 'TimeWindowCompactionStrategy', "
    "'compaction_window_unit': 'DAYS', 'compaction_window_size': 1} "
    "AND gc_grace_seconds = 86400"
)
#: Small index tables whose rows are rewritten or dropped often: tombstones go early.
_INDEX: Final = "gc_grace_seconds = 10800"

BOOTSTRAP: Final = (
    """CREATE TABLE IF NOT EXISTS schema_migrations (
        version int PRIMARY KEY, name text, owner uuid, applied_at timestamp)""",
)

MIGRATIONS: Final[tuple[Migration, ...]] = (
    Migration(1, "initial", (
        # Registry. ``devices`` rows are written once, by LWT, and never updated: the
        # moving part of a device (its cursor) lives in ``device_cursors``.
        """CREATE TABLE IF NOT EXISTS users (
            user text PRIMARY KEY, app text, created_at bigint)""",
        """CREATE TABLE IF NOT EXISTS devices (
            device text PRIMARY KEY, user text, app text, created_at bigint,
            disabled boolean, start_floor bigint)""",
        """CREATE TABLE IF NOT EXISTS devices_by_user (
            user text, device text, app text, created_at bigint, disabled boolean,
            start_floor bigint, PRIMARY KEY (user, device))""",
        # Users of an app in id order (broadcasts), spread over APP_USER_SHARDS partitions.
        """CREATE TABLE IF NOT EXISTS app_users (
            app text, shard int, user text, PRIMARY KEY ((app, shard), user))""",
        # Cursor: written USING TIMESTAMP <floor>, so the highest floor wins in any order.
        """CREATE TABLE IF NOT EXISTS device_cursors (device text PRIMARY KEY, floor bigint)""",
        # Acknowledgements above the cursor only; the cursor absorbs them.
        f"""CREATE TABLE IF NOT EXISTS device_acks (
            device text, seq bigint, PRIMARY KEY (device, seq)) WITH {_INDEX}""",
        # Messages: one partition per conversation and seq bucket.
        f"""CREATE TABLE IF NOT EXISTS messages (
            conversation text, bucket bigint, seq bigint,
            id text, app text, module text, kind text,
            sender_user text, sender_device text, sender_service text,
            to_kind text, to_id text, body blob, payload_devices frozen<set<text>>,
            client_id text, ts bigint, expires_at bigint, receipt boolean,
            recipients frozen<set<text>>, delivered_at bigint,
            PRIMARY KEY ((conversation, bucket), seq)) WITH {_TIME_SERIES}""",
        f"""CREATE TABLE IF NOT EXISTS conversation_buckets (
            conversation text, bucket bigint, PRIMARY KEY (conversation, bucket))
            WITH {_INDEX}""",
        f"""CREATE TABLE IF NOT EXISTS messages_by_id (id text PRIMARY KEY, seq bigint)
            WITH {_TIME_SERIES}""",
        f"""CREATE TABLE IF NOT EXISTS payloads (
            seq bigint, device text, body blob, PRIMARY KEY (seq, device))
            WITH {_TIME_SERIES}""",
        # Inbox: references to messages, with what decides whether a device gets one.
        f"""CREATE TABLE IF NOT EXISTS inbox (
            user text, bucket bigint, seq bigint,
            conversation text, sender_user text, sender_device text, expires_at bigint,
            shared boolean, payload_devices frozen<set<text>>,
            PRIMARY KEY ((user, bucket), seq)) WITH {_TIME_SERIES}""",
        f"""CREATE TABLE IF NOT EXISTS inbox_buckets (
            user text, bucket bigint, PRIMARY KEY (user, bucket)) WITH {_INDEX}""",
        # last_seq written USING TIMESTAMP <seq>: the highest wins in any order.
        f"""CREATE TABLE IF NOT EXISTS user_conversations (
            user text, conversation text, last_seq bigint,
            PRIMARY KEY (user, conversation)) WITH {_INDEX}""",
        # seq written USING TIMESTAMP <seq>: markers never move back.
        """CREATE TABLE IF NOT EXISTS read_markers (
            conversation text, user text, seq bigint, PRIMARY KEY (conversation, user))""",
        # Retention: messages per app and seq bucket, oldest first.
        f"""CREATE TABLE IF NOT EXISTS purge_index (
            app text, bucket bigint, ts bigint, seq bigint,
            conversation text, id text, recipients frozen<set<text>>, sender_device text,
            shared boolean, payload_devices frozen<set<text>>,
            PRIMARY KEY ((app, bucket), ts, seq)) WITH {_TIME_SERIES}""",
        f"""CREATE TABLE IF NOT EXISTS purge_buckets (
            shard int, app text, bucket bigint, PRIMARY KEY (shard, app, bucket))
            WITH {_INDEX}""",
    )),
    # Tenancy: the app leads the partition key of every table keyed by a name a tenant
    # chooses (user, device, conversation), so the same id in two apps is two partitions.
    # Cassandra cannot change a primary key, so these are new tables (``<name>_v2``); the
    # data step ``tenancy`` copies the version-1 rows into them (each takes the app stored
    # on it or on its message, user or device, else the default app) and leaves the old
    # tables in place for the operator to drop (docs/cassandra.md). Tables keyed by what
    # the server assigns deployment-wide (``messages_by_id``, ``payloads``) or already by
    # app (``app_users``, ``purge_index``, ``purge_buckets``) stay as they are.
    Migration(2, "tenancy", (
        """CREATE TABLE IF NOT EXISTS users_v2 (
            app text, user text, created_at bigint, PRIMARY KEY ((app, user)))""",
        """CREATE TABLE IF NOT EXISTS devices_v2 (
            app text, device text, user text, created_at bigint, disabled boolean,
            start_floor bigint, PRIMARY KEY ((app, device)))""",
        """CREATE TABLE IF NOT EXISTS devices_by_user_v2 (
            app text, user text, device text, created_at bigint, disabled boolean,
            start_floor bigint, PRIMARY KEY ((app, user), device))""",
        """CREATE TABLE IF NOT EXISTS device_cursors_v2 (
            app text, device text, floor bigint, PRIMARY KEY ((app, device)))""",
        f"""CREATE TABLE IF NOT EXISTS device_acks_v2 (
            app text, device text, seq bigint, PRIMARY KEY ((app, device), seq)) WITH {_INDEX}""",
        f"""CREATE TABLE IF NOT EXISTS messages_v2 (
            app text, conversation text, bucket bigint, seq bigint,
            id text, module text, kind text,
            sender_user text, sender_device text, sender_service text,
            to_kind text, to_id text, body blob, payload_devices frozen<set<text>>,
            client_id text, ts bigint, expires_at bigint, receipt boolean,
            recipients frozen<set<text>>, delivered_at bigint,
            PRIMARY KEY ((app, conversation, bucket), seq)) WITH {_TIME_SERIES}""",
        f"""CREATE TABLE IF NOT EXISTS conversation_buckets_v2 (
            app text, conversation text, bucket bigint,
            PRIMARY KEY ((app, conversation), bucket)) WITH {_INDEX}""",
        f"""CREATE TABLE IF NOT EXISTS inbox_v2 (
            app text, user text, bucket bigint, seq bigint,
            conversation text, sender_user text, sender_device text, expires_at bigint,
            shared boolean, payload_devices frozen<set<text>>,
            PRIMARY KEY ((app, user, bucket), seq)) WITH {_TIME_SERIES}""",
        f"""CREATE TABLE IF NOT EXISTS inbox_buckets_v2 (
            app text, user text, bucket bigint, PRIMARY KEY ((app, user), bucket))
            WITH {_INDEX}""",
        f"""CREATE TABLE IF NOT EXISTS user_conversations_v2 (
            app text, user text, conversation text, last_seq bigint,
            PRIMARY KEY ((app, user), conversation)) WITH {_INDEX}""",
        """CREATE TABLE IF NOT EXISTS read_markers_v2 (
            app text, conversation text, user text, seq bigint,
            PRIMARY KEY ((app, conversation), user))""",
    ), copy="tenancy"),
    # Groups and contacts (``CassandraSocialStore``, docs/cassandra.md "Groups and contacts"):
    # the app leads every partition key but that of ``group_events``, keyed by the stream seq
    # (assigned once for the deployment, like ``payloads``).
    Migration(3, "social", (
        # The group now; ``version`` (the seq of its latest applied write) only moves forward,
        # by compare-and-set: the fence that keeps a group's writes in seq order.
        """CREATE TABLE IF NOT EXISTS social_groups (
            app text, group_id text, name text, owner text, created_at bigint, version bigint,
            PRIMARY KEY ((app, group_id)))""",
        # Membership intervals, never deleted: one partition per group, so a write's changes
        # go in one single-partition batch.
        """CREATE TABLE IF NOT EXISTS group_members (
            app text, group_id text, user text, joined_seq bigint, left_seq bigint, role text,
            PRIMARY KEY ((app, group_id), user, joined_seq))""",
        # Groups a user is a member of now: written and deleted USING TIMESTAMP <seq>.
        f"""CREATE TABLE IF NOT EXISTS user_groups (
            app text, user text, group_id text, PRIMARY KEY ((app, user), group_id))
            WITH {_INDEX}""",
        """CREATE TABLE IF NOT EXISTS group_events (
            seq bigint PRIMARY KEY, id text, group_id text, app text, actor text, ts bigint,
            code text, detail text, body blob)""",
        """CREATE TABLE IF NOT EXISTS group_messages (
            app text, group_id text, id text, seq bigint, sender text, recipients int,
            PRIMARY KEY ((app, group_id), id))""",
        # Each marker cell written USING TIMESTAMP <its seq>: markers never move back.
        """CREATE TABLE IF NOT EXISTS group_markers (
            app text, group_id text, user text, delivered_seq bigint, read_seq bigint,
            PRIMARY KEY ((app, group_id), user))""",
        # A contact pair (``low`` < ``high``), the truth, written by compare-and-set on
        # ``version``; ``synced``: the version the per-user rows below were written from.
        """CREATE TABLE IF NOT EXISTS contact_pairs (
            app text, low text, high text, version bigint, low_state text, high_state text,
            low_since bigint, high_since bigint, low_blocks boolean, high_blocks boolean,
            low_block_since bigint, high_block_since bigint, synced bigint,
            PRIMARY KEY ((app, low, high)))""",
        # The pair as each user sees it, for listing: written USING TIMESTAMP <version>.
        f"""CREATE TABLE IF NOT EXISTS contacts_by_user (
            app text, user text, other text, state text, since bigint, blocked boolean,
            block_since bigint, PRIMARY KEY ((app, user), other)) WITH {_INDEX}""",
    )),
    # Partitions (schemas.partitions): a seq is a position, ``stream_seq * P + p``, and
    # positions of two partitions do not compare, so a device's floor is one per partition.
    # The data step ``partitions`` moves each device's single floor (``device_cursors_v2``,
    # ``devices_v2.start_floor``; data written with one partition) to partition 0 and
    # leaves the old cursor table for the operator to drop (docs/cassandra.md).
    Migration(4, "partitions", (
        # Each floor cell written USING TIMESTAMP <floor>: the highest wins in any order.
        """CREATE TABLE IF NOT EXISTS device_floors (
            app text, device text, partition int, floor bigint,
            PRIMARY KEY ((app, device), partition))""",
        # Where a device starts, per partition: written with the device, by the same LWT.
        "ALTER TABLE devices_v2 ADD IF NOT EXISTS start_cursor frozen<list<bigint>>",
    ), copy="partitions"),
    # Archive (docs/archive.md): how far each conversation is archived and purged, and the
    # list of archived conversations (``ARCHIVE_SHARDS`` partitions by a hash of app and
    # conversation) that the archive worker walks to expire chunks.
    Migration(5, "archive", (
        # Each mark cell written USING TIMESTAMP <its position>: a mark never moves back.
        """CREATE TABLE IF NOT EXISTS archive_marks (
            app text, conversation text, archived bigint, purged bigint,
            PRIMARY KEY ((app, conversation)))""",
        """CREATE TABLE IF NOT EXISTS archive_conversations (
            shard int, app text, conversation text, PRIMARY KEY (shard, app, conversation))""",
    )),
)
