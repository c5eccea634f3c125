"""The storage interface. Every backend implements ``MessageStore``; the contract suite in
``tests/contract/test_store_contract.py`` runs the same tests against each.

Model: a message is written once (keyed by its server id, ordered by ``seq``) and indexed
into the inbox of each recipient user. With P partitions (``partitions.count``, the store's
``partitions``), ``seq`` is a *position* (``schemas.partitions``): ``stream_seq * P + p`` for a
message of partition ``p`` (``seq % P``), unique in the deployment and increasing within a
partition, so within every conversation. Positions of two partitions are not comparable
(partition 2 may be at 10**6 while partition 3 is at 50), so a device's progress is a *cursor*:
one position per partition (``list[int]`` of length P, 0 = nothing), and so is its *floor*,
what the store knows it has (acknowledged, or not for it) per partition. A device's backlog is
its user's inbox above the floor and the client's cursor, partition by partition, minus what
the device acknowledged, minus what is not for it (its own sends, expired messages,
per-device payloads addressed to other devices). Nothing is deleted per delivery; the floors
move instead. Within a partition, entries are stored in position order (one writer per
partition, in stream order): an entry stored later has a higher position than every entry of
its partition stored before, which is what makes "the highest position seen" a safe cursor.

Tenancy: the app is part of every key. Every method that names a user, device or conversation
takes the ``app`` first, and a backend keys its rows by ``(app, ...)``: the same user, device
or conversation id in two apps is two users, devices or conversations that never see each
other's rows. A message's ``app`` is its envelope's; its recipients are users of that app.
Stream sequences and server message ids are unique in the deployment (ids derive from the app),
so rows keyed by them alone need no app.
"""

import functools
import inspect
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol, TypeVar

import msgspec

from runtime.config import RetentionConfig
from runtime.transient import Transient
from schemas.envelopes import DeviceAcks, MessageEnvelope
from schemas.frames import AckItem
from schemas.partitions import MAX_PARTITIONS, empty_cursor
from schemas.rpc import ConversationSummary, DeviceInfo, HistoryItem

S = TypeVar("S")


class StoreUnavailable(Transient):
    """The store could not be reached or did not answer in time (connection errors, timeouts,
    too few replicas, a locked or full SQLite file): the same call may succeed later. The
    worker retries in place and dead-letters nothing because of it; any other exception of a
    store counts against the envelope being applied."""


def unavailable_on(*errors: type[BaseException]) -> Callable[[type[S]], type[S]]:
    """Class decorator of a store: its public coroutine methods raise ``StoreUnavailable``
    (chained to the original) instead of ``errors``, the backend's outage errors."""

    def translating(method: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
        @functools.wraps(method)
        async def call(*args: Any, **kwargs: Any) -> Any:
            try:
                return await method(*args, **kwargs)
            except errors as exc:
                raise StoreUnavailable(f"{type(exc).__name__}: {exc}") from exc

        return call

    def decorate(cls: type[S]) -> type[S]:
        for name, member in list(vars(cls).items()):
            if not name.startswith("_") and inspect.iscoroutinefunction(member):
                setattr(cls, name, translating(member))
        return cls

    return decorate


def checked_partitions(partitions: int) -> int:
    """``partitions`` if it is a partition count a store accepts (1..``MAX_PARTITIONS``)."""
    if not 1 <= partitions <= MAX_PARTITIONS:
        raise ValueError(f"partitions must be 1..{MAX_PARTITIONS}, not {partitions}")
    return partitions


def as_cursor(values: Sequence[int], partitions: int) -> list[int]:
    """A cursor argument as a list of one position per partition: empty means nothing yet
    (zeros); any other length is a caller's bug (``ValueError``)."""
    if not values:
        return empty_cursor(partitions)
    if len(values) != partitions:
        raise ValueError(f"a cursor of {len(values)} positions, not {partitions}")
    return [int(value) for value in values]


def position_before(seq: int, partitions: int) -> int:
    """The position just before ``seq`` in its partition (0 before the first): a cursor or
    floor value that covers everything of the partition below ``seq`` and not ``seq``."""
    return seq - partitions if seq >= 2 * partitions else 0


def cursor_before(cursor: Sequence[int], dropped: Sequence["DeliverableMessage"],
                  partitions: int) -> list[int]:
    """The cursor of a ``backlog`` page its caller cut short (``dropped``: the messages after
    the cut): each partition with a dropped message goes back to just before its first one,
    so the next page starts with them; the other partitions keep the store's cursor (every
    message of theirs in the page was kept)."""
    result = list(cursor)
    for message in dropped:
        partition = message.seq % partitions
        result[partition] = min(result[partition], position_before(message.seq, partitions))
    return result


class StoredMessage(msgspec.Struct):
    """An accepted message with its position and the users whose inbox it enters."""

    seq: int
    envelope: MessageEnvelope
    recipients: list[str]


class DeliverableMessage(msgspec.Struct):
    """A message as one device receives it: the body chosen for that device."""

    seq: int
    envelope: MessageEnvelope
    body: bytes


class RetentionPolicy(msgspec.Struct, frozen=True):
    """What ``purge`` removes: per app, either older than N days or delivered to everyone."""

    default_days: int
    days: dict[str, int]
    ephemeral_apps: frozenset[str]

    def days_for(self, app: str) -> int:
        return self.days.get(app, self.default_days)


def retention_policy(config: RetentionConfig) -> RetentionPolicy:
    """The policy the configuration describes."""
    return RetentionPolicy(default_days=config.default_days, days=dict(config.days),
                           ephemeral_apps=frozenset(config.ephemeral_apps))


class MessageStore(Protocol):
    """Persistence of messages, delivery state and the device registry.

    Every write is idempotent: replaying the same call (JetStream redelivery) changes nothing.
    Times are milliseconds since the epoch, passed in so tests control the clock.
    """

    async def open(self) -> None:
        """Connect and apply pending schema migrations."""

    async def close(self) -> None:
        """Release connections. The store is unusable afterwards."""

    async def register_device(self, app: str, user: str, device: str, now: int,
                              start_after: Sequence[int] = ()) -> DeviceInfo:
        """Create the user if absent and the device if absent; return the device. A new
        device starts, in each partition ``p``, after ``start_after[p]`` (a cursor: the last
        position of ``p`` accepted before it registered, whether stored yet or not; empty:
        zeros) and after its user's newest inbox entry of ``p``: it gets no older backlog. A
        device id belongs to one user of its app for good: registering it for another raises
        ``ProtocolError(CONFLICT)`` (the same id in another app is another device)."""

    async def user_devices(self, app: str, user: str) -> tuple[bool, list[DeviceInfo]]:
        """Whether the user exists in ``app``, and its devices."""

    async def device_owner(self, app: str, device: str) -> str | None:
        """The user of ``app`` a device belongs to, or None."""

    async def append(self, messages: Sequence[StoredMessage]) -> None:
        """Store messages and their inbox entries atomically per call. A message whose id is
        already stored is skipped (client retry or redelivery). The inbox entries are keyed by
        the envelope's app and each recipient."""

    async def record_acks(self, app: str, user: str, device: str, items: Sequence[AckItem],
                          now: int) -> None:
        """The device received these messages: exclude them from its backlog, advance its
        floor of each partition over that partition's contiguous prefix, mark other users'
        messages delivered."""

    async def record_acks_of(self, entries: Sequence[DeviceAcks], now: int) -> None:
        """``record_acks`` for each entry (one device's acks each), as one write where the
        backend has transactions: a storage worker applies a whole receipt flush at once."""

    async def mark_read(self, app: str, user: str, conversation: str, seq: int) -> None:
        """Move the user's read marker forward to ``seq`` (never backwards)."""

    async def backlog(
        self, app: str, user: str, device: str, after: Sequence[int], limit: int, now: int
    ) -> tuple[list[DeliverableMessage], list[int]]:
        """Up to ``limit`` undelivered messages for the device above ``after`` (a cursor;
        empty: zeros) and its floor, partition by partition, in ascending seq (partitions mixed:
        per-conversation order is what holds), and the cursor to continue from.

        The user's inbox is read in seq order from the lowest of those bounds; an entry is
        *examined* when the read reached it (a full page stops at its last message). The
        returned cursor holds, for each partition ``p``, the highest of ``after[p]``, the
        floor of ``p`` and the positions of ``p`` examined: every entry of ``p`` at or below
        it was returned, in this page or before, or is not for the device. An entry of a slow
        partition stored after the page has a position above every examined one of its
        partition, so it is never skipped, whatever the positions of the other partitions."""

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
        """A page of the user's view of a conversation in ascending seq order: the newest
        ``limit`` below ``before``, or the oldest ``limit`` above ``after``."""

    async def message(self, app: str, user: str, device: str, message_id: str,
                      now: int) -> HistoryItem | None:
        """One message of the user's view, by its server id, as ``history`` shows it (the
        body for ``device``, the status), or None when it is not in the user's inbox or
        carries no body for the device: a user who never received a message cannot tell it
        from one that does not exist."""

    async def conversations(
        self, app: str, user: str, device: str, limit: int
    ) -> list[ConversationSummary]:
        """The user's conversations, most recent first (by the last message's ``ts``, then
        its seq: positions of two conversations' partitions are not comparable), with unread
        counts. ``last_seq`` and ``read_seq`` are positions of the conversation's partition."""

    async def purge(self, policy: RetentionPolicy, now: int) -> int:
        """Apply retention; returns the number of messages removed."""


# ---------------------------------------------------------------------------- archive
# What the archive worker (archive_worker/, docs/archive.md) asks of a store: additive
# methods beside ``MessageStore``'s, implemented by every backend and run by the contract
# suite's archive section.


class ArchivedMessage(msgspec.Struct, omit_defaults=True):
    """A message as the archive keeps it: everything ``history`` needs to show it to any
    recipient's device (the envelope with its per-device payloads, the recipients, when it was
    delivered), nothing the backlog needs (acks, floors)."""

    seq: int
    envelope: MessageEnvelope
    recipients: list[str]
    delivered_at: int | None = None


class ArchiveMark(msgspec.Struct, frozen=True):
    """How far a conversation is archived, as positions of its partition: every message at or
    below ``archived`` is in a verified chunk of the archive's index (history reads it there,
    and above it from the store); every message at or below ``purged`` is gone from the
    store. ``purged`` <= ``archived``: the purge comes after the verification."""

    archived: int = 0
    purged: int = 0


class ArchiveStore(Protocol):
    """The store's side of the archive. Marks only move forward."""

    async def message_apps(self) -> list[str]:
        """The apps that have messages in the store."""

    async def archive_candidates(self, app: str, before_ts: int) -> list[str]:
        """The app's conversations with a stored message older than ``before_ts`` (ms)."""

    async def archive_rows(self, app: str, conversation: str, after: int, before_ts: int,
                           limit: int) -> list[ArchivedMessage]:
        """Up to ``limit`` messages of the conversation above position ``after``, in seq
        order, stopping before the first one at or after ``before_ts``: a prefix, so what
        stays in the store is everything above the archived position."""

    async def archive_mark(self, app: str, conversation: str) -> ArchiveMark:
        """The conversation's mark (zeros: nothing archived)."""

    async def set_archive_mark(self, app: str, conversation: str, mark: ArchiveMark) -> None:
        """Move the mark forward (each field to the higher of the stored and the given)."""

    async def archived_conversations(self) -> list[tuple[str, str]]:
        """Every ``(app, conversation)`` with a mark, in order."""

    async def purge_archived(self, app: str, conversation: str, through: int) -> int:
        """Remove the conversation's messages at or below position ``through`` (their bodies,
        payloads and ids; a backend may leave small references to them to its TTLs); returns
        how many messages went."""

    async def others_read(self, app: str, user: str, conversation: str) -> int:
        """The highest read marker of the conversation's members other than ``user``."""


class ArchivingStore(MessageStore, ArchiveStore, Protocol):
    """A message store with the archive's methods: what every backend is."""
