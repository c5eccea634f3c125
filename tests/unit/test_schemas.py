"""Protocol types: strict decoding, round trips, and no drift from the exported JSON Schema."""

from pathlib import Path

import msgspec
import pytest

from schemas.codec import decode_client_frame, decode_server_frame, encode_frame
from schemas.envelopes import MessageEnvelope, decode_envelope, encode_envelope
from schemas.errors import ErrorCode, ProtocolError
from schemas.export import GROUPS, render
from schemas.frames import Destination, Message, Send, Sender
from schemas.ids import direct_conversation, direct_members, message_id

SCHEMA_DIR = Path(__file__).resolve().parents[2] / "docs" / "schema"


@pytest.mark.parametrize("name", sorted(GROUPS))
def test_exported_schema_matches_types(name: str) -> None:
    committed = (SCHEMA_DIR / f"{name}.schema.json").read_bytes()
    assert committed == render(GROUPS[name]), "run `make schemas` and commit docs/schema"


def test_send_round_trip_and_base64_body() -> None:
    frame = Send(client_id="c1", to=Destination(kind="user", id="bob"), body=b"\x00\xff",
                 id="r1")
    data = encode_frame(frame)
    assert b'"body":"AP8="' in data
    assert decode_client_frame(data) == frame


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (b"", ErrorCode.BAD_FRAME),
        (b"null", ErrorCode.BAD_FRAME),
        (b'"send"', ErrorCode.BAD_FRAME),
        (b'{"type": 1}', ErrorCode.BAD_FRAME),
        (b'{"type": "welcome"}', ErrorCode.UNKNOWN_TYPE),  # a server frame, not a client one
        (b'{"type": "ping", "id": 5}', ErrorCode.INVALID),
        (b'{"type": "ping", "extra": true}', ErrorCode.INVALID),
        (b'{"type": "sync", "after": "3"}', ErrorCode.INVALID),
        (b'{"type": "read", "conversation": "x:y", "seq": 1}', ErrorCode.INVALID),
    ],
)
def test_decode_errors_are_typed(data: bytes, code: ErrorCode) -> None:
    with pytest.raises(ProtocolError) as info:
        decode_client_frame(data)
    assert info.value.code == code


def test_server_frame_round_trip() -> None:
    message = Message(message_id="m1", seq=3, conversation="d:a:b", kind="chat",
                      sender=Sender(user="a", device="d"), to=Destination(kind="user", id="b"),
                      app="app", module="chat", body=b"x", ts=1, receipt=True)
    assert decode_server_frame(encode_frame(message)) == message


def test_envelope_round_trip_and_body_choice() -> None:
    env = MessageEnvelope(id="m", kind="chat", app="a", module="m", sender=Sender(user="u"),
                          to=Destination(kind="user", id="v"), conversation="d:u:v", ts=1,
                          receipt=False, payloads={"d1": b"one"})
    decoded = decode_envelope(encode_envelope(env))
    assert decoded == env
    assert isinstance(decoded, MessageEnvelope)
    assert decoded.body_for("d1") == b"one" and decoded.body_for("d2") is None
    with pytest.raises((msgspec.DecodeError, msgspec.ValidationError)):
        decode_envelope(b"\xc1garbage")


def test_ids() -> None:
    assert direct_conversation("bob", "alice") == direct_conversation("alice", "bob")
    assert direct_members("d:alice:bob") == ("alice", "bob")
    assert direct_members("g:team") is None
    assert message_id("app", "alice", "c1") == message_id("app", "alice", "c1")
    assert message_id("app", "alice", "c1") != message_id("app", "bob", "c1")


def test_clients_tolerate_newer_servers() -> None:
    assert decode_server_frame(b'{"type": "pong", "id": "1", "added_later": 5}') is not None
    assert decode_server_frame(b'{"type": "frame_from_the_future"}') is None
    with pytest.raises(msgspec.ValidationError):
        decode_server_frame(b'{"type": "pong", "id": 5}')
