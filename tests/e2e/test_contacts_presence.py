"""Contacts, blocks, presence and typing through a real system: contacts hear each other's
presence (across gateways, and when a gateway dies), strangers and blocked users do not, a
blocked user's messages are refused, the stranger policy holds."""

import asyncio
import time
from pathlib import Path

import pytest

from client.sdk import ClientError, CourierClient
from schemas.errors import ErrorCode
from schemas.frames import Contact, Presence, UserTyping
from tests.conftest import store_env
from tests.e2e.social_helpers import call, next_of, refused, wait_for
from tests.harness import System

PRESENCE_TTL_S = 3.0  # COURIER_GATEWAY_PRESENCE_TTL_S in tests.harness


async def befriend(a: CourierClient, b: CourierClient) -> None:
    user_a, user_b = a.credentials.user, b.credentials.user
    entry = await call(a, "POST", "/v1/contacts/requests", {"user": user_b})
    assert entry == {"user": user_b, "state": "outgoing"}
    incoming = await next_of(b.contacts, lambda c: c.user == user_a)
    assert incoming == Contact(user=user_a, state="incoming")
    assert (await call(b, "POST", f"/v1/contacts/requests/{user_a}/accept"))["state"] == "contact"
    await next_of(a.contacts, lambda c: c.user == user_b and c.state == "contact")


async def send_error(client: CourierClient, to: str, kind: str = "user") -> str:
    with pytest.raises(ClientError) as info:
        await client.send(to, b"hello", kind=kind)
    return str(info.value.code)


async def test_contacts_hear_presence_and_typing_across_gateways(system: System) -> None:
    second = system.add_gateway()
    alice = await system.connect(await system.device("alice", "alice-1"))
    carol = await system.connect(await system.device("carol", "carol-1"))
    bob_creds = await system.device("bob", "bob-1")
    bob = await system.connect(bob_creds, url=second)
    try:
        await befriend(alice, bob)
        watched = await alice.presence_subscribe(["bob", "carol"])
        assert [(s.user, s.online) for s in watched.users] == [("bob", True)]
        assert watched.denied == ["carol"]  # not a contact
        assert (await carol.presence_subscribe(["bob"])).denied == ["bob"]

        await bob.send_typing("d:alice:bob")
        typing = await next_of(alice.typing, lambda t: True)
        assert typing == UserTyping(conversation="d:alice:bob", user="bob", active=True)

        await bob.close()
        offline = await next_of(alice.presence, lambda p: p.user == "bob")
        assert not offline.online and offline.last_active is not None
        assert offline.last_active > int(time.time() * 1000) - 10_000
        bob = await system.connect(bob_creds, url=second)
        assert (await next_of(alice.presence, lambda p: p.user == "bob")).online

        system.gateways[1][0].kill()  # SIGKILL: bob's gateway says no goodbye
        killed_at = time.monotonic()
        gone = await next_of(alice.presence, lambda p: p.user == "bob",
                             within=PRESENCE_TTL_S + 5)
        elapsed = time.monotonic() - killed_at
        assert not gone.online and elapsed <= PRESENCE_TTL_S + 2, elapsed
        await bob.abort()
        assert carol.presence.empty()  # a stranger heard nothing of it
        listed = await call(alice, "GET", "/v1/presence?users=bob,carol")
        assert [u["user"] for u in listed["users"]] == ["bob"] and listed["denied"] == ["carol"]
        assert listed["users"][0]["online"] is False
    finally:
        for client in (alice, carol, bob):
            await client.abort()


async def test_blocks_and_the_stranger_policy(tmp_path: Path,
                                              request: pytest.FixtureRequest) -> None:
    with System(tmp_path, {**store_env(request),
                           "COURIER_CONTACTS_STRANGERS": "contacts_only"}) as system:
        alice = await system.connect(await system.device("alice"))
        bob = await system.connect(await system.device("bob"))
        carol = await system.connect(await system.device("carol"))
        assert await send_error(alice, "carol") == ErrorCode.FORBIDDEN  # strangers
        await refused(alice, "POST", "/v1/contacts/requests", {"user": "alice"}, 422, "invalid")
        await refused(alice, "POST", "/v1/contacts/requests", {"user": "ghost"}, 404,
                      "not_found")
        await refused(alice, "POST", "/v1/contacts/requests/carol/accept", None, 404,
                      "not_found")
        await befriend(alice, bob)
        await refused(alice, "POST", "/v1/contacts/requests", {"user": "bob"}, 409, "conflict")
        assert (await alice.send("bob", b"hi friend")).seq > 0
        assert (await bob.next_message()).body == b"hi friend"
        assert [(c["user"], c["state"]) for c in (await call(bob, "GET", "/v1/contacts"))[
            "contacts"]] == [("alice", "contact")]

        # a declined and a cancelled request leave no trace
        await call(carol, "POST", "/v1/contacts/requests", {"user": "alice"})
        await call(alice, "POST", "/v1/contacts/requests/carol/decline")
        await call(carol, "POST", "/v1/contacts/requests", {"user": "alice"})
        await call(carol, "DELETE", "/v1/contacts/requests/alice")
        assert (await call(carol, "GET", "/v1/contacts"))["contacts"] == []

        blocked = await call(bob, "PUT", "/v1/blocks/alice")
        assert blocked == {"user": "alice", "state": "none", "blocked": True}
        assert await send_error(alice, "bob") == ErrorCode.FORBIDDEN
        assert await send_error(bob, "alice") == ErrorCode.FORBIDDEN  # unblock first
        await refused(alice, "POST", "/v1/contacts/requests", {"user": "bob"}, 403,
                      "forbidden")
        assert (await alice.presence_subscribe(["bob"])).denied == ["bob"]
        await alice.send_raw('{"type": "typing", "conversation": "d:alice:bob", "id": "t"}')
        error = await asyncio.wait_for(alice.errors.get(), 10)
        assert (error.code, error.id) == (ErrorCode.FORBIDDEN, "t")
        listed = await call(alice, "GET", "/v1/presence?users=bob")
        assert listed == {"users": [], "denied": ["bob"]}
        await call(bob, "DELETE", "/v1/blocks/alice")
        await refused(bob, "DELETE", "/v1/blocks/alice", None, 404, "not_found")
        assert await send_error(alice, "bob") == ErrorCode.FORBIDDEN  # no longer contacts
        await alice.ping()  # the connection kept working through every refusal
        for client in (alice, bob, carol):
            await client.close()


async def test_presence_follows_relation_changes(system: System) -> None:
    alice = await system.connect(await system.device("alice"))
    bob = await system.connect(await system.device("bob"))
    carol = await system.connect(await system.device("carol"))
    try:
        assert (await alice.presence_subscribe(["bob"])).denied == ["bob"]
        await befriend(alice, bob)
        now_visible = await next_of(alice.presence, lambda p: p.user == "bob")
        assert now_visible == Presence(user="bob", online=True)
        await befriend(alice, carol)
        assert [s.user for s in (await alice.presence_subscribe(["carol"])).users] == ["carol"]
        await alice.presence_unsubscribe(["bob"])
        await alice.ping()
        await bob.close()

        async def bob_offline() -> bool:
            listed = await call(alice, "GET", "/v1/presence?users=bob")
            return listed["users"][0]["online"] is False

        await wait_for(bob_offline)
        await carol.close()
        # frames go out in the order of the changes: bob's would have come before carol's
        after = await asyncio.wait_for(alice.presence.get(), 10)
        assert (after.user, after.online) == ("carol", False)
    finally:
        await alice.close()


async def test_a_block_holds_for_new_groups_while_shared_ones_go_on(system: System) -> None:
    """Issue 10, finding 5: the blocked user created a group with the blocker in it and
    messaged it. Now that is refused; a group they already shared still flows both ways."""
    alice = await system.connect(await system.device("nb-alice"))  # blocked by bob
    bob = await system.connect(await system.device("nb-bob"))
    carol = await system.connect(await system.device("nb-carol"))
    await call(carol, "POST", "/v1/groups",
               {"id": "nb-shared", "members": ["nb-alice", "nb-bob"]}, 201)
    assert (await bob.next_message()).kind == "system"  # the shared group's creation
    await call(bob, "PUT", "/v1/blocks/nb-alice")

    await refused(alice, "POST", "/v1/groups", {"id": "nb-bypass", "members": ["nb-bob"]},
                  403, "forbidden")
    await refused(alice, "POST", "/v1/groups",
                  {"id": "nb-bypass", "members": ["nb-carol", "nb-bob"]}, 403, "forbidden")
    await call(alice, "POST", "/v1/groups", {"id": "nb-mine", "members": ["nb-carol"]}, 201)
    await refused(alice, "POST", "/v1/groups/nb-mine/members", {"users": ["nb-bob"]}, 403,
                  "forbidden")
    assert await send_error(alice, "nb-bypass", kind="group") == ErrorCode.UNKNOWN_RECIPIENT

    sent = await alice.send("nb-shared", b"to the shared group", kind="group")
    got = await bob.next_message()  # the barrier: nothing from a bypass group came first
    assert (got.message_id, got.body, got.sender.user) == (
        sent.message_id, b"to the shared group", "nb-alice")
    await bob.send("nb-shared", b"and back", kind="group")
    replies = [await alice.next_message() for _ in range(3)]  # shared create, mine, bob's
    assert replies[-1].body == b"and back"
    groups = await call(bob, "GET", "/v1/groups")
    assert [g["id"] for g in groups["groups"]] == ["nb-shared"]
    mine = await call(alice, "GET", "/v1/groups/nb-mine")
    assert [m["user"] for m in mine["members"]] == ["nb-alice", "nb-carol"]
    for client in (alice, bob, carol):
        await client.close()
