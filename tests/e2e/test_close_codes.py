"""Every close the gateway does is a close frame the client reads (docs/protocol.md, close
codes). Read on a raw aiohttp client, so a socket that ends without one (what a browser reports
as 1006) fails the test, and with a client busy writing when the close comes (``hammering``):
the gateway used to close its side with that input unread, the kernel reset the connection and
the client lost the close frame. Each case runs several trials."""

import asyncio
import json
import time
from collections.abc import Iterator

import aiohttp
import jwt
import pytest
from aiohttp import WSMsgType

from schemas.errors import CloseCode
from tests.conftest import store_env
from tests.harness import System
from tests.rawws import close_frame, hammering, raw_socket, read_until

TRIALS = 5
ADMIN_SECRET = "c" * 40
MAX_FRAME = 64 * 1024
MAX_STRIKES = 50
#: A frame the gateway serves without a reply, so a hammering client is not a slow reader.
QUIET = '{"type": "presence_unsubscribe", "users": ["nobody"]}'


@pytest.fixture(scope="module")
def closes_system(tmp_path_factory: pytest.TempPathFactory,
                  request: pytest.FixtureRequest) -> Iterator[System]:
    system = System(tmp_path_factory.mktemp("closes"),
                    {**store_env(request), "COURIER_AUTH_ADMIN_SECRET": ADMIN_SECRET,
                     "COURIER_GATEWAY_MAX_FRAME_BYTES": str(MAX_FRAME),
                     "COURIER_GATEWAY_MAX_STRIKES": str(MAX_STRIKES),
                     # hammering must not turn into rate-limit strikes
                     "COURIER_GATEWAY_RATE_PER_S": "1000000",
                     "COURIER_GATEWAY_RATE_BURST": "1000000"})
    try:
        system.start()
        yield system
    finally:
        system.stop()


async def still_serves(system: System, user: str) -> None:
    """The gateway keeps working for everyone else after a close."""
    async with raw_socket(system.url, (await system.device(user)).token) as ws:
        await ws.send_str('{"type": "ping", "id": "after-close"}')
        await read_until(ws, b'"after-close"')


async def test_too_many_bad_frames_close_with_4009(closes_system: System) -> None:
    system = closes_system
    for trial in range(TRIALS):
        creds = await system.device(f"striker-{trial}")
        async with raw_socket(system.url, creds.token) as ws, hammering(ws, "{not json"):
            assert await close_frame(ws) == CloseCode.TOO_MANY_ERRORS, f"trial {trial}"
    await still_serves(system, "striker-after")


def ping_of(size: int) -> bytes:
    frame = b'{"type": "ping", "id": "' + b"x" * (size - 26) + b'"}'
    assert len(frame) == size
    return frame


@pytest.mark.parametrize(("payload", "opcode", "code"), [
    pytest.param(ping_of(MAX_FRAME + 1), WSMsgType.TEXT, CloseCode.MESSAGE_TOO_BIG,
                 id="1009-one-byte-over"),
    pytest.param(ping_of(MAX_FRAME + 10_000), WSMsgType.TEXT, CloseCode.MESSAGE_TOO_BIG,
                 id="1009-over"),
    pytest.param(ping_of(2 * 1024 * 1024), WSMsgType.BINARY, CloseCode.MESSAGE_TOO_BIG,
                 id="1009-2MiB"),
    pytest.param(b'{"type": "ping", "id": "\xff\xfe"}', WSMsgType.TEXT, CloseCode.INVALID_TEXT,
                 id="1007-invalid-utf8"),
    pytest.param(b"no start", WSMsgType.CONTINUATION, CloseCode.PROTOCOL_ERROR,
                 id="1002-stray-continuation"),
])
async def test_a_broken_frame_gets_its_close_code(closes_system: System, payload: bytes,
                                                  opcode: WSMsgType, code: CloseCode) -> None:
    system = closes_system
    for trial in range(TRIALS):
        creds = await system.device(f"broken-{int(code)}-{len(payload)}-{trial}")
        async with raw_socket(system.url, creds.token) as ws:
            await ws.send_frame(payload, opcode)
            async with hammering(ws, QUIET):
                assert await close_frame(ws) == code, f"trial {trial}"
    await still_serves(system, f"broken-{int(code)}-{len(payload)}-after")


async def test_a_frame_at_the_limit_is_served(closes_system: System) -> None:
    system = closes_system
    async with raw_socket(system.url, (await system.device("at-limit")).token) as ws:
        frame = '{"type": "ping", "id": "at-limit"}'
        frame += " " * (MAX_FRAME - len(frame))  # JSON allows trailing whitespace
        assert len(frame.encode()) == MAX_FRAME
        await ws.send_str(frame)
        await read_until(ws, b'"at-limit"')


async def test_the_replaced_socket_reads_4011(closes_system: System) -> None:
    system = closes_system
    for trial in range(TRIALS):
        creds = await system.device("twice", f"twice-phone-{trial}")
        async with raw_socket(system.url, creds.token) as first, hammering(first, QUIET):
            async with raw_socket(system.url, creds.token) as second:
                assert await close_frame(first) == CloseCode.REPLACED, f"trial {trial}"
                await second.send_str('{"type": "ping", "id": "second"}')
                await read_until(second, b'"second"')


async def admin_control(system: System, verb: str, device: str) -> None:
    body = {"action": verb, "target": {"kind": "device", "id": device}, "actor": "ops",
            "reason": "close-code test"}
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{system.url}/v1/admin/control", data=json.dumps(body),
                                headers={"Authorization": f"Bearer {ADMIN_SECRET}"}) as response:
            assert response.status == 200, await response.text()


async def test_a_disabled_device_reads_4103(closes_system: System) -> None:
    system = closes_system
    for trial in range(TRIALS):
        device = f"lost-phone-{trial}"
        creds = await system.device("loser", device)
        async with raw_socket(system.url, creds.token) as ws, hammering(ws, QUIET):
            await admin_control(system, "disable", device)
            assert await close_frame(ws) == CloseCode.DISABLED, f"trial {trial}"
        await admin_control(system, "enable", device)


async def test_an_expired_token_reads_4010(closes_system: System) -> None:
    system = closes_system
    for trial in range(TRIALS):
        creds = await system.device("expiring", f"expiring-{trial}")
        token = jwt.encode({"sub": creds.user, "dev": creds.device,
                            "exp": int(time.time()) + 2}, system.secret, algorithm="HS256")
        async with raw_socket(system.url, token) as ws:
            assert await close_frame(ws) == CloseCode.TOKEN_EXPIRED, f"trial {trial}"


async def test_shutdown_drains_every_socket_with_4012(closes_system: System) -> None:
    system = closes_system
    url = system.add_gateway()
    gateway, _ = system.gateways[-1]
    tokens = [(await system.device(f"leaving-{i}")).token for i in range(TRIALS)]
    async with (raw_socket(url, tokens[0]) as a, raw_socket(url, tokens[1]) as b,
                raw_socket(url, tokens[2]) as c, raw_socket(url, tokens[3]) as d,
                raw_socket(url, tokens[4]) as e, hammering(a, QUIET), hammering(c, QUIET)):
        stopping = asyncio.create_task(asyncio.to_thread(gateway.stop))  # SIGTERM: drain
        try:
            codes = [await close_frame(ws) for ws in (a, b, c, d, e)]
        finally:
            await stopping
    assert codes == [CloseCode.MOVED] * TRIALS
    assert gateway.returncode() == 0
