"""Partitions: how conversations map to streams, and what a ``seq`` is with P of them.

A deployment has P partitions (``partitions.count``, fixed for its life). A conversation
belongs to one partition, chosen by a stable hash of ``(app, conversation)``; partition ``p``
is the JetStream stream ``MSGS_<p>`` (subjects ``msgs.<p>.>``), consumed by one storage worker
and one router at a time (``runtime.partitions``).

A message's ``seq`` (its *position*) is ``stream_seq * P + p``: unique in the deployment,
increasing within a partition (so within every conversation), and with P = 1 the stream
sequence itself. Positions of two partitions are not comparable: a device's progress is one
position per partition (a *cursor*, ``list[int]`` indexed by partition), which clients hold as
an opaque string (``encode_cursor``).
"""

import base64
import binascii
import hashlib
from collections.abc import Sequence
from typing import Final

import msgspec

#: Upper bound of ``partitions.count``: each partition costs a stream and two consumers.
MAX_PARTITIONS: Final = 256
_CURSOR_PREFIX: Final = "c1."
#: An encoded cursor is at most this long (a bound for the ``sync`` frame's schema).
MAX_CURSOR_CHARS: Final = 4096


def partition_of(app: str, conversation: str, count: int) -> int:
    """The partition of a conversation: stable across processes, versions and machines."""
    if count == 1:
        return 0
    digest = hashlib.blake2b(f"{app}\x00{conversation}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % count


def position(stream_seq: int, partition: int, count: int) -> int:
    """The ``seq`` of the envelope at ``stream_seq`` in ``partition``'s stream."""
    return stream_seq * count + partition


def partition_of_position(seq: int, count: int) -> int:
    return seq % count


def stream_seq_of(seq: int, count: int) -> int:
    return seq // count


def empty_cursor(count: int) -> list[int]:
    return [0] * count


def encode_cursor(cursor: Sequence[int]) -> str:
    """The opaque form clients hold (``synced.cursor``, ``sync.after``)."""
    raw = msgspec.msgpack.encode(list(cursor))
    return _CURSOR_PREFIX + base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(text: str, count: int) -> list[int]:
    """A client's cursor; ``ValueError`` when it is not one this deployment issued (another
    partition count, or not a cursor at all)."""
    if not text.startswith(_CURSOR_PREFIX) or len(text) > MAX_CURSOR_CHARS:
        raise ValueError("not a sync cursor")
    body = text[len(_CURSOR_PREFIX):]
    try:
        raw = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
        cursor = msgspec.msgpack.decode(raw, type=list[int])
    except (binascii.Error, msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise ValueError("not a sync cursor") from exc
    if len(cursor) != count:
        raise ValueError("a cursor of another partition count")
    for partition, seq in enumerate(cursor):
        if seq < 0 or seq >= 2**63 or (seq and seq % count != partition):
            raise ValueError("not a sync cursor")
    return cursor
