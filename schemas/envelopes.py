"""What flows on the partition streams ``MSGS_<p>``, MessagePack-encoded.

An envelope is business-agnostic: type, source, destination, app and module ids, opaque body,
protocol version, server id, client id, timestamps, expiry and whether a receipt is wanted.
The router and the storage worker both consume every envelope; neither parses ``body``.
"""

from typing import Annotated, Final, Literal

import msgspec

from schemas.bounds import Count
from schemas.edge import GATEWAY_ID_PATTERN
from schemas.frames import AckItem, Destination, Message, Sender
from schemas.groups import GroupEnvelope
from schemas.ids import AppId, DeviceId, UserId
from schemas.version import PROTOCOL_VERSION

MessageKind = Literal["chat", "notification", "system"]


class MessageEnvelope(msgspec.Struct, tag="msg", tag_field="t", omit_defaults=True):
    """An accepted message. ``id`` is the server id; its stream sequence is its ``seq``."""

    id: str
    kind: MessageKind
    app: str
    module: str
    sender: Sender
    to: Destination
    conversation: str
    ts: Count
    receipt: bool
    body: bytes | None = None
    payloads: dict[str, bytes] | None = None
    client_id: str | None = None
    expires_at: Count | None = None
    gateway: str | None = None
    v: Count = PROTOCOL_VERSION

    def body_for(self, device: str) -> bytes | None:
        """The ciphertext meant for ``device``: the shared body or its own payload."""
        if self.body is not None:
            return self.body
        if self.payloads is not None:
            return self.payloads.get(device)
        return None


class ReceiptEnvelope(msgspec.Struct, tag="rcpt", tag_field="t", omit_defaults=True):
    """A device acknowledged messages (``delivered``) or its user moved a read marker
    (``read``: ``conversation`` up to ``seq``)."""

    status: Literal["delivered", "read"]
    app: str
    by_user: str
    by_device: str
    ts: Count
    items: list[AckItem] = []
    conversation: str | None = None
    seq: Count | None = None
    v: Count = PROTOCOL_VERSION


class DeviceAcks(msgspec.Struct, omit_defaults=True):
    """The messages one device acknowledged, in one ``ReceiptBatch``. ``app``, ``user`` and
    ``device`` come from the token of the socket that sent the acks."""

    app: AppId
    user: UserId
    device: DeviceId
    items: list[AckItem]


class ReceiptBatch(msgspec.Struct, tag="acks", tag_field="t", omit_defaults=True):
    """The acks one gateway received during one flush tick for one partition, from every
    device (``gateway.ack_flush_ms``): the ``delivered`` receipts of all of them in one
    envelope. Each entry is applied as a ``delivered`` ``ReceiptEnvelope`` of its device
    would be; the router coalesces the receipts to senders across the whole batch."""

    ts: Count
    entries: list[DeviceAcks]
    gateway: str | None = None
    v: Count = PROTOCOL_VERSION


class AttachEnvelope(msgspec.Struct, tag="att", tag_field="t", omit_defaults=True):
    """A device's socket opened on ``gateway`` (``msgs.<p>.attach``, published into every
    partition once the socket is registered there). Routers send the partition's messages
    for ``device`` that follow it in the stream to that gateway; the storage worker stores
    nothing of it. ``presence_rev`` (the revision of the device's presence key the gateway
    wrote just before) orders two sockets of one device, whatever the order their markers
    reached a partition in: the higher one is the newer socket."""

    app: AppId
    user: UserId
    device: DeviceId
    gateway: Annotated[str, msgspec.Meta(pattern=GATEWAY_ID_PATTERN)]
    session: Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
    presence_rev: Count
    ts: Count
    v: Count = PROTOCOL_VERSION


#: ``GroupEnvelope`` (group writes, ``msgs.group``) is defined in ``schemas.groups``.
Envelope = MessageEnvelope | ReceiptEnvelope | ReceiptBatch | GroupEnvelope | AttachEnvelope

_encoder: Final = msgspec.msgpack.Encoder()
_decoder: Final[msgspec.msgpack.Decoder[Envelope]] = msgspec.msgpack.Decoder(Envelope)


def encode_envelope(envelope: Envelope) -> bytes:
    """MessagePack bytes of an envelope."""
    return _encoder.encode(envelope)


def decode_envelope(data: bytes) -> Envelope:
    """Decode an envelope; raises ``msgspec.DecodeError``/``ValidationError`` on bad data."""
    return _decoder.decode(data)


def message_frame(envelope: MessageEnvelope, seq: int, body: bytes) -> Message:
    """The ``message`` frame a device receives for an envelope (``body`` chosen for it)."""
    return Message(
        message_id=envelope.id,
        seq=seq,
        conversation=envelope.conversation,
        kind=envelope.kind,
        sender=envelope.sender,
        to=envelope.to,
        app=envelope.app,
        module=envelope.module,
        body=body,
        ts=envelope.ts,
        receipt=envelope.receipt,
        client_id=envelope.client_id,
        expires_at=envelope.expires_at,
    )
