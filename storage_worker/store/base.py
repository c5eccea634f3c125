"""The storage interface. Every backend implements ``MessageStore``; the contract suite in
``tests/contract/test_store_contract.py`` runs the same tests against each.

Model: a message is written once (keyed by its server id, ordered by ``seq``, the stream
sequence assigned when JetStream accepted it) and indexed into the inbox of each recipient
user. A device's backlog is its user's inbox after the device's cursor, minus what the device
acknowledged, minus what is not for it (its own sends, expired messages, per-device payloads
addressed to other devices). Nothing is deleted per delivery; the cursor moves instead.

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
from schemas.envelopes import MessageEnvelope
from schemas.frames import AckItem
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
                              start_after: int = 0) -> DeviceInfo:
        """Create the user if absent and the device if absent; return the device. A new
        device starts after ``start_after`` (the last sequence accepted before it registered,
        whether stored yet or not) and after its user's newest inbox entry: it gets no older
        backlog. A device id belongs to one user of its app for good: registering it for
        another raises ``ProtocolError(CONFLICT)`` (the same id in another app is another
        device)."""

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
        cursor over the contiguous prefix, mark other users' messages delivered."""

    async def mark_read(self, app: str, user: str, conversation: str, seq: int) -> None:
        """Move the user's read marker forward to ``seq`` (never backwards)."""

    async def backlog(
        self, app: str, user: str, device: str, after: int, limit: int, now: int
    ) -> tuple[list[DeliverableMessage], int]:
        """Up to ``limit`` undelivered messages for the device with ``seq > after``, oldest
        first, and the highest seq examined (the cursor to continue from)."""

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
        """The user's conversations, most recent first, with unread counts."""

    async def purge(self, policy: RetentionPolicy, now: int) -> int:
        """Apply retention; returns the number of messages removed."""
