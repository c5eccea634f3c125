"""Request/reply messages of the storage worker (``store.rpc.<op>``), MessagePack-encoded.

The storage worker owns the store: registry writes, backlog, history and conversation lists all
go through it. Every reply is ``Ok`` with a typed value or ``Failed`` with an error code.

Every request that names a user, device, conversation or group carries the ``app`` they belong
to (the caller's token's app): ids are per app, and the worker looks nothing up without it.
"""

from typing import Final, Generic, TypeVar

import msgspec

from schemas import contacts, groups, keys
from schemas.frames import Message
from schemas.notifications import AppUsers, AppUsersRequest

T = TypeVar("T")


class Failed(msgspec.Struct, tag="failed", tag_field="r"):
    """The operation failed with an ``ErrorCode``."""

    code: str
    message: str


class DeviceInfo(msgspec.Struct):
    """A registered device."""

    user: str
    device: str
    app: str
    created_at: int
    disabled: bool = False
    #: ``register_device`` only: one-time keys the directory holds for the device.
    one_time_keys_left: int | None = None


class RegisterDevice(msgspec.Struct):
    """Create the user if needed and register (or refresh) one of its devices."""

    user: str
    device: str
    app: str


class GetUser(msgspec.Struct):
    """Does the user exist in ``app``, and which devices does it have?"""

    app: str
    user: str


class UserDevices(msgspec.Struct):
    """Reply to ``GetUser``: ``exists`` false for unknown users."""

    exists: bool
    devices: list[DeviceInfo] = []


class DeviceOwner(msgspec.Struct):
    """Which user of ``app`` owns a device?"""

    app: str
    device: str


class Owner(msgspec.Struct):
    """Reply to ``DeviceOwner``: None for unknown devices."""

    user: str | None


class SyncRequest(msgspec.Struct):
    """Backlog of one device: messages it has not acknowledged past the cursor ``after``
    (one position per partition, ``schemas.partitions``; empty: from the device's own).

    ``barrier`` is each partition stream's last sequence, read by the gateway after
    subscribing the device's live subject; the worker answers only once it has stored
    everything up to it, so nothing that arrives during the read is missed (subscribe
    before fetch)."""

    app: str
    user: str
    device: str
    after: list[int]
    limit: int
    barrier: list[int]


class SyncPage(msgspec.Struct):
    """Up to ``limit`` messages oldest first; ``cursor`` is what the page covered, one
    position per partition."""

    messages: list[Message]
    cursor: list[int]
    more: bool


class HistoryRequest(msgspec.Struct):
    """One page of a conversation as ``user`` may see it: before or after ``seq``."""

    app: str
    user: str
    device: str
    conversation: str
    direction: str  # "backward" | "forward"
    seq: int | None
    limit: int
    #: Read-your-writes: answer once everything up to these stream sequences (one per
    #: partition) is stored.
    barrier: list[int] = []


class MessageRequest(msgspec.Struct):
    """One message by its server id, as ``user``'s device ``device`` sees it in history
    (``not_found`` unless it is in the user's inbox with a body for the device)."""

    app: str
    user: str
    device: str
    message_id: str
    #: Read-your-writes: answer once everything up to these stream sequences (one per
    #: partition) is stored.
    barrier: list[int] = []


class HistoryItem(msgspec.Struct, omit_defaults=True):
    """A message in history, with its status as the sender sees it."""

    message: Message
    status: str  # sent | delivered | read | expired


class HistoryPage(msgspec.Struct):
    """Messages in ascending seq order plus the seqs to continue from (None: no more)."""

    items: list[HistoryItem]
    next_before: int | None
    next_after: int | None


class ConversationsRequest(msgspec.Struct):
    """The conversations of a user, most recent first."""

    app: str
    user: str
    device: str
    limit: int
    barrier: list[int] = []


class ConversationSummary(msgspec.Struct, omit_defaults=True):
    """One conversation: its last message and the user's unread count."""

    conversation: str
    last_seq: int
    unread: int
    read_seq: int
    last_message: Message | None = None


class Conversations(msgspec.Struct):
    """Reply to ``ConversationsRequest``."""

    conversations: list[ConversationSummary]


class Ok(msgspec.Struct, Generic[T], tag="ok", tag_field="r"):
    """The operation succeeded with ``value``."""

    value: T


#: Operation name -> (request type, reply value type).
OPERATIONS: Final[dict[str, tuple[type[msgspec.Struct], type]]] = {
    "register_device": (RegisterDevice, DeviceInfo),
    "get_user": (GetUser, UserDevices),
    "device_owner": (DeviceOwner, Owner),
    "sync": (SyncRequest, SyncPage),
    "history": (HistoryRequest, HistoryPage),
    "message": (MessageRequest, HistoryItem),
    "conversations": (ConversationsRequest, Conversations),
    "app_users": (AppUsersRequest, AppUsers),
    # groups (schemas.groups)
    "group_write": (groups.GroupWrite, groups.GroupInfo),
    "group_get": (groups.GroupGet, groups.GroupInfo),
    "user_groups": (groups.UserGroups, groups.GroupList),
    "group_roster": (groups.GroupRosterRequest, groups.GroupRoster),
    "group_members": (groups.GroupMembersAt, groups.GroupMembers),
    "group_event": (groups.GroupEventRequest, groups.GroupEventOutcome),
    "group_receipts": (groups.GroupReceiptsRequest, groups.GroupReceipts),
    # contacts (schemas.contacts)
    "contact_write": (contacts.ContactWrite, contacts.ContactWriteResult),
    "contacts": (contacts.ContactsOf, contacts.ContactList),
    "relations": (contacts.RelationsRequest, contacts.Relations),
    # end-to-end encryption key directory (schemas.keys)
    "keys_upload": (keys.KeysUploadRequest, keys.KeysUploadOutcome),
    "keys_query": (keys.KeysQueryRequest, keys.KeysQueryResult),
    "keys_claim": (keys.KeysClaimRequest, keys.KeysClaimOutcome),
    "keys_remove": (keys.KeysRemoveRequest, keys.KeysRemoved),
    "key_audience": (keys.KeyAudienceRequest, keys.KeyAudience),
}
