"""Bad input to groups, contacts and presence gets the documented typed error, and the
connection and the service keep working: malformed bodies and frames, non-members, non-admins,
strangers, a full group, typing too fast."""

import asyncio
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from client.sdk import ClientError, CourierClient
from schemas.errors import ErrorCode
from schemas.frames import MAX_PRESENCE_USERS, Error
from tests.conftest import store_env
from tests.e2e.social_helpers import call, refused
from tests.harness import System

MAX_MEMBERS = 4


async def raw_post(client: CourierClient, path: str, data: bytes) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as session, session.post(
            f"{client.base_url}{path}", data=data,
            headers={"Authorization": f"Bearer {client.credentials.token}"}) as response:
        return response.status, await response.json(content_type=None)


async def frame_error(client: CourierClient, frame: str) -> Error:
    await client.send_raw(frame)
    return await asyncio.wait_for(client.errors.get(), 10)


async def test_group_rights_and_malformed_requests(tmp_path: Path,
                                                  request: pytest.FixtureRequest) -> None:
    clients: list[CourierClient] = []
    with System(tmp_path, {**store_env(request),
                           "COURIER_GROUPS_MAX_MEMBERS": str(MAX_MEMBERS)}) as system:
        try:
            for user in ("dan", "erin"):
                await system.device(user)
            alice, bob, carol = clients[:] = [await system.connect(await system.device(user))
                                              for user in ("alice", "bob", "carol")]
            await call(alice, "POST", "/v1/groups", {"id": "team", "members": ["bob"]}, 201)
            cases: list[tuple[CourierClient, str, str, object, int, str]] = [
                # non-admins
                (bob, "PATCH", "/v1/groups/team", {"name": "mine"}, 403, "forbidden"),
                (bob, "POST", "/v1/groups/team/members", {"users": ["carol"]}, 403, "forbidden"),
                (bob, "DELETE", "/v1/groups/team/members/alice", None, 403, "forbidden"),
                (bob, "PUT", "/v1/groups/team/members/bob/role", {"role": "owner"}, 403,
                 "forbidden"),
                # non-members
                (carol, "GET", "/v1/groups/team", None, 403, "not_member"),
                (carol, "POST", "/v1/groups/team/members", {"users": ["carol"]}, 403, "not_member"),
                (carol, "POST", "/v1/groups/team/leave", None, 403, "not_member"),
                (carol, "GET", "/v1/conversations/g:team/messages", None, 403, "not_member"),
                # what does not exist, or exists already
                (alice, "GET", "/v1/groups/nope", None, 404, "not_found"),
                (alice, "DELETE", "/v1/groups/team/members/carol", None, 404, "not_found"),
                (alice, "POST", "/v1/groups", {"id": "team"}, 409, "conflict"),
                (alice, "POST", "/v1/groups", {"id": "other", "members": ["ghost"]}, 404,
                 "not_found"),
                (alice, "POST", "/v1/groups/team/members", {"users": ["bob"]}, 409, "conflict"),
                (alice, "GET", "/v1/conversations/g:team/messages/nope/receipts", None, 404,
                 "not_found"),
                # malformed
                (alice, "POST", "/v1/groups", {"id": "bad id"}, 422, "invalid"),
                (alice, "POST", "/v1/groups", {"id": "x", "owner": "mallory"}, 422, "invalid"),
                (alice, "POST", "/v1/groups/team/members", {"users": []}, 422, "invalid"),
                (alice, "POST", "/v1/groups/team/members", {"users": "bob"}, 422, "invalid"),
                (alice, "PUT", "/v1/groups/team/members/bob/role", {"role": "god"}, 422, "invalid"),
                (alice, "PATCH", "/v1/groups/team", {"name": ""}, 422, "invalid"),
                (alice, "GET", "/v1/groups/b%20d", None, 422, "invalid"),
                (alice, "DELETE", "/v1/groups/team/members/alice", None, 422, "invalid"),
                (alice, "GET", "/v1/conversations/d:alice:bob/messages/m1/receipts", None, 422,
                 "invalid"),
                (alice, "GET", "/v1/presence", None, 422, "invalid"),
                (alice, "GET", "/v1/presence?users=a%20b", None, 422, "invalid"),
                (alice, "POST", "/v1/contacts/requests", {"name": "bob"}, 422, "invalid"),
                (alice, "POST", "/v1/blocks/bob", None, 422, "invalid"),  # PUT, not POST
            ]
            for client, method, path, body, status, code in cases:
                await refused(client, method, path, body, status, code)
            status, problem = await raw_post(alice, "/v1/groups", b"{not json")
            assert (status, problem["code"]) == (400, "bad_frame")
            status, problem = await raw_post(alice, "/v1/groups", b"")
            assert (status, problem["code"]) == (400, "bad_frame")
            unauthenticated = CourierClient(system.url, alice.credentials)
            unauthenticated.credentials = type(alice.credentials)(user="alice", device="x",
                                                                  token="garbage")
            await refused(unauthenticated, "GET", "/v1/groups", None, 401, "unauthorized")

            # the configured size: owner + 3 members
            await call(alice, "POST", "/v1/groups/team/members", {"users": ["dan"]})
            await refused(alice, "POST", "/v1/groups/team/members", {"users": ["erin", "carol"]},
                          409, "conflict")
            await refused(alice, "POST", "/v1/groups", {"members": ["bob", "carol", "dan", "erin"]},
                          422, "invalid")

            # frames: the error is typed, echoes the id, and the socket keeps working
            frame_cases = [
                ('{"type": "send", "client_id": "c1", "to": {"kind": "group", "id": "team"}, '
                 '"body": "aGk=", "id": "s1"}', carol, ErrorCode.NOT_MEMBER),
                ('{"type": "send", "client_id": "c2", "to": {"kind": "group", "id": "nope"}, '
                 '"body": "aGk=", "id": "s2"}', alice, ErrorCode.UNKNOWN_RECIPIENT),
                ('{"type": "typing", "conversation": "g:team", "id": "t1"}', carol,
                 ErrorCode.NOT_MEMBER),
                ('{"type": "typing", "conversation": "d:bob:dan", "id": "t2"}', carol,
                 ErrorCode.NOT_MEMBER),
                ('{"type": "read", "conversation": "g:team", "seq": 1, "id": "r1"}', carol,
                 ErrorCode.NOT_MEMBER),
                ('{"type": "typing", "conversation": 5, "id": "t3"}', alice, ErrorCode.INVALID),
                ('{"type": "presence_subscribe", "id": "p1"}', alice, ErrorCode.INVALID),
                ('{"type": "presence_subscribe", "users": ["' + '", "'.join(
                    f"u{i}" for i in range(MAX_PRESENCE_USERS + 1)) + '"], "id": "p2"}', alice,
                 ErrorCode.INVALID),
                ('{"type": "presence_unsubscribe", "users": [1], "id": "p3"}', alice,
                 ErrorCode.INVALID),
            ]
            for frame, client, code in frame_cases:
                error = await frame_error(client, frame)
                assert error.code == code, (frame[:60], error)
                if code != ErrorCode.INVALID:  # a frame that does not decode has no id to echo
                    assert error.id is not None and error.id[0] in "str"
                await client.ping()
            assert (await alice.presence_subscribe(["carol"])).denied == ["carol"]  # stranger

            for _ in range(10):  # a burst of 5 typing frames empties the typing bucket (1/s)
                await alice.send_typing("g:team")
            error = await asyncio.wait_for(alice.errors.get(), 10)
            assert error.code == ErrorCode.RATE_LIMITED and error.retry
            typing = await asyncio.wait_for(bob.typing.get(), 10)
            assert (typing.user, typing.conversation) == ("alice", "g:team")
            accepted = await alice.send("team", b"still fine", kind="group")
            assert accepted.conversation == "g:team"
            with pytest.raises(ClientError) as info:
                await bob.send("nope", b"x", kind="group")
            assert info.value.code == ErrorCode.UNKNOWN_RECIPIENT
        finally:
            for client in clients:
                await client.close()
