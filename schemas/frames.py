"""WebSocket frames between a client and a gateway, protocol v2.

Each frame is a JSON object whose ``type`` names its struct. Decoding is strict: unknown fields,
missing fields and wrong types are errors, so identity fields a client might add (``sender``,
``user``) are refused rather than ignored. Bodies are opaque bytes (ciphertext), base64 in JSON;
the server never decodes them.
"""

from typing import Annotated, Final, Literal

import msgspec

from schemas.bounds import MAX_INT
from schemas.ids import ClientId, ConversationId, DeviceId, ModuleId, UserId
from schemas.media import MAX_MESSAGE_BLOBS, BlobId
from schemas.partitions import MAX_CURSOR_CHARS

RequestId = Annotated[
    str, msgspec.Meta(max_length=64, description="Echoed in the reply and in any error.")
]
Seq = Annotated[int, msgspec.Meta(ge=0, le=MAX_INT,
                                   description="Position in the conversation's order.")]
SyncCursor = Annotated[str, msgspec.Meta(
    min_length=3, max_length=MAX_CURSOR_CHARS, pattern=r"^c1\.[A-Za-z0-9_\-]*$",
    description="Opaque sync position (one per partition of the deployment): pass back "
                "what ``synced.cursor`` gave, never build or compare it.")]

#: Upper bound of recipient devices in one per-device send (pairwise-encrypted payloads).
MAX_PAYLOADS: Final = 256
#: Upper bound of message acknowledgements in one ``ack`` frame.
MAX_ACKS: Final = 1000
#: Upper bound of users in one ``presence_subscribe``/``presence_unsubscribe`` frame.
MAX_PRESENCE_USERS: Final = 500

#: A user as another sees it in its contact list.
ContactState = Literal["none", "outgoing", "incoming", "contact"]


class _Frame(msgspec.Struct, tag_field="type", forbid_unknown_fields=True, omit_defaults=True):
    """Base of every frame: tagged by ``type``, strict about fields."""


class _ServerFrame(_Frame, forbid_unknown_fields=False):
    """Base of gateway -> client frames: clients ignore fields they do not know, so the
    server can add fields without breaking deployed apps."""


class Destination(msgspec.Struct, forbid_unknown_fields=True):
    """Where a message goes. ``user``: all devices of a user (a direct conversation);
    ``group``: every device of every member; ``device``: one device of another user."""

    kind: Literal["user", "group", "device"]
    id: Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9_\-]{1,64}$")]


class Sender(msgspec.Struct, omit_defaults=True):
    """Who sent a message, as the server authenticated it (never as the client claimed)."""

    user: UserId | None = None
    device: DeviceId | None = None
    service: str | None = None


# ---------------------------------------------------------------- client -> gateway


class Send(_Frame, tag="send"):
    """Send a message. Exactly one of ``body`` (one ciphertext for every recipient device,
    e.g. a group sender key) or ``payloads`` (device id -> ciphertext, pairwise sessions).
    ``blobs``: the ids of the attachments the (encrypted) body refers to, in plaintext so the
    server can check they are the sender's, let the conversation's members download them and
    keep them as long as the message (docs/media.md); the keys stay inside the body."""

    client_id: ClientId
    to: Destination
    body: bytes | None = None
    payloads: (
        Annotated[dict[DeviceId, bytes], msgspec.Meta(min_length=1, max_length=MAX_PAYLOADS)]
        | None
    ) = None
    module: ModuleId = "chat"
    ttl: Annotated[int, msgspec.Meta(ge=1, le=31_536_000)] | None = None
    receipt: bool = True
    blobs: (Annotated[list[BlobId], msgspec.Meta(min_length=1, max_length=MAX_MESSAGE_BLOBS)]
            | None) = None
    id: RequestId | None = None


class AckItem(msgspec.Struct, forbid_unknown_fields=True):
    """One received message, as the ``message`` frame named it."""

    id: Annotated[str, msgspec.Meta(max_length=64)]
    seq: Seq
    conversation: ConversationId
    sender: UserId | None = None


class Ack(_Frame, tag="ack"):
    """This device has received these messages: the server stops re-sending them and tells
    the senders (``delivered`` receipts)."""

    messages: Annotated[list[AckItem], msgspec.Meta(min_length=1, max_length=MAX_ACKS)]
    id: RequestId | None = None


class Read(_Frame, tag="read"):
    """The user has read the conversation up to ``seq`` (inclusive). Markers only move forward."""

    conversation: ConversationId
    seq: Seq
    id: RequestId | None = None


class Sync(_Frame, tag="sync"):
    """Send me what I have not acknowledged, oldest first, then a ``synced`` frame. ``after``
    is the cursor the client holds (the ``cursor`` of its last ``synced`` frame); the server
    also remembers each device's acknowledgements, so ``after`` may be omitted."""

    after: SyncCursor | None = None
    id: RequestId | None = None


class Ping(_Frame, tag="ping"):
    """Application-level keepalive; answered by ``pong``."""

    id: RequestId | None = None


class Callback(_Frame, tag="callback"):
    """Hand ``body`` to the system handler ``handler`` (one the deployment declares, for
    example ``upload_logs``). Internal services consume it from ``callback.<handler>`` with the
    sender's identity from the token. Answered by ``callback_accepted``."""

    handler: Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9_\-]{1,64}$")]
    body: bytes
    id: RequestId | None = None


class PresenceSubscribe(_Frame, tag="presence_subscribe"):
    """Hear presence changes of these users. Only accepted contacts who have not blocked you
    are watched; the others are listed in the reply's ``denied``. Answered by
    ``presence_subscribed`` with the current state of each watched user."""

    users: Annotated[list[UserId], msgspec.Meta(min_length=1, max_length=MAX_PRESENCE_USERS)]
    id: RequestId | None = None


class PresenceUnsubscribe(_Frame, tag="presence_unsubscribe"):
    """Stop hearing presence changes of these users (no reply; errors echo ``id``)."""

    users: Annotated[list[UserId], msgspec.Meta(min_length=1, max_length=MAX_PRESENCE_USERS)]
    id: RequestId | None = None


class Typing(_Frame, tag="typing"):
    """The user is typing (``active``) or stopped, in a conversation it is a member of. Relayed
    to the other members' connected devices as ``user_typing``; never stored; rate-limited."""

    conversation: ConversationId
    active: bool = True
    id: RequestId | None = None


ClientFrame = (Send | Ack | Read | Sync | Ping | Callback | PresenceSubscribe
               | PresenceUnsubscribe | Typing)

# ---------------------------------------------------------------- gateway -> client


class Welcome(_ServerFrame, tag="welcome"):
    """First frame of every connection: who the token says you are, and the limits."""

    user: UserId
    device: DeviceId
    app: str
    protocol: int
    heartbeat_s: float
    max_frame_bytes: int
    gateway: str
    #: One-time keys the key directory holds for this device (docs/e2ee.md); 0 before any.
    one_time_keys_left: int | None = None


class Accepted(_ServerFrame, tag="accepted"):
    """The message is stored durably (status ``sent``): it will not be lost."""

    client_id: ClientId
    message_id: str
    seq: Seq
    conversation: ConversationId
    ts: int
    id: RequestId | None = None


class Message(_ServerFrame, tag="message"):
    """A message for this device: chat, notification or system. ``body`` is the ciphertext
    for this device (the shared body or this device's own payload)."""

    message_id: str
    seq: Seq
    conversation: ConversationId
    kind: Literal["chat", "notification", "system"]
    sender: Sender
    to: Destination
    app: str
    module: str
    body: bytes
    ts: int
    receipt: bool
    client_id: str | None = None
    expires_at: int | None = None


class Receipt(_ServerFrame, tag="receipt"):
    """Delivery or read state moved. ``delivered``: ``message_ids`` reached a device of
    ``by``; ``read``: ``by`` has read the conversation up to ``seq``."""

    status: Literal["delivered", "read"]
    conversation: ConversationId
    by: UserId
    message_ids: list[str] = []
    seq: Seq | None = None


class Synced(_ServerFrame, tag="synced"):
    """The backlog has been sent. Hold ``cursor`` and pass it as ``after`` next time."""

    cursor: SyncCursor
    count: int
    id: RequestId | None = None


class Pong(_ServerFrame, tag="pong"):
    """Reply to ``ping``."""

    id: RequestId | None = None


class Error(_ServerFrame, tag="error"):
    """A request failed; the connection stays open unless a close follows."""

    code: str
    message: str
    retry: bool
    id: RequestId | None = None
    #: ``rate_limited`` only: seconds until the refused frame can succeed.
    retry_after_s: float | None = None


class CallbackAccepted(_ServerFrame, tag="callback_accepted"):
    """The callback is stored on its handler's subject; ``callback_id`` names it there."""

    handler: str
    callback_id: str
    id: RequestId | None = None


class PresenceState(msgspec.Struct, omit_defaults=True):
    """A user's presence: ``online``, or offline since ``last_active`` (ms; absent if never
    seen), for "online" / "active 2 hours ago"."""

    user: UserId
    online: bool
    last_active: int | None = None


class PresenceSubscribed(_ServerFrame, tag="presence_subscribed"):
    """Reply to ``presence_subscribe``: the watched users' current state, and the users not
    watched (not a contact, or they blocked you)."""

    users: list[PresenceState]
    denied: list[str] = []
    id: RequestId | None = None


class Presence(_ServerFrame, tag="presence"):
    """A watched user came online or went offline (``last_active`` set when offline)."""

    user: UserId
    online: bool
    last_active: int | None = None


class UserTyping(_ServerFrame, tag="user_typing"):
    """``user`` is typing (``active``) or stopped in ``conversation``. Ephemeral: shown for a
    few seconds unless repeated."""

    conversation: ConversationId
    user: UserId
    active: bool


class Contact(_ServerFrame, tag="contact"):
    """Your relation with ``user`` changed (a request arrived, was accepted, ...), on every
    connected device of both users. ``blocked``: you block ``user``."""

    user: UserId
    state: ContactState
    blocked: bool = False
    since: int = 0


class KeysLow(_ServerFrame, tag="keys_low"):
    """A claim left ``device`` (of this user) fewer one-time keys than the deployment's
    ``keys.low_water``: that device uploads more (``PUT /v1/keys``); others ignore it."""

    device: DeviceId
    one_time_keys_left: int


class DeviceListChanged(_ServerFrame, tag="device_list_changed"):
    """``user`` (this user, or one sharing a direct conversation, a group or a contact with
    it) gained a device in the key directory or lost one: query its devices
    (``POST /v1/keys/query``) before the next send to it. Best effort: a user past the
    audience bound (``schemas.keys.MAX_KEY_AUDIENCE``) or not connected is not told, and
    learns it at its next query (senders query before every send)."""

    user: UserId


ServerFrame = (Welcome | Accepted | Message | Receipt | Synced | Pong | Error | CallbackAccepted
               | PresenceSubscribed | Presence | UserTyping | Contact | KeysLow
               | DeviceListChanged)

FRAME_TYPES: Final[dict[str, type[_Frame]]] = {
    t.__struct_config__.tag: t  # type: ignore[misc]
    for t in (Send, Ack, Read, Sync, Ping, Callback, Welcome, Accepted, Message, Receipt, Synced,
              Pong, Error, CallbackAccepted, PresenceSubscribe, PresenceUnsubscribe, Typing,
              PresenceSubscribed, Presence, UserTyping, Contact, KeysLow, DeviceListChanged)
}
CLIENT_FRAME_TYPES: Final = frozenset({"send", "ack", "read", "sync", "ping", "callback",
                                       "presence_subscribe", "presence_unsubscribe", "typing"})
