"""``device_list_changed`` through a real system: a device added to or removed from the key
directory is announced to the user's own sockets and to everyone who shares a direct
conversation, a group or a contact with the user, and to nobody else; the client refreshes
its directory from it, without a send."""

from pathlib import Path

from client.sdk import CourierClient
from schemas.frames import DeviceListChanged
from schemas.ids import group_conversation
from tests.e2e.e2ee_helpers import (
    close_all,
    next_text,
    secure_device,
    secure_devices,
    signed_identity,
)
from tests.e2e.social_helpers import call, next_of, wait_for
from tests.harness import System


async def told(client: CourierClient, user: str) -> DeviceListChanged:
    """The next ``device_list_changed`` about ``user`` (others skipped)."""
    return await next_of(client.device_lists, lambda frame: frame.user == user)


async def heard_until(client: CourierClient, sentinel: str) -> list[str]:
    """The users named by the frames that came before the next one about ``sentinel``."""
    users: list[str] = []
    while (frame := await next_of(client.device_lists, lambda _: True)).user != sentinel:
        users.append(frame.user)
    return users


async def make_contacts(a: CourierClient, b: CourierClient, user_b: str, user_a: str) -> None:
    await call(a, "POST", "/v1/contacts/requests", {"user": user_b})
    await next_of(b.contacts, lambda c: c.user == user_a)
    await call(b, "POST", f"/v1/contacts/requests/{user_a}/accept")
    await next_of(a.contacts, lambda c: c.user == user_b and c.state == "contact")


async def test_added_and_removed_devices_are_announced_to_who_shares_something(
        system: System, tmp_path: Path) -> None:
    async with secure_devices(system, tmp_path, "alice-phone", "bob-phone", "carol-phone",
                              "dave-phone", "eve-phone") as devices:
        alice, bob, carol, dave, eve = devices
        for device in devices:  # each heard of its own first device
            await told(device.client, device.user)
        await alice.send_text("bob", "hi")  # bob: a direct conversation
        assert await next_text(bob) == "hi"
        await call(alice.client, "POST", "/v1/groups", {"id": "club", "members": ["carol"]},
                   201)  # carol: a group
        await make_contacts(alice.client, dave.client, "dave", "alice")  # dave: a contact
        await wait_for(lambda: _has_conversation(alice.client, "d:alice:bob"))
        await carol.send_group_text("club", "before")  # carol's session reaches alice-phone
        assert await next_text(alice) == "before"

        tablet = await secure_device(system, "alice", "alice-tablet", tmp_path)
        try:
            for device in (alice, bob, carol, dave):
                assert await device.next_device_list_change() == ["alice"]
            # The directories show the new device, with a session, before any send.
            for device in (bob, carol, dave):
                assert {d.device for d in device.machine.devices_of("alice")} == {
                    "alice-phone", "alice-tablet"}
                assert not device.machine.missing_sessions(["alice"])
            eve_tablet = await secure_device(system, "eve", "eve-tablet", tmp_path)
            await close_all(eve_tablet)
            assert await heard_until(eve.client, "eve") == []  # eve shares nothing with alice

            await carol.send_group_text("club", "to both")  # its key reaches the tablet
            assert await next_text(tablet) == "to both"
            shared = carol.machine.group_session_id(group_conversation("club"))
            assert shared is not None
            await call(alice.client, "DELETE", "/v1/devices/alice-tablet", None, 204)
            for device in (alice, bob, carol, dave):
                assert await device.next_device_list_change() == ["alice"]
            for device in (bob, carol, dave):
                assert [d.device for d in device.machine.devices_of("alice")] == ["alice-phone"]
            # carol's group session went to the removed tablet: retired before her next send.
            assert carol.machine.group_session_id(group_conversation("club")) is None
            await call(eve.client, "DELETE", "/v1/devices/eve-tablet", None, 204)
            assert await heard_until(eve.client, "eve") == []
        finally:
            await close_all(tablet)


async def test_a_device_uploading_the_same_identity_keys_again_is_announced_once(
        system: System, tmp_path: Path) -> None:
    async with secure_devices(system, tmp_path, "alice-phone", "bob-phone") as (alice, bob):
        await told(bob.client, "bob")
        await call(alice.client, "POST", "/v1/groups", {"id": "pair", "members": ["bob"]}, 201)
        pc = await system.connect(await system.device("alice", "alice-pc"))
        try:
            keys = {"device_keys": signed_identity("alice", "alice-pc")}
            assert (await call(pc, "PUT", "/v1/keys", keys))["one_time_keys_left"] == 0
            await told(bob.client, "alice")
            await call(pc, "PUT", "/v1/keys", keys)  # the same keys: nothing new
            await call(pc, "PUT", "/v1/keys", {})  # an empty upload (the count): nothing
            bob_tablet = await secure_device(system, "bob", "bob-tablet", tmp_path)
            await close_all(bob_tablet)
            assert await heard_until(bob.client, "bob") == []  # the sentinel: bob's own device
        finally:
            await pc.close()


async def _has_conversation(client: CourierClient, conversation: str) -> bool:
    listed = await call(client, "GET", "/v1/conversations")
    return conversation in [c["conversation"] for c in listed["conversations"]]
