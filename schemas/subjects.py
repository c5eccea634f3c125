"""NATS subject names. Services build subjects only through these helpers."""

from typing import Final

#: JetStream stream holding every accepted message and receipt.
MSGS_STREAM: Final = "MSGS"
MSGS_SUBJECTS: Final = "msgs.>"
MSG_CHAT: Final = "msgs.chat"
MSG_RECEIPT: Final = "msgs.receipt"

#: Durable consumer names on ``MSGS``.
ROUTER_CONSUMER: Final = "router"
STORAGE_CONSUMER: Final = "storage"

#: Storage RPC (request/reply, queue group ``storage``): ``store.rpc.<operation>``.
STORE_RPC_PREFIX: Final = "store.rpc"
STORE_QUEUE: Final = "storage"

#: Published by the storage worker when a user's devices change (payload ``<app>.<user>``,
#: ``schemas.ids.scoped``); routers drop their cache.
DIRECTORY_CHANGED: Final = "dir.changed"

#: Dead letters: envelopes a worker gave up on, kept in the ``DLQ`` stream
#: (``schemas.dead_letters``).
DEAD_LETTER_PREFIX: Final = "dlq"


def deliver_subject(app: str, device_id: str) -> str:
    """Core NATS subject of one device's last hop: the gateway holding its socket listens.
    The app is a token of its own: device ids are per app."""
    return f"dlv.{app}.{device_id}"


#: Published by a gateway when a device connects (payload: the socket's session id) on
#: ``presence.connected.<app>.<device>``; the gateway holding an older socket of the same
#: device of the same app closes it with ``REPLACED``.
DEVICE_CONNECTED_PREFIX: Final = "presence.connected"


def device_connected(app: str, device_id: str) -> str:
    return f"{DEVICE_CONNECTED_PREFIX}.{app}.{device_id}"


def store_rpc(operation: str) -> str:
    """Subject of one storage RPC operation."""
    return f"{STORE_RPC_PREFIX}.{operation}"


def dead_letter(worker: str) -> str:
    """Where ``worker`` publishes envelopes it gave up on."""
    return f"{DEAD_LETTER_PREFIX}.{worker}"


#: Group writes on ``MSGS`` (``GroupEnvelope``), published by the storage worker.
MSG_GROUP: Final = "msgs.group"

#: Published by the storage worker when a group changed (payload ``<app>.<group>``,
#: ``schemas.ids.scoped``); routers and gateways drop what they cached about it.
GROUPS_CHANGED: Final = "grp.changed"

#: Published by the storage worker when two users' relation changed (payload: a MessagePack
#: ``RelationChanged``); gateways drop the relations they cached.
CONTACTS_CHANGED: Final = "contacts.changed"


def user_subject(app: str, user_id: str) -> str:
    """Core NATS subject of ephemeral frames for every connected device of a user (typing,
    contact updates): the gateways holding its sockets listen; nothing is stored. The app is
    a token of its own: user ids are per app."""
    return f"usr.{app}.{user_id}"
