"""What an encrypted body is: the ciphertext a device puts in a ``send`` (``body`` or one of
its ``payloads``), and the plaintext inside it. Both are MessagePack; the server sees only the
outer ``Ciphertext``: the algorithm, the sender device's Curve25519 key, a Megolm session id,
and opaque bytes.

The plaintext names its conversation, sender and recipient, and the receiver checks each
against what the server says and what it knows of the keys, so the server can neither move a
ciphertext to another conversation nor pass one device's message off as another's.
"""

from typing import Final

import msgspec

#: Olm message types (vodozemac ``AnyOlmMessage.to_parts``).
PRE_KEY: Final = 0
NORMAL: Final = 1


class OlmCiphertext(msgspec.Struct, tag="olm", tag_field="alg"):
    """A pairwise Olm message for one device (a ``payloads`` entry)."""

    sender_key: str
    type: int
    body: bytes


class MegolmCiphertext(msgspec.Struct, tag="megolm", tag_field="alg"):
    """A Megolm message for every member device of a group (the shared ``body``)."""

    sender_key: str
    session_id: str
    body: bytes


Ciphertext = OlmCiphertext | MegolmCiphertext


class Text(msgspec.Struct, tag="text"):
    """A chat message."""

    text: str


class RoomKey(msgspec.Struct, tag="room_key"):
    """A Megolm session key for a group conversation, sent over Olm (never shown)."""

    session_id: str
    session_key: str


class OlmPlaintext(msgspec.Struct):
    """Inside an Olm message: who it is from and for, and what it carries."""

    conversation: str
    sender: str
    sender_device: str
    sender_ed25519: str
    recipient: str
    recipient_device: str
    recipient_ed25519: str
    content: Text | RoomKey


class MegolmPlaintext(msgspec.Struct):
    """Inside a Megolm message."""

    conversation: str
    sender: str
    sender_device: str
    content: Text


_ciphertext: msgspec.msgpack.Decoder[Ciphertext] = msgspec.msgpack.Decoder(Ciphertext)
_olm_plain = msgspec.msgpack.Decoder(OlmPlaintext)
_megolm_plain = msgspec.msgpack.Decoder(MegolmPlaintext)
encode = msgspec.msgpack.encode


def decode_ciphertext(data: bytes) -> Ciphertext:
    return _ciphertext.decode(data)


def decode_olm(data: bytes) -> OlmPlaintext:
    return _olm_plain.decode(data)


def decode_megolm(data: bytes) -> MegolmPlaintext:
    return _megolm_plain.decode(data)
