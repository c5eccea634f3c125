"""Identifiers: their allowed shapes and the helpers that derive one id from others.

User, device, app, module and group ids appear in NATS subjects and storage keys, so they are
restricted to a subject-safe alphabet. Every id is
per app (the tenant): the same user, device or group id in two apps names two different things,
so services key everything by ``(app, id)``. Conversation ids are derived, never chosen by
clients:
``d:<user>:<user>`` (sorted) for a direct conversation, ``g:<group>`` for a group,
``n:<user>`` for the notifications services send to a user (one per user, its inbox).
"""

import hashlib
from typing import Annotated, Final

import msgspec

ID_PATTERN: Final = r"^[A-Za-z0-9_\-]{1,64}$"

UserId = Annotated[str, msgspec.Meta(pattern=ID_PATTERN, description="A user id.")]
DeviceId = Annotated[str, msgspec.Meta(pattern=ID_PATTERN, description="A device id.")]
AppId = Annotated[str, msgspec.Meta(pattern=ID_PATTERN, description="An app id.")]
ModuleId = Annotated[str, msgspec.Meta(pattern=ID_PATTERN, description="A module (feature) id.")]
GroupId = Annotated[str, msgspec.Meta(pattern=ID_PATTERN, description="A group id.")]
ClientId = Annotated[
    str,
    msgspec.Meta(
        min_length=1,
        max_length=64,
        description="Chosen by the sending client, unique per sender; a retry reuses it.",
    ),
]
ConversationId = Annotated[
    str,
    msgspec.Meta(
        pattern=r"^(d:[A-Za-z0-9_\-]{1,64}:[A-Za-z0-9_\-]{1,64}|[gn]:[A-Za-z0-9_\-]{1,64})$",
        description="d:<user>:<user> for direct conversations, g:<group> for groups, "
                    "n:<user> for a user's notifications.",
    ),
]


def direct_conversation(a: str, b: str) -> str:
    """The id of the direct conversation between two users (order of arguments is irrelevant)."""
    first, second = sorted((a, b))
    return f"d:{first}:{second}"


def group_conversation(group_id: str) -> str:
    """The id of a group's conversation."""
    return f"g:{group_id}"


def group_of(conversation: str) -> str | None:
    """The group of a group conversation id, or None for any other id."""
    kind, sep, group = conversation.partition(":")
    if kind != "g" or not sep or not group or ":" in group:
        return None
    return group


def notification_conversation(user: str) -> str:
    """The id of a user's notification conversation (what services send to the user)."""
    return f"n:{user}"


def notification_members(conversation: str) -> tuple[str] | None:
    """The one user of a notification conversation id, or None for any other id."""
    kind, sep, user = conversation.partition(":")
    if kind != "n" or not sep or not user or ":" in user:
        return None
    return (user,)


def direct_members(conversation: str) -> tuple[str, str] | None:
    """The two users of a direct conversation id, or None for any other id."""
    parts = conversation.split(":")
    if len(parts) != 3 or parts[0] != "d":
        return None
    return parts[1], parts[2]


def scoped(app: str, name: str) -> str:
    """``<app>.<name>``: a user, device or group id with its app, where one string must name
    it deployment-wide (invalidation payloads, KV keys). Ids cannot contain ``.``."""
    return f"{app}.{name}"


def unscoped(key: str) -> tuple[str, str]:
    """The app and the id of a ``scoped`` string."""
    app, _, name = key.partition(".")
    return app, name


def message_id(app: str, sender: str, client_id: str) -> str:
    """The server id of a message: derived from its sender's client id.

    Deterministic so that a client retry with the same client id gets the same server id on
    every gateway, across restarts, and the store can drop the duplicate by primary key.
    """
    digest = hashlib.blake2b(f"{app}\x00{sender}\x00{client_id}".encode(), digest_size=16)
    return "m" + digest.hexdigest()
