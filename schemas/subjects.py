"""NATS subject names. Services build subjects only through these helpers."""

from typing import Final

#: Partition ``p`` of accepted messages, receipts and group writes is the JetStream stream
#: ``MSGS_<p>`` with subjects ``msgs.<p>.<kind>`` (``schemas.partitions``). In permission
#: templates (``schemas.nats_permissions``) ``{p}`` stands for every partition.
MSGS_STREAM_PREFIX: Final = "MSGS_"
PARTITION_TOKEN: Final = "{p}"
CHAT: Final = "chat"
RECEIPT: Final = "receipt"
GROUP: Final = "group"
NOTIFY: Final = "notify"
#: ``AttachEnvelope``: a device's socket opened on a gateway, in every partition.
ATTACH: Final = "attach"


def msgs_stream(partition: int | str) -> str:
    """The stream of one partition."""
    return f"{MSGS_STREAM_PREFIX}{partition}"


def msgs_subject(partition: int | str, kind: str) -> str:
    """The subject of one kind of envelope (``CHAT``, ``RECEIPT``, ``GROUP``, ``NOTIFY``) in
    one partition."""
    return f"msgs.{partition}.{kind}"


def partition_of_stream(stream: str) -> int:
    """The partition a ``MSGS_<p>`` stream carries (``ValueError`` for any other name)."""
    if not stream.startswith(MSGS_STREAM_PREFIX):
        raise ValueError(f"not a partition stream: {stream!r}")
    return int(stream[len(MSGS_STREAM_PREFIX):])


#: Durable consumer names on each ``MSGS_<p>``.
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


#: The last hop: ``edge.<gateway id>`` (core NATS), where routers publish ``EdgeBatch``es
#: (``schemas.edge``) and only that gateway listens. Not under ``dlv.``: it names a gateway,
#: not a device.
EDGE_PREFIX: Final = "edge"


def edge_subject(gateway_id: str) -> str:
    """Core NATS subject of one gateway's deliveries (a gateway id is one token)."""
    return f"{EDGE_PREFIX}.{gateway_id}"


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


#: Published by the storage worker when a group changed (payload ``<app>.<group>``,
#: ``schemas.ids.scoped``); routers and gateways drop what they cached about it.
GROUPS_CHANGED: Final = "grp.changed"

#: Published by the storage worker when two users' relation changed (payload: a MessagePack
#: ``RelationChanged``); gateways drop the relations they cached.
CONTACTS_CHANGED: Final = "contacts.changed"


#: Ephemeral frames for users, addressed to the gateway that holds their sockets:
#: ``usr.<gateway id>`` (core NATS, ``schemas.edge.UserFrames``); never stored.
USER_FRAMES_PREFIX: Final = "usr"


def user_frames_subject(gateway_id: str) -> str:
    """Core NATS subject of ephemeral frames (typing, contact updates) for users with a socket
    on one gateway: only that gateway listens; any gateway publishes."""
    return f"{USER_FRAMES_PREFIX}.{gateway_id}"
