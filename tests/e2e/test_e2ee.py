"""End-to-end encryption through a real system: 1:1 (Olm per device) and groups (Megolm),
new devices, removed members, tampering, replays, key changes, and the key directory's bad
input."""

import asyncio
import base64
from pathlib import Path

import aiohttp
import msgspec
import pytest

from client.crypto import wire
from client.crypto.machine import Decrypted, Undecryptable
from client.e2ee import ONE_TIME_KEYS, SecureClient
from schemas.frames import Message
from schemas.keys import DeviceKeys
from tests.e2e.e2ee_helpers import (
    close_all,
    next_chat,
    next_text,
    secure_device,
    secure_devices,
    signed_identity,
)
from tests.e2e.social_helpers import call, refused, wait_for
from tests.harness import System


def as_received(by: SecureClient, message: Message, body: bytes) -> Message:
    """``message`` as ``by`` would get it with ``body`` (to replay or tamper with it)."""
    return Message(message_id=message.message_id + "x", seq=message.seq,
                   conversation=message.conversation, kind="chat", sender=message.sender,
                   to=message.to, app=message.app, module=message.module, body=body,
                   ts=message.ts, receipt=False)


async def test_direct_message_reaches_every_device_and_only_as_ciphertext(
        system: System, tmp_path: Path) -> None:
    async with secure_devices(system, tmp_path, "alice-phone", "alice-laptop",
                              "bob-phone") as (alice, alice2, bob):
        accepted = await alice.send_text("bob", "hello bob")
        got = await next_chat(bob)
        assert isinstance(got, Decrypted)
        assert (got.text, got.sender, got.sender_device) == ("hello bob", "alice", "alice-phone")
        assert got.message_id == accepted.message_id
        assert await next_text(alice2) == "hello bob"  # the sender's other device too
        await bob.send_text("alice", "hi alice")  # the reply rides the session alice opened
        assert await next_text(alice) == "hi alice"
        assert await next_text(alice2) == "hi alice"
        # What the server stored for bob's device is an Olm ciphertext, not the text.
        status, item = await bob.client.api("GET", f"/v1/messages/{accepted.message_id}")
        assert status == 200 and isinstance(item, dict)
        stored = base64.b64decode(item["message"]["body"])
        assert isinstance(wire.decode_ciphertext(stored), wire.OlmCiphertext)
        assert b"hello bob" not in stored


async def test_new_device_reads_what_is_sent_after_it_registered(
        system: System, tmp_path: Path) -> None:
    async with secure_devices(system, tmp_path, "alice-phone", "bob-phone",
                              "carol-phone") as (alice, bob, carol):
        await call(alice.client, "POST", "/v1/groups",
                   {"id": "trio", "members": ["bob", "carol"]}, 201)
        await alice.send_text("bob", "before")
        await alice.send_group_text("trio", "group before")
        # Two conversations: their order relative to each other means nothing (protocol §6).
        assert {await next_text(bob), await next_text(bob)} == {"before", "group before"}
        bob_tablet = await secure_device(system, "bob", "bob-tablet", tmp_path)
        try:
            await alice.send_text("bob", "after")
            await alice.send_group_text("trio", "group after")
            after = {"after", "group after"}
            assert {await next_text(bob_tablet), await next_text(bob_tablet)} == after
            assert {await next_text(bob), await next_text(bob)} == after
            assert await next_text(carol) == "group before"
            assert await next_text(carol) == "group after"  # same session: no rotation
        finally:
            await close_all(bob_tablet)


async def test_removed_member_cannot_decrypt_what_is_sent_after(
        system: System, tmp_path: Path) -> None:
    async with secure_devices(system, tmp_path, "alice-phone", "bob-phone",
                              "carol-phone") as (alice, bob, carol):
        await call(alice.client, "POST", "/v1/groups",
                   {"id": "team", "members": ["bob", "carol"]}, 201)
        await alice.send_group_text("team", "everyone")
        assert await next_text(bob) == "everyone"
        assert await next_text(carol) == "everyone"
        await call(alice.client, "DELETE", "/v1/groups/team/members/carol")
        await alice.send_group_text("team", "without carol")
        got: Decrypted | Undecryptable | None = None
        while got is None:  # the system message of the removal, the new session's key
            received = await bob.client.next_message()
            got = bob.machine.decrypt(received) if received.kind == "chat" else None
        assert isinstance(got, Decrypted) and got.text == "without carol"
        # Carol holds every key she was ever given; the new message is under a session she
        # never got (the removal rotated it), even handed its exact bytes.
        leaked = carol.machine.decrypt(as_received(carol, received, received.body))
        assert isinstance(leaked, Undecryptable) and leaked.reason == "unknown_session"


async def test_tampered_and_replayed_ciphertext_are_refused_and_the_client_goes_on(
        system: System, tmp_path: Path) -> None:
    async with secure_devices(system, tmp_path, "alice-phone", "bob-phone") as (alice, bob):
        await alice.refresh(["bob", "alice"])
        payloads = alice.machine.encrypt_direct("d:alice:bob", ["bob"], "original")
        olm = wire.decode_ciphertext(payloads["bob-phone"])
        assert isinstance(olm, wire.OlmCiphertext)
        flipped = bytearray(olm.body)
        flipped[-5] ^= 0x01
        tampered = wire.encode(wire.OlmCiphertext(olm.sender_key, olm.type, bytes(flipped)))
        await alice.client.send("bob", payloads={"bob-phone": tampered})
        got = await next_chat(bob)
        assert isinstance(got, Undecryptable) and got.reason == "tampered", got
        await alice.client.send("bob", payloads=payloads)
        assert await next_text(bob) == "original"
        await alice.client.send("bob", payloads=payloads)  # the same ciphertext again
        got = await next_chat(bob)
        assert isinstance(got, Undecryptable) and got.reason == "replayed", got
        await alice.client.send("bob", b"plain text", payloads=None)
        got = await next_chat(bob)
        assert isinstance(got, Undecryptable) and got.reason == "not_encrypted", got
        # Groups: a replayed Megolm message, and one whose signature no longer checks.
        await call(alice.client, "POST", "/v1/groups", {"id": "pair", "members": ["bob"]}, 201)
        await alice.send_group_text("pair", "group original")
        assert await next_text(bob) == "group original"
        body = alice.machine.encrypt_group("g:pair", "group second")
        await alice.client.send("pair", body, kind="group")
        await alice.client.send("pair", body, kind="group")
        assert await next_text(bob) == "group second"
        got = await next_chat(bob)
        assert isinstance(got, Undecryptable) and got.reason == "replayed", got
        megolm = wire.decode_ciphertext(alice.machine.encrypt_group("g:pair", "third"))
        assert isinstance(megolm, wire.MegolmCiphertext)
        broken = bytearray(megolm.body)
        broken[12] ^= 0x01
        await alice.client.send("pair", wire.encode(wire.MegolmCiphertext(
            megolm.sender_key, megolm.session_id, bytes(broken))), kind="group")
        got = await next_chat(bob)
        assert isinstance(got, Undecryptable) and got.reason == "tampered", got
        await alice.send_text("bob", "still fine")
        assert await next_text(bob) == "still fine"


async def test_offline_device_gets_the_group_key_and_message_on_sync(
        system: System, tmp_path: Path) -> None:
    async with secure_devices(system, tmp_path, "alice-phone", "bob-phone") as (alice, bob):
        await call(alice.client, "POST", "/v1/groups", {"id": "off", "members": ["bob"]}, 201)
        await bob.client.close()  # offline: the key share and the message wait in its inbox
        await alice.send_group_text("off", "while you were away")
        await alice.send_text("bob", "direct while away")
        bob.client = await system.connect(bob.client.credentials)
        assert await next_text(bob) == "while you were away"
        assert await next_text(bob) == "direct while away"


async def test_state_survives_a_restart_of_the_client(system: System, tmp_path: Path) -> None:
    async with secure_devices(system, tmp_path, "alice-phone", "bob-phone") as (alice, bob):
        await alice.send_text("bob", "one")
        assert await next_text(bob) == "one"
        await bob.client.close()
        async with secure_devices(system, tmp_path, "bob-phone") as (again,):  # reloads the file
            await alice.send_text("bob", "two")
            assert await next_text(again) == "two"
            await again.send_text("alice", "three")
            assert await next_text(alice) == "three"


async def test_one_time_keys_are_topped_up_and_each_claimed_once(
        system: System, tmp_path: Path) -> None:
    bob = await secure_device(system, "bob", "bob-phone", tmp_path)
    others = [await system.connect(await system.device(f"u{i}", f"u{i}-d")) for i in range(3)]
    try:
        claims = await asyncio.gather(*(
            call(c, "POST", "/v1/keys/claim",
                 {"devices": [{"user": "bob", "device": "bob-phone"}]}) for c in others
            for _ in range(20)))
        ids = [c["keys"][0]["key_id"] for c in claims if not c["keys"][0].get("fallback")]
        assert len(ids) == ONE_TIME_KEYS and len(set(ids)) == ONE_TIME_KEYS
        assert all(c["keys"][0]["fallback"] for c in claims
                   if c["keys"][0].get("fallback"))  # past the last one: the fallback key
        low = await asyncio.wait_for(bob.client.keys_low.get(), 10)  # below keys.low_water
        assert low.device == "bob-phone" and low.one_time_keys_left == 9
        assert await bob.publish_keys() == ONE_TIME_KEYS  # topped up
        await bob.client.close()
        bob = await secure_device(system, "bob", "bob-phone", tmp_path)
        assert bob.client.welcome is not None
        assert bob.client.welcome.one_time_keys_left == ONE_TIME_KEYS
    finally:
        await close_all(bob)
        for client in others:
            await client.close()


async def test_changed_device_keys_are_flagged(system: System, tmp_path: Path) -> None:
    async with secure_devices(system, tmp_path, "alice-phone", "bob-phone") as (alice, bob):
        before = await alice.safety_number("bob")
        assert before == await bob.safety_number("alice")  # both ends read the same digits
        assert await alice.refresh(["bob"]) == []
        # The directory refuses other identity keys for a device that has some ...
        await refused(bob.client, "PUT", "/v1/keys",
                      {"device_keys": msgspec.to_builtins(signed_identity("bob", "bob-phone"))},
                      409, "conflict")
        # ... so a change is a directory that lies, or a device id re-created: the client
        # flags it, and the device is no longer verified.
        alice.machine.set_verified("bob")
        forged = signed_identity("bob", "bob-phone")
        changes = alice.machine.update_devices("bob", [DeviceKeys(
            user="bob", device="bob-phone", curve25519=forged.curve25519,
            ed25519=forged.ed25519, signature=forged.signature)])
        assert [(c.user, c.device) for c in changes] == [("bob", "bob-phone")]
        assert alice.machine.key_changes == changes
        assert not any(d.verified for d in alice.machine.devices_of("bob"))
        assert await alice.safety_number("bob") == before  # the directory's keys again
        assert [(c.user, c.device) for c in alice.machine.key_changes] == [
            ("bob", "bob-phone")] * 2  # and back: flagged as well


async def test_a_removed_device_leaves_the_directory_and_is_refused(
        system: System, tmp_path: Path) -> None:
    async with secure_devices(system, tmp_path, "alice-phone", "bob-phone",
                              "bob-tablet") as (alice, bob, tablet):
        await call(alice.client, "POST", "/v1/groups", {"id": "fam", "members": ["bob"]}, 201)
        await alice.send_group_text("fam", "to both")
        assert await next_text(tablet) == "to both"
        await refused(alice.client, "DELETE", "/v1/devices/bob-tablet", None, 404, "not_found")
        await refused(bob.client, "DELETE", "/v1/devices/nope", None, 404, "not_found")
        await refused(bob.client, "DELETE", "/v1/devices/a:b", None, 422, "invalid")
        await call(bob.client, "DELETE", "/v1/devices/bob-tablet", None, 204)
        await wait_for(lambda: tablet.client.closed)
        assert tablet.client.close_code == 4103  # disabled: do not reconnect
        with pytest.raises(aiohttp.WSServerHandshakeError) as refusal:  # its token is refused
            await system.connect(tablet.client.credentials)
        assert refusal.value.status == 403
        listed = await call(bob.client, "GET", "/v1/devices")
        assert [d["device"] for d in listed["devices"]] == ["bob-phone"]
        await alice.send_group_text("fam", "after removal")  # rotated: the tablet is gone
        assert [d.device for d in alice.machine.devices_of("bob")] == ["bob-phone"]
        assert await next_text(bob) == "to both"
        assert await next_text(bob) == "after removal"
