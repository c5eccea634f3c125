"""Frames and envelopes of groups, contacts and presence: strict decoding and round trips."""

import pytest

from schemas.codec import decode_client_frame, decode_server_frame, encode_frame
from schemas.envelopes import decode_envelope, encode_envelope
from schemas.errors import ErrorCode, ProtocolError
from schemas.frames import Contact, Presence, PresenceSubscribe, Typing, UserTyping
from schemas.groups import AddMembers, GroupEnvelope
from schemas.ids import group_of


def test_client_frames_decode() -> None:
    assert decode_client_frame(b'{"type": "presence_subscribe", "users": ["a", "b"], "id": "1"}'
                               ) == PresenceSubscribe(users=["a", "b"], id="1")
    assert decode_client_frame(b'{"type": "typing", "conversation": "g:team"}') == Typing(
        conversation="g:team")


@pytest.mark.parametrize("data", [
    b'{"type": "presence_subscribe", "users": []}',
    b'{"type": "presence_subscribe", "users": ["a b"]}',
    b'{"type": "presence_subscribe", "users": "alice"}',
    b'{"type": "presence_unsubscribe"}',
    b'{"type": "typing"}',
    b'{"type": "typing", "conversation": "team"}',
    b'{"type": "typing", "conversation": "g:team", "active": "yes"}',
    b'{"type": "typing", "conversation": "g:team", "user": "mallory"}',
])
def test_bad_client_frames_are_invalid(data: bytes) -> None:
    with pytest.raises(ProtocolError) as info:
        decode_client_frame(data)
    assert info.value.code == ErrorCode.INVALID


def test_server_frames_round_trip() -> None:
    for frame in (Presence(user="a", online=False, last_active=5),
                  UserTyping(conversation="d:a:b", user="a", active=True),
                  Contact(user="b", state="incoming")):
        assert decode_server_frame(encode_frame(frame)) == frame


def test_group_envelope_round_trip() -> None:
    envelope = GroupEnvelope(id="e1", app="app", group="team", actor="alice",
                             op=AddMembers(users=["bob"]), ts=1)
    assert decode_envelope(encode_envelope(envelope)) == envelope


def test_group_of() -> None:
    assert group_of("g:team") == "team"
    assert group_of("d:a:b") is None and group_of("g:") is None and group_of("g:a:b") is None
