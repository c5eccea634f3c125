"""``OlmMachine`` without a server: the directory is simulated by handing keys across."""

from pathlib import Path

import pytest

from client.crypto.machine import Decrypted, OlmMachine, RotationPolicy, Undecryptable
from client.crypto.verify import safety_number
from schemas.frames import Destination, Message, Sender
from schemas.keys import ClaimedKey, DeviceKeys

KEY = bytes(32)


def directory_entry(machine: OlmMachine) -> DeviceKeys:
    identity = machine.identity_keys()
    assert identity is not None
    return DeviceKeys(user=machine.user, device=machine.device, curve25519=identity.curve25519,
                      ed25519=identity.ed25519, signature=identity.signature)


def claim(machine: OlmMachine) -> ClaimedKey:
    key = machine.new_one_time_keys(1)[0]
    return ClaimedKey(user=machine.user, device=machine.device, key_id=key.key_id, key=key.key,
                      signature=key.signature)


def introduce(sender: OlmMachine, *others: OlmMachine) -> None:
    for other in others:
        sender.update_devices(other.user, [directory_entry(other)])
        other.update_devices(sender.user, [directory_entry(sender)])
        sender.add_claimed_keys([claim(other)])
        other.mark_published()


def frame(sender: OlmMachine, conversation: str, body: bytes, n: int = 1) -> Message:
    return Message(message_id=f"m{n}", seq=n, conversation=conversation, kind="chat",
                   sender=Sender(user=sender.user, device=sender.device),
                   to=Destination(kind="user", id="x"), app="default", module="chat",
                   body=body, ts=0, receipt=False)


def text_of(result: Decrypted | Undecryptable | None) -> str:
    assert isinstance(result, Decrypted), result
    return result.text


def test_olm_roundtrip_and_the_checks_on_who_and_where() -> None:
    alice = OlmMachine.create("alice", "a1", KEY)
    bob = OlmMachine.create("bob", "b1", KEY)
    carol = OlmMachine.create("carol", "c1", KEY)
    introduce(alice, bob)
    carol.update_devices("alice", [directory_entry(alice)])
    body = alice.encrypt_direct("d:alice:bob", ["bob"], "hi")["b1"]
    wrong_place = bob.decrypt(frame(alice, "d:alice:carol", body))
    assert isinstance(wrong_place, Undecryptable) and wrong_place.reason == "sender_mismatch"
    again = bob.decrypt(frame(alice, "d:alice:bob", body, 5))  # the first delivery decides
    assert isinstance(again, Undecryptable) and again.reason == "replayed"
    body = alice.encrypt_direct("d:alice:bob", ["bob"], "hi")["b1"]
    assert text_of(bob.decrypt(frame(alice, "d:alice:bob", body, 2))) == "hi"
    stolen = carol.decrypt(frame(alice, "d:alice:bob", body, 3))  # another device's payload
    assert isinstance(stolen, Undecryptable) and stolen.reason in ("tampered", "no_session")
    assert bob.decrypt(frame(alice, "d:alice:bob", body, 2)) is None  # a redelivery
    stranger = OlmMachine.create("mallory", "m1", KEY)
    unknown = bob.decrypt(frame(stranger, "d:bob:mallory", body, 4))
    assert isinstance(unknown, Undecryptable) and unknown.reason == "unknown_device"


@pytest.mark.parametrize("policy, clock_step", [
    (RotationPolicy(max_messages=2), 0.0), (RotationPolicy(max_age_s=60), 61.0)])
def test_group_sessions_rotate_by_count_and_by_age(policy: RotationPolicy,
                                                   clock_step: float) -> None:
    now = [1_000_000.0]
    alice = OlmMachine.create("alice", "a1", KEY, policy=policy, clock=lambda: now[0])
    bob = OlmMachine.create("bob", "b1", KEY)
    introduce(alice, bob)
    first = alice.share_group_key("g:t", ["bob"])
    assert list(first) == ["b1"]
    assert bob.decrypt(frame(alice, "g:t", first["b1"])) is None  # the room key
    for n in range(2):
        assert alice.share_group_key("g:t", ["bob"]) == {}  # nothing new to share ...
        body = alice.encrypt_group("g:t", f"m{n}")
        assert text_of(bob.decrypt(frame(alice, "g:t", body, 10 + n))) == f"m{n}"
        if clock_step:
            break
    now[0] += clock_step
    assert list(alice.share_group_key("g:t", ["bob"])) == ["b1"]  # ... until it rotates


def test_state_is_saved_and_needs_its_key(tmp_path: Path) -> None:
    path = tmp_path / "a1.e2ee"
    alice = OlmMachine.create("alice", "a1", KEY, path)
    bob = OlmMachine.create("bob", "b1", KEY)
    introduce(alice, bob)
    alice.save()
    assert path.stat().st_mode & 0o077 == 0
    again = OlmMachine.open("alice", "a1", KEY, path)
    assert again.ed25519 == alice.ed25519
    body = again.encrypt_direct("d:alice:bob", ["bob"], "after restart")["b1"]
    assert text_of(bob.decrypt(frame(again, "d:alice:bob", body))) == "after restart"
    with pytest.raises(ValueError):
        OlmMachine.open("alice", "a1", bytes([1]) * 32, path)
    with pytest.raises(ValueError):
        OlmMachine.open("bob", "a1", KEY, path)
    with pytest.raises(ValueError):
        OlmMachine.create("alice", "a1", b"short")


def test_bad_self_signatures_and_claimed_keys_are_ignored() -> None:
    alice = OlmMachine.create("alice", "a1", KEY)
    bob = OlmMachine.create("bob", "b1", KEY)
    entry = directory_entry(bob)
    as_other = DeviceKeys(user="bob", device="b2", curve25519=entry.curve25519,
                          ed25519=entry.ed25519, signature=entry.signature)
    alice.update_devices("bob", [as_other])  # signed for b1, presented as b2
    assert alice.devices_of("bob") == []
    alice.update_devices("bob", [entry])
    forged = claim(OlmMachine.create("bob", "b1", KEY))  # signed by another account
    alice.add_claimed_keys([forged])
    assert [d.device for d in alice.missing_sessions(["bob"])] == ["b1"]


def test_safety_numbers_agree_and_change_with_any_key() -> None:
    one = safety_number("alice", ["k1", "k2"], "bob", ["k3"])
    assert one == safety_number("bob", ["k3"], "alice", ["k2", "k1"])
    assert one != safety_number("alice", ["k1", "k2"], "bob", ["k4"])
    assert len(one.replace(" ", "")) == 60


def test_a_directory_refresh_without_a_device_retires_the_group_session_it_had() -> None:
    alice = OlmMachine.create("alice", "a1", KEY)
    bob, bob2, carol = (OlmMachine.create(user, device, KEY)
                        for user, device in (("bob", "b1"), ("bob", "b2"), ("carol", "c1")))
    b1, b2, c1 = (directory_entry(m) for m in (bob, bob2, carol))
    introduce(alice, bob, carol)
    alice.update_devices("bob", [b1, b2])
    alice.add_claimed_keys([claim(bob2)])
    assert set(alice.share_group_key("g:t", ["bob", "carol"])) == {"b1", "b2", "c1"}
    before = alice.group_session_id("g:t")
    assert before is not None
    alice.update_devices("carol", [c1])  # nothing gone: the session stays
    assert alice.group_session_id("g:t") == before
    alice.update_devices("bob", [b1])  # b2 was removed: retired before any send
    assert alice.group_session_id("g:t") is None
    assert set(alice.share_group_key("g:t", ["bob", "carol"])) == {"b1", "c1"}
    assert alice.group_session_id("g:t") not in (None, before)
