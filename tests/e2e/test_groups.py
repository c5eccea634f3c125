"""Groups through a real system: fan-out to every device of every member, membership changes
in the group's order, history from the join on, receipt counters."""

import asyncio
import json

import pytest

from client.sdk import ClientError, CourierClient
from schemas.errors import ErrorCode
from schemas.frames import Message
from tests.e2e.social_helpers import call, refused, wait_for
from tests.harness import System

MEMBERS = 50
SENDERS = 3
PER_SENDER = 10


def event_of(message: Message) -> dict[str, object]:
    assert message.kind == "system" and message.module == "groups"
    event: dict[str, object] = json.loads(message.body)
    return event


async def receive(client: CourierClient, count: int) -> list[Message]:
    return [await client.next_message() for _ in range(count)]


async def test_group_of_50_reaches_every_device_once_in_order(system: System) -> None:
    users = [f"m{i:02d}" for i in range(MEMBERS)]
    creds = {}
    for user in users:
        creds[f"{user}-a"] = await system.device(user, f"{user}-a")
    for user in users[1:5]:  # a few members have a second device
        creds[f"{user}-b"] = await system.device(user, f"{user}-b")
    offline = {name for name in creds if int(name[1:3]) % 4 == 3}  # 13 devices connect later
    online = {name: await system.connect(c) for name, c in creds.items() if name not in offline}
    owner = online["m00-a"]
    try:
        info = await call(owner, "POST", "/v1/groups",
                          {"id": "big", "name": "Big", "members": users[1:]}, 201)
        assert len(info["members"]) == MEMBERS and info["owner"] == "m00"

        async def send_all(sender: CourierClient, prefix: str) -> list[int]:
            return [(await sender.send("big", f"{prefix}{i}".encode(), kind="group")).seq
                    for i in range(PER_SENDER)]

        senders = {"m00-a": "x", "m01-a": "y", "m02-a": "z"}
        sent = await asyncio.gather(*(send_all(online[n], p) for n, p in senders.items()))
        all_seqs = sorted(seq for seqs in sent for seq in seqs)

        async def check(name: str, client: CourierClient) -> None:
            own = sent[list(senders).index(name)] if name in senders else []
            expected = 1 + SENDERS * PER_SENDER - len(own)
            got = await receive(client, expected)
            seqs = [m.seq for m in got]
            assert seqs == sorted(seqs) and len(set(seqs)) == expected, name
            assert event_of(got[0])["event"] == "create"
            assert seqs[1:] == [s for s in all_seqs if s not in own], name
            assert {m.conversation for m in got} == {"g:big"}
            assert client.duplicates == 0, name

        for name, client in online.items():  # live
            await check(name, client)
        for name in offline:  # from their backlog, once the live fan-out is over
            online[name] = await system.connect(creds[name])
            await check(name, online[name])
        await asyncio.sleep(0.2)
        assert all(client.pending_messages() == 0 for client in online.values())
    finally:
        for client in online.values():
            await client.close()


async def test_membership_changes_in_order_with_messages(system: System) -> None:
    alice = await system.connect(await system.device("alice"))
    bob = await system.connect(await system.device("bob"))
    carol = await system.connect(await system.device("carol"))
    dave_creds = await system.device("dave")
    try:
        await call(alice, "POST", "/v1/groups", {"id": "team", "members": ["bob", "carol"]},
                   201)
        for client in (alice, bob, carol):
            assert event_of(await client.next_message())["event"] == "create"
        first = await alice.send("team", b"m1", kind="group")
        await call(alice, "PUT", "/v1/groups/team/members/bob/role", {"role": "admin"})
        removed = await call(bob, "DELETE", "/v1/groups/team/members/carol")
        assert [m["user"] for m in removed["members"]] == ["alice", "bob"]
        second = await alice.send("team", b"m2", kind="group")
        for client in (bob, carol):
            got = await receive(client, 3)
            assert got[0].body == b"m1"
            assert event_of(got[1])["event"] == "set_role"
            assert event_of(got[2]) == {"event": "remove", "group": "team", "actor": "bob",
                                        "users": ["carol"]}
        assert (await bob.next_message()).body == b"m2"
        await bob.send("team", b"m3", kind="group")
        got = await receive(alice, 3)  # the system events, then m3: the router is past m2
        assert [m.kind for m in got] == ["system", "system", "chat"] and got[2].body == b"m3"
        await carol.ping()
        assert carol.pending_messages() == 0  # nothing after its removal
        page = await call(carol, "GET", "/v1/conversations/g:team/messages")
        bodies = [item["message"]["body"] for item in page["items"]]
        assert len(bodies) == 4 and page["items"][1]["message"]["seq"] == first.seq
        assert all(item["message"]["seq"] < second.seq for item in page["items"])
        with pytest.raises(ClientError) as info:
            await carol.send("team", b"let me in", kind="group")
        assert info.value.code == ErrorCode.NOT_MEMBER
        await refused(carol, "GET", "/v1/groups/team", None, 403, "not_member")

        joined = await call(alice, "POST", "/v1/groups/team/members", {"users": ["dave"]})
        join_seq = joined["version"]
        fourth = await alice.send("team", b"m4", kind="group")
        dave = await system.connect(dave_creds)
        try:
            got = await receive(dave, 2)
            assert event_of(got[0])["event"] == "add" and got[0].seq == join_seq
            assert got[1].body == b"m4"
            history = await call(dave, "GET", "/v1/conversations/g:team/messages")
            assert [i["message"]["seq"] for i in history["items"]] == [join_seq, fourth.seq]
            before = await call(dave, "GET", f"/v1/conversations/g:team/messages?before={join_seq}")
            assert before["items"] == []
            forward = await call(dave, "GET", "/v1/conversations/g:team/messages?after=0")
            assert [i["message"]["seq"] for i in forward["items"]] == [join_seq, fourth.seq]
            await refused(dave, "GET", f"/v1/conversations/g:team/messages/{first.message_id}"
                          "/receipts", None, 403, "not_member")

            receipts = f"/v1/conversations/g:team/messages/{fourth.message_id}/receipts"
            assert [m.body for m in await receive(bob, 2)][1] == b"m4"

            async def delivered_to_all() -> bool:
                counts = await call(alice, "GET", receipts)
                assert counts["recipients"] == 2  # bob and dave, not carol nor the sender
                return bool(counts["delivered_to_all"])

            await wait_for(delivered_to_all)
            await bob.read("g:team", fourth.seq)

            async def read_once() -> bool:
                return bool((await call(alice, "GET", receipts))["read"] == 1)

            await wait_for(read_once)
            counts = await call(bob, "GET", receipts)
            assert (counts["delivered"], counts["read"], counts["read_by_all"]) == (2, 1, False)
        finally:
            await dave.close()
        groups = await call(dave, "GET", "/v1/groups")
        assert [(g["id"], g["role"], g["members"]) for g in groups["groups"]] == [
            ("team", "member", 3)]
        left = await call(alice, "POST", "/v1/groups/team/leave")
        assert left["owner"] == "bob"  # the admin takes over
        await refused(alice, "GET", "/v1/groups/team", None, 403, "not_member")
    finally:
        for client in (alice, bob, carol):
            await client.close()
