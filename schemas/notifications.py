"""Business notifications: what internal services send to users, devices and whole apps.

A service sends a batch of ``Notification`` items on the NATS subject ``notify.send``
(request/reply, JSON, queue group ``notify``: any gateway answers) or with ``POST
/v1/notifications`` and the service credential. Each item becomes one ``MessageEnvelope``
(``kind="notification"``, ``sender.service``) per recipient user, published on ``msgs.<p>.notify``
into the partition of ``n:<user>``: storage keeps it in the user's notification conversation
``n:<user>`` (the inbox), the router delivers it to the user's online devices and makes push jobs
for the offline ones. Items succeed or fail one by one (``NotificationResult``); a request that is
malformed as a whole fails as a whole."""

import hashlib
from typing import Annotated, Final, Literal

import msgspec

from schemas.ids import AppId, ClientId, DeviceId, GroupId, ModuleId, UserId

#: Request/reply subject where services send notification batches (JSON).
NOTIFY_SEND: Final = "notify.send"
#: Queue group of the gateways serving ``notify.send``.
NOTIFY_QUEUE: Final = "notify"
#: Upper bound of users in one ``users`` target.
MAX_TARGET_USERS: Final = 1000

ServiceName = Annotated[
    str, msgspec.Meta(pattern=r"^[A-Za-z0-9_\-]{1,64}$",
                      description="The sending service, as recipients see it.")
]


class _Target(msgspec.Struct, tag_field="kind", forbid_unknown_fields=True):
    """Base of the targets, tagged by ``kind``."""


class ToUser(_Target, tag="user"):
    """Every device of one user."""

    id: UserId


class ToUsers(_Target, tag="users"):
    """Every device of each of these users."""

    ids: Annotated[list[UserId], msgspec.Meta(min_length=1, max_length=MAX_TARGET_USERS)]


class ToGroup(_Target, tag="group"):
    """Every device of every member of a group."""

    id: GroupId


class ToDevice(_Target, tag="device"):
    """One device (only it receives the notification, in its user's inbox)."""

    id: DeviceId


class ToApp(_Target, tag="app"):
    """Broadcast: every device of every user of the notification's app."""


Target = ToUser | ToUsers | ToGroup | ToDevice | ToApp


class Notification(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    """One notification. ``id`` is chosen by the service and unique per service: sending the
    same id again (a retry) gives the same message ids and is delivered once."""

    id: ClientId
    to: Target
    body: bytes
    #: The app of the recipients; the deployment's default app when omitted.
    app: AppId | None = None
    module: ModuleId = "notify"
    #: Seconds after which the notification is no longer delivered.
    ttl: Annotated[int, msgspec.Meta(ge=1, le=31_536_000)] | None = None
    #: Whether the service wants delivery receipts (forwarded on the message frame).
    receipt: bool = False


class NotifyRequest(msgspec.Struct, forbid_unknown_fields=True):
    """A batch of notifications from one service (``notify.send`` / ``POST /v1/notifications``)."""

    service: ServiceName
    notifications: Annotated[list[Notification], msgspec.Meta(min_length=1)]


class NotificationResult(msgspec.Struct, omit_defaults=True):
    """The outcome of one item: ``accepted`` (stored durably, ``recipients`` users) or
    ``failed`` with an error ``code``. ``message_ids`` maps user -> message id (not filled for
    app broadcasts)."""

    id: str
    status: Literal["accepted", "failed"]
    recipients: int = 0
    message_ids: dict[str, str] = {}
    code: str | None = None
    message: str | None = None


class NotifyResult(msgspec.Struct):
    """Reply to a batch: one result per item, in request order."""

    accepted: int
    failed: int
    results: list[NotificationResult]


class AppUsersRequest(msgspec.Struct):
    """Storage RPC ``app_users``: users with a device of ``app``, after ``after`` in id order."""

    app: str
    after: str
    limit: int


class AppUsers(msgspec.Struct):
    """Reply to ``AppUsersRequest``: ``more`` when another page may follow."""

    users: list[str]
    more: bool


def notification_message_id(app: str, service: str, notification_id: str, user: str) -> str:
    """The server id of one recipient's copy of a notification: derived from the service's
    notification id, so a retry gets the same ids (JetStream and the store drop duplicates).
    ``:`` cannot occur in user or service ids, so no chat message id collides with it."""
    digest = hashlib.blake2b(f"{app}\x00svc:{service}\x00{notification_id}\x00{user}".encode(),
                             digest_size=16)
    return "n" + digest.hexdigest()
