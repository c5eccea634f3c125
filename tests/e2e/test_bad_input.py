"""Bad input on the WebSocket gets a typed error (or a documented close code); the connection,
where the error is not fatal, and the service keep working."""

import time
from pathlib import Path

import aiohttp
import jwt
import pytest

from client.sdk import ClientError, CourierClient, Credentials
from schemas.codec import decode_server_frame
from schemas.errors import CloseCode, ErrorCode
from schemas.frames import Error
from tests.conftest import store_env
from tests.harness import System


async def next_error(client: CourierClient) -> Error:
    import asyncio

    return await asyncio.wait_for(client.errors.get(), 10)


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        ("{not json", ErrorCode.BAD_FRAME),
        ("[1, 2]", ErrorCode.BAD_FRAME),
        ('{"no_type": 1}', ErrorCode.BAD_FRAME),
        ('{"type": "launch_missiles"}', ErrorCode.UNKNOWN_TYPE),
        ('{"type": "send", "to": {"kind": "user", "id": "bob"}}', ErrorCode.INVALID),
        ('{"type": "send", "client_id": 5, "to": {"kind": "user", "id": "bob"}, "body": ""}',
         ErrorCode.INVALID),
        ('{"type": "send", "client_id": "c", "to": {"kind": "planet", "id": "x"}, "body": ""}',
         ErrorCode.INVALID),
        ('{"type": "send", "client_id": "c", "to": {"kind": "user", "id": "bob"}, '
         '"body": "!!notbase64"}', ErrorCode.INVALID),
        ('{"type": "send", "client_id": "c", "to": {"kind": "user", "id": "bob"}}',
         ErrorCode.INVALID),
        ('{"type": "send", "client_id": "c", "to": {"kind": "user", "id": "bob"}, "body": "", '
         '"sender": "mallory"}', ErrorCode.INVALID),
        ('{"type": "send", "client_id": "c", "to": {"kind": "user", "id": "nobody"}, '
         '"body": "aGk="}', ErrorCode.UNKNOWN_RECIPIENT),
        ('{"type": "send", "client_id": "c", "to": {"kind": "device", "id": "nodevice"}, '
         '"body": "aGk="}', ErrorCode.UNKNOWN_RECIPIENT),
        ('{"type": "read", "conversation": "d:bob:carol", "seq": 3}', ErrorCode.NOT_MEMBER),
        ('{"type": "ack", "messages": [{"id": "m1", "seq": 1, "conversation": "d:bob:carol"}]}',
         ErrorCode.NOT_MEMBER),
        ('{"type": "ack", "messages": []}', ErrorCode.INVALID),
        ('{"type": "sync", "after": -1}', ErrorCode.INVALID),
    ],
)
async def test_bad_frames_get_typed_errors(shared_system: System, frame: str,
                                           code: ErrorCode) -> None:
    system = shared_system
    await system.device("bob")
    alice = await system.connect(await system.device("alice"))
    try:
        await alice.send_raw(frame)
        error = await next_error(alice)
        assert error.code == code, error.message
        assert error.retry is False
        await alice.ping()  # the connection still works
        accepted = await alice.send("bob", b"still fine")
        assert accepted.seq > 0
    finally:
        await alice.close()


async def test_error_echoes_request_id(system: System) -> None:
    alice = await system.connect(await system.device("alice"))
    try:
        with pytest.raises(ClientError) as info:
            await alice.send("ghost", b"x")
        assert info.value.code == ErrorCode.UNKNOWN_RECIPIENT
    finally:
        await alice.close()


async def test_identity_comes_from_the_token(system: System) -> None:
    await system.device("mallory")
    bob = await system.connect(await system.device("bob"))
    alice = await system.connect(await system.device("alice", "alice-1"))
    try:
        await alice.send("bob", b"hi")
        message = await bob.next_message()
        assert message.sender.user == "alice" and message.sender.device == "alice-1"
        assert message.conversation == "d:alice:bob"
    finally:
        await alice.close()
        await bob.close()


async def test_oversized_frame_closes_with_1009(system: System) -> None:
    alice = await system.connect(await system.device("alice"))
    await system.device("bob")
    await alice.send_raw('{"type": "ping", "id": "' + "x" * 70_000 + '"}')
    for _ in range(100):
        if alice.closed:
            break
        import asyncio

        await asyncio.sleep(0.05)
    assert alice.close_code == CloseCode.MESSAGE_TOO_BIG
    await alice.close()
    again = await system.connect(await system.device("alice"))  # the service keeps working
    assert (await again.send("bob", b"ok")).seq > 0
    await again.close()


async def test_rate_limit(tmp_path: Path, request: pytest.FixtureRequest) -> None:
    with System(tmp_path, {**store_env(request), "COURIER_GATEWAY_RATE_PER_S": "1",
                           "COURIER_GATEWAY_RATE_BURST": "5"}) as system:
        alice = await system.connect(await system.device("alice"), sync=False)
        for _ in range(10):
            await alice.send_raw('{"type": "ping"}')
        error = await next_error(alice)
        assert error.code == ErrorCode.RATE_LIMITED and error.retry is True
        await alice.close()


def forged(system: System, **claims: object) -> str:
    base: dict[str, object] = {"sub": "alice", "dev": "d1", "exp": int(time.time()) + 60}
    base.update(claims)
    return jwt.encode(base, system.secret, algorithm="HS256")


@pytest.mark.parametrize("case", ["missing", "garbage", "forged", "expired", "bad_claims",
                                  "no_device"])
async def test_bad_tokens_are_refused(shared_system: System, case: str) -> None:
    system = shared_system
    tokens = {
        "missing": "",
        "garbage": "not.a.jwt",
        "forged": jwt.encode({"sub": "alice", "dev": "d1", "exp": int(time.time()) + 60},
                             "a-different-secret-of-at-least-32-bytes", algorithm="HS256"),
        "expired": forged(system, exp=int(time.time()) - 10),
        "bad_claims": forged(system, sub="alice/../../root"),
        "no_device": jwt.encode({"sub": "alice", "exp": int(time.time()) + 60},
                                system.secret, algorithm="HS256"),
    }
    headers = {"Authorization": f"Bearer {tokens[case]}"} if tokens[case] else {}
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{system.url}/v1/ws", headers=headers) as response:
            assert response.status == 401
            assert response.content_type == "application/problem+json"
            body = await response.json()
            assert body["code"] == ErrorCode.UNAUTHORIZED
        async with session.get(f"{system.url}/healthz") as health:
            assert health.status == 200


async def test_token_in_query_string(system: System) -> None:
    creds = await system.device("alice")
    async with aiohttp.ClientSession() as session:
        async with session.ws_connect(f"{system.url}/v1/ws?token={creds.token}") as ws:
            welcome = decode_server_frame((await ws.receive()).data)
            assert getattr(welcome, "user", None) == "alice"


async def test_same_device_connecting_again_replaces_the_old_socket(system: System) -> None:
    import asyncio

    creds: Credentials = await system.device("alice", "phone")
    first = await system.connect(creds)
    second = await system.connect(creds)
    for _ in range(100):
        if first.closed:
            break
        await asyncio.sleep(0.05)
    assert first.close_code == CloseCode.REPLACED
    await second.ping()
    await first.close()
    await second.close()


async def test_a_device_id_cannot_be_taken_over(shared_system: System) -> None:
    system = shared_system
    await system.device("owner", "owned-phone")
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{system.url}/v1/dev/devices",
                                json={"user": "mallory", "device": "owned-phone"}) as response:
            assert response.status == 409
            assert (await response.json(content_type=None))["code"] == ErrorCode.CONFLICT
        token = forged(system, sub="mallory", dev="owned-phone")
        async with session.get(f"{system.url}/v1/ws",
                               headers={"Authorization": f"Bearer {token}"}) as response:
            assert response.status == 409


async def test_a_send_to_a_device_reaches_only_that_device(shared_system: System) -> None:
    import asyncio

    system = shared_system
    sender = await system.connect(await system.device("dsender", "dsender-1"))
    sender_other = await system.connect(await system.device("dsender", "dsender-2"))
    target = await system.connect(await system.device("dtarget", "dtarget-1"))
    other = await system.connect(await system.device("dtarget", "dtarget-2"))
    try:
        await sender.send("dtarget-1", b"just for you", kind="device")
        assert (await target.next_message()).body == b"just for you"
        await asyncio.sleep(0.3)
        assert other.pending_messages() == 0 and sender_other.pending_messages() == 0
    finally:
        for client in (sender, sender_other, target, other):
            await client.close()
