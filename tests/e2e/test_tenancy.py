"""Tenant isolation through the real system: the app of a token is part of every key, so a
token of app ``otherapp`` with the same user and device ids as users of app ``default`` reads,
reaches and receives nothing of theirs (issue 10, finding 2).

App ``default`` is the one the dev registration endpoint mints tokens for; tokens of
``otherapp`` are minted with the system's own secret, as an app's backend would.
"""

import msgspec
import pytest
from nats.js.errors import KeyNotFoundError

from client.sdk import ClientError, CourierClient, Credentials
from gateway.auth import TokenIssuer
from runtime.config import AuthConfig
from runtime.kv import ensure_bucket
from schemas.control import CONTROL, ControlState, control_key
from schemas.ids import direct_conversation
from tests.e2e.social_helpers import call, refused
from tests.e2e.test_control import upgrade_refused
from tests.harness import System

OTHER = "otherapp"
AB = direct_conversation("alice", "bob")


def other_app(system: System, user: str, device: str) -> Credentials:
    """Credentials of ``user``'s ``device`` in app ``otherapp``."""
    token, _ = TokenIssuer(AuthConfig(secret=system.secret)).issue(user, device, OTHER)
    return Credentials(user=user, device=device, token=token)


async def test_a_token_of_another_app_reads_and_reaches_nothing(system: System) -> None:
    # app "default": alice and bob are contacts, talk directly and in group "team"
    alice = await system.connect(await system.device("alice", "a1"))
    bob = await system.connect(await system.device("bob", "b1"))
    await system.device("carol", "c1")
    clients: list[CourierClient] = [alice, bob]
    try:
        await call(alice, "POST", "/v1/contacts/requests", {"user": "bob"})
        await call(bob, "POST", "/v1/contacts/requests/alice/accept")
        await call(alice, "POST", "/v1/groups", {"id": "team", "members": ["bob"]}, 201)
        await bob.next_message()  # the group's creation
        direct = await alice.send("bob", b"secret direct")
        assert (await bob.next_message()).message_id == direct.message_id
        grouped = await alice.send("team", b"secret group", kind="group")
        assert (await bob.next_message()).message_id == grouped.message_id

        # the same user and device ids in app "otherapp": other users, other devices
        mallory = await system.connect(other_app(system, "alice", "a1"))
        other_bob = await system.connect(other_app(system, "bob", "b1"))
        clients += [mallory, other_bob]
        assert mallory.welcome is not None
        assert (mallory.welcome.user, mallory.welcome.app) == ("alice", OTHER)

        # every read of app default's data sees nothing or is refused
        assert await call(mallory, "GET", "/v1/conversations") == {"conversations": []}
        page = await call(mallory, "GET", f"/v1/conversations/{AB}/messages")
        assert page["items"] == []
        await refused(mallory, "GET", "/v1/conversations/g:team/messages", None, 403,
                      "not_member")
        assert await call(mallory, "GET", "/v1/groups") == {"groups": []}
        await refused(mallory, "GET", "/v1/groups/team", None, 404, "not_found")
        await refused(mallory, "GET", f"/v1/messages/{direct.message_id}", None, 404,
                      "not_found")
        await refused(mallory, "GET", f"/v1/messages/{grouped.message_id}", None, 404,
                      "not_found")
        assert await call(mallory, "GET", "/v1/contacts") == {"contacts": []}
        presence = await call(mallory, "GET", "/v1/presence?users=bob")
        assert presence["users"] == [] and presence["denied"] == ["bob"]
        await refused(mallory, "GET",
                      f"/v1/conversations/g:team/messages/{grouped.message_id}/receipts",
                      None, 404, "not_found")

        # nor can it reach app default's users: carol exists there only
        with pytest.raises(ClientError) as info:
            await mallory.send("carol", b"hello?")
        assert info.value.error.code == "unknown_recipient"
        with pytest.raises(ClientError) as info:
            await mallory.send("c1", b"hello?", kind="device")
        assert info.value.error.code == "unknown_recipient"
        with pytest.raises(ClientError) as info:
            await mallory.send("team", b"hello?", kind="group")
        assert info.value.error.code == "unknown_recipient"
        await refused(mallory, "POST", "/v1/groups", {"id": "lure", "members": ["carol"]},
                      404, "not_found")
        await refused(mallory, "POST", "/v1/contacts/requests", {"user": "carol"}, 404,
                      "not_found")

        # app default's traffic reaches app default's bob only, not otherapp's bob (whose
        # device has the same id); the sentinel of otherapp is what otherapp's bob gets
        direct = await alice.send("bob", b"later direct")
        grouped = await alice.send("team", b"later group", kind="group")
        assert (await bob.next_message()).message_id == direct.message_id
        assert (await bob.next_message()).message_id == grouped.message_id
        sentinel = await mallory.send("bob", b"sentinel")
        got = await other_bob.next_message()
        assert (got.message_id, got.app) == (sentinel.message_id, OTHER)
        assert not bob.closed  # a device of another app with the same id replaced nothing
        # and app default's bob got nothing of otherapp's: its own sentinel comes next
        mine = await alice.send("bob", b"default sentinel")
        assert (await bob.next_message()).message_id == mine.message_id
        # otherapp's conversation is its own: app default's history does not show it
        page = await call(bob, "GET", f"/v1/conversations/{AB}/messages")
        assert [item["message"]["app"] for item in page["items"]] == ["default"] * 3
    finally:
        for client in clients:
            await client.close()


async def test_control_keys_written_without_an_app_stay_in_force(system: System) -> None:
    """A device disabled before control keys carried the app (key ``device.<id>``) belongs to
    the default app: a gateway starting rewrites the key, and the device stays refused."""
    creds = await system.device("bob", "bob-phone")
    nc = await system.nats_client("gateway")  # the credential that writes control state
    try:
        kv = await ensure_bucket(nc.jetstream(), CONTROL, 1)
        await kv.put("device.bob-phone", msgspec.json.encode(ControlState(
            kind="device", id="bob-phone", disabled_at=1, by="ops")))
        url = system.add_gateway()  # migrates the control keys before it serves
        entry = await kv.get(control_key("device", "bob-phone", "default"))
        assert entry.value is not None
        state = msgspec.json.decode(entry.value, type=ControlState)
        assert (state.kind, state.id, state.app, state.by) == ("device", "bob-phone", "default",
                                                               "ops")
        with pytest.raises(KeyNotFoundError):
            await kv.get("device.bob-phone")
        for gateway in (url, system.url):  # both views see the default app's device disabled
            assert await upgrade_refused(gateway, creds) == (403, "disabled")
        other = await system.connect(other_app(system, "bob", "bob-phone"))  # another device
        await other.close()
    finally:
        await nc.close()
