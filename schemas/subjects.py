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

#: Published by the storage worker when a user's devices change; routers drop their cache.
DIRECTORY_CHANGED: Final = "dir.changed"

#: Dead letters: envelopes a worker could not process after its retries.
DEAD_LETTER_PREFIX: Final = "dlq"


def deliver_subject(device_id: str) -> str:
    """Core NATS subject of one device's last hop: the gateway holding its socket listens."""
    return f"dlv.{device_id}"


def store_rpc(operation: str) -> str:
    """Subject of one storage RPC operation."""
    return f"{STORE_RPC_PREFIX}.{operation}"


def dead_letter(worker: str) -> str:
    """Where ``worker`` publishes envelopes it gave up on."""
    return f"{DEAD_LETTER_PREFIX}.{worker}"
