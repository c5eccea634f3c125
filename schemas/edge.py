"""The last hop to one gateway (core NATS): what a router publishes on ``edge.<gateway id>``,
and what a gateway publishes on ``usr.<gateway id>``.

One ``EdgeBatch`` per gateway per handled batch of a partition (split when it would exceed
the router's byte bound): its items in the order of the envelopes they came from, each one
frame encoded once with the devices of that gateway that receive it. The gateway hands the
frame to each listed device's socket and skips the devices it does not hold.

One ``UserFrames`` per gateway holding a socket of its users: an ephemeral frame (typing, a
contact update) from the gateway where it arose, for every socket of those users there.
"""

from typing import Annotated, Final

import msgspec

from schemas.ids import ID_PATTERN

#: Devices of one item. An item never lists more devices than one gateway holds; the bound
#: keeps a forged batch from making one item cost unbounded work.
MAX_ITEM_DEVICES: Final = 100_000
#: A gateway id is one subject token (``edge.<gateway id>``): the pattern of every id.
GATEWAY_ID_PATTERN: Final = ID_PATTERN


class EdgeItem(msgspec.Struct, array_like=True, frozen=True):
    """One server frame (JSON, exactly what the socket receives) for ``devices`` of ``app``.
    Ids are not pattern-checked here (a cost per device on the gateway's hot path): the
    gateway only looks them up among its sockets, where a foreign string is a miss."""

    app: Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
    devices: Annotated[list[Annotated[str, msgspec.Meta(max_length=64)]],
                       msgspec.Meta(min_length=1, max_length=MAX_ITEM_DEVICES)]
    frame: Annotated[bytes, msgspec.Meta(min_length=1)]


class EdgeBatch(msgspec.Struct, array_like=True, frozen=True):
    """The items one router sends one gateway, in the order of their envelopes."""

    items: Annotated[list[EdgeItem], msgspec.Meta(min_length=1)]


#: Users of one ``UserFrames``: a publisher splits longer lists (a typing frame to a large
#: group) so a message stays far below NATS's payload limit.
MAX_FRAME_USERS: Final = 1000


class UserFrames(msgspec.Struct, array_like=True, frozen=True):
    """One server frame (JSON) for every socket of ``users`` of ``app`` on the receiving
    gateway; users it holds no socket of are skipped."""

    app: Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
    users: Annotated[list[Annotated[str, msgspec.Meta(max_length=64)]],
                     msgspec.Meta(min_length=1, max_length=MAX_FRAME_USERS)]
    frame: Annotated[bytes, msgspec.Meta(min_length=1)]


#: Bytes an ``EdgeBatch`` adds around its items, and an item around its frame and devices
#: (MessagePack array and string headers; generous), for the router's size bound.
BATCH_OVERHEAD: Final = 16
ITEM_OVERHEAD: Final = 16
DEVICE_OVERHEAD: Final = 4

_encoder: Final = msgspec.msgpack.Encoder()
_decoder: Final = msgspec.msgpack.Decoder(EdgeBatch)
_user_frames_decoder: Final = msgspec.msgpack.Decoder(UserFrames)


def encode_edge_batch(batch: EdgeBatch) -> bytes:
    return _encoder.encode(batch)


def decode_edge_batch(data: bytes) -> EdgeBatch:
    """Decode a batch; raises ``msgspec.DecodeError``/``ValidationError`` on bad data."""
    return _decoder.decode(data)


def encode_user_frames(frames: UserFrames) -> bytes:
    return _encoder.encode(frames)


def decode_user_frames(data: bytes) -> UserFrames:
    """Decode; raises ``msgspec.DecodeError``/``ValidationError`` on bad data."""
    return _user_frames_decoder.decode(data)


def item_size(app: str, devices: list[str], frame: bytes) -> int:
    """An upper bound of the bytes one item takes in an encoded batch."""
    return (ITEM_OVERHEAD + len(app) + len(frame)
            + sum(len(device) + DEVICE_OVERHEAD for device in devices))
