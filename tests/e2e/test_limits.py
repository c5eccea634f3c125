"""Rate limits per identity and per source address, through a real system.

Issue 10, finding 4: limits were per socket only, so reconnecting one device reset its budget,
ten sockets of one user had ten budgets, REST had no limit and nothing capped new connections
per user or per address. Each limit here refuses with the documented code (an ``error`` frame
``rate_limited`` with ``retry_after_s``, or a 429 problem with ``Retry-After``) once its
burst is spent, and traffic within the burst passes. Refill rates are tiny so that nothing
refills while a test runs.
"""

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from client.sdk import ClientError, CourierClient, Credentials
from schemas.errors import ErrorCode
from tests.conftest import store_env
from tests.harness import System

SLOW = "0.001"  # a token per ~17 minutes: nothing refills during a test
IDENTITY_LIMITS = {
    "COURIER_GATEWAY_RATE_PER_S": SLOW, "COURIER_GATEWAY_RATE_BURST": "5",
    "COURIER_LIMITS_USER_SENDS_PER_S": SLOW, "COURIER_LIMITS_USER_SENDS_BURST": "8",
    "COURIER_LIMITS_DEVICE_CONNECTS_PER_S": SLOW, "COURIER_LIMITS_DEVICE_CONNECTS_BURST": "3",
    "COURIER_LIMITS_USER_CONNECTS_PER_S": SLOW, "COURIER_LIMITS_USER_CONNECTS_BURST": "6",
    "COURIER_LIMITS_USER_WRITES_PER_S": SLOW, "COURIER_LIMITS_USER_WRITES_BURST": "12",
    "COURIER_LIMITS_USER_GROUPS_PER_S": SLOW, "COURIER_LIMITS_USER_GROUPS_BURST": "3",
    "COURIER_LIMITS_USER_CONTACT_REQUESTS_PER_S": SLOW,
    "COURIER_LIMITS_USER_CONTACT_REQUESTS_BURST": "2",
}
ADDRESS_LIMITS = {
    "COURIER_LIMITS_CLIENT_ADDRESS_HEADER": "X-Forwarded-For",
    "COURIER_LIMITS_ADDRESS_REGISTRATIONS_PER_S": SLOW,
    "COURIER_LIMITS_ADDRESS_REGISTRATIONS_BURST": "3",
    "COURIER_LIMITS_ADDRESS_UPGRADES_PER_S": SLOW, "COURIER_LIMITS_ADDRESS_UPGRADES_BURST": "4",
}


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory,
            request: pytest.FixtureRequest) -> Iterator[System]:
    """Small identity limits; each test uses users of its own, so their buckets are apart."""
    system = System(tmp_path_factory.mktemp("limits"),
                    {**store_env(request), **IDENTITY_LIMITS}).start()
    try:
        yield system
    finally:
        system.stop()


async def rest(url: str, method: str, path: str, *, token: str | None = None,
               body: object | None = None,
               headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], Any]:
    """One HTTP call: status, headers, decoded JSON body (None if empty)."""
    sent = dict(headers or {})
    if token is not None:
        sent["Authorization"] = f"Bearer {token}"
    data = None if body is None else json.dumps(body).encode()
    async with aiohttp.ClientSession() as session, session.request(
            method, f"{url}{path}", data=data, headers=sent) as response:
        raw = await response.read()
        return response.status, dict(response.headers), json.loads(raw) if raw else None


def assert_429(status: int, headers: dict[str, str], problem: Any) -> None:
    """The documented refusal: 429, ``Retry-After`` in whole seconds, the same wait in the
    problem's ``retry_after_s``."""
    assert status == 429, problem
    assert problem["code"] == "rate_limited" and problem["retry"] is True
    assert problem["retry_after_s"] > 0
    assert int(headers["Retry-After"]) >= max(1, int(problem["retry_after_s"]))


def assert_rate_limited(exc: ClientError) -> None:
    assert exc.code == ErrorCode.RATE_LIMITED and exc.retry is True
    assert exc.retry_after_s is not None and exc.retry_after_s > 0


async def test_reconnecting_does_not_reset_a_devices_frame_budget(limited: System) -> None:
    system = limited
    await system.device("r1bob")
    creds = await system.device("r1alice", "r1alice-phone")
    alice = await system.connect(creds, sync=False)
    for _ in range(5):  # the device's burst: normal traffic passes
        await alice.send("r1bob", b"hi")
    with pytest.raises(ClientError) as info:
        await alice.send("r1bob", b"one too many")
    assert_rate_limited(info.value)
    await alice.close()
    again = await system.connect(creds, sync=False)  # a new socket, the same device budget
    with pytest.raises(ClientError) as info:
        await again.send("r1bob", b"after reconnecting")
    assert_rate_limited(info.value)
    with pytest.raises(ClientError) as info:
        await again.ping()  # every frame spends from the device's bucket
    assert_rate_limited(info.value)
    await again.close()
    other = await system.connect(await system.device("r1alice", "r1alice-laptop"), sync=False)
    assert (await other.send("r1bob", b"another device, its own budget")).seq > 0
    await other.close()


async def test_the_sockets_of_one_user_share_its_send_budget(limited: System) -> None:
    system = limited
    await system.device("s1bob")
    devices = [await system.connect(await system.device("s1alice", f"s1alice-{i}"), sync=False)
               for i in range(4)]
    for device in devices:  # 4 x 2 = the user's burst of 8, each device well within its 5
        for _ in range(2):
            await device.send("s1bob", b"hi")
    for device in devices:
        with pytest.raises(ClientError) as info:
            await device.send("s1bob", b"over the user's budget")
        assert_rate_limited(info.value)
        await device.ping()  # only sends spend the user's budget
    carol = await system.connect(await system.device("s1carol"), sync=False)
    assert (await carol.send("s1bob", b"another user")).seq > 0
    for client in (*devices, carol):
        await client.close()


async def connect_refused(system: System, creds: Credentials) -> None:
    """The upgrade of ``creds`` is refused with a 429 problem."""
    client = CourierClient(system.url, creds)
    try:
        with pytest.raises(aiohttp.WSServerHandshakeError) as info:
            await client.connect()
    finally:
        await client.close()
    assert info.value.status == 429
    assert info.value.headers is not None and int(info.value.headers["Retry-After"]) >= 1
    status, headers, problem = await rest(system.url, "GET", "/v1/ws", token=creds.token)
    assert_429(status, headers, problem)  # the body, on a plain request: still refused


async def test_new_connections_are_limited_per_device_and_per_user(limited: System) -> None:
    system = limited
    phone = await system.device("c1alice", "c1alice-phone")
    for _ in range(3):  # the device's burst of connections
        client = await system.connect(phone, sync=False)
        await client.close()
    await connect_refused(system, phone)
    for i in range(3):  # the user's burst is 6: three more devices
        client = await system.connect(await system.device("c1alice", f"c1alice-{i}"),
                                      sync=False)
        await client.close()
    await connect_refused(system, await system.device("c1alice", "c1alice-seventh"))
    client = await system.connect(await system.device("c1bob"), sync=False)  # another user
    await client.close()


async def test_rest_writes_are_limited_per_user_across_routes(limited: System) -> None:
    system = limited
    alice = await system.device("w1alice", "w1alice-phone")
    laptop = await system.device("w1alice", "w1alice-laptop")
    await system.device("w1bob")
    status, _, _ = await rest(system.url, "POST", "/v1/groups", token=alice.token,
                              body={"id": "w1g", "name": "g", "members": ["w1bob"]})
    assert status == 201
    for i in range(8):  # writes 2-9
        status, _, reply = await rest(system.url, "PATCH", "/v1/groups/w1g", token=alice.token,
                                      body={"name": f"g{i}"})
        assert status == 200, reply
    for creds in (alice, laptop):  # writes 10-11, another route, both devices
        status, _, reply = await rest(system.url, "PUT", "/v1/devices/me/push",
                                      token=creds.token,
                                      body={"platform": "webhook", "token": creds.device})
        assert status == 200, reply
    status, _, _ = await rest(system.url, "DELETE", "/v1/devices/me/push", token=laptop.token)
    assert status == 204  # the 12th: the last of the burst
    status, headers, problem = await rest(system.url, "PUT", "/v1/blocks/w1bob",
                                          token=laptop.token)
    assert_429(status, headers, problem)
    status, _, reply = await rest(system.url, "GET", "/v1/groups/w1g", token=alice.token)
    assert status == 200 and reply["name"] == "g7"  # reads are not writes; nothing was lost


async def test_group_creation_is_limited_per_user(limited: System) -> None:
    """The finding: one user created 420 groups of 5 in 5 s."""
    system = limited
    alice = await system.device("g1alice")
    members = [(await system.device(f"g1m{i}")).user for i in range(4)]
    for i in range(3):
        status, _, reply = await rest(system.url, "POST", "/v1/groups", token=alice.token,
                                      body={"name": f"g{i}", "members": members})
        assert status == 201, reply
    status, headers, problem = await rest(system.url, "POST", "/v1/groups", token=alice.token,
                                          body={"name": "g3", "members": members})
    assert_429(status, headers, problem)
    status, _, reply = await rest(system.url, "GET", "/v1/groups", token=alice.token)
    assert status == 200 and len(reply["groups"]) == 3
    status, _, _ = await rest(system.url, "POST", "/v1/groups/" + reply["groups"][0]["id"]
                              + "/leave", token=alice.token)
    assert status == 200  # other writes still have budget


async def test_contact_requests_are_limited_per_user(limited: System) -> None:
    system = limited
    alice = await system.device("k1alice")
    others = [(await system.device(f"k1u{i}")).user for i in range(3)]
    for other in others[:2]:
        status, _, reply = await rest(system.url, "POST", "/v1/contacts/requests",
                                      token=alice.token, body={"user": other})
        assert status == 200, reply
    status, headers, problem = await rest(system.url, "POST", "/v1/contacts/requests",
                                          token=alice.token, body={"user": others[2]})
    assert_429(status, headers, problem)
    status, _, reply = await rest(system.url, "GET", "/v1/contacts", token=alice.token)
    assert sorted(c["user"] for c in reply["contacts"]) == others[:2]


async def test_registrations_and_upgrades_are_limited_per_address(tmp_path: Path,
                                                                   request: pytest.FixtureRequest
                                                                   ) -> None:
    system = System(tmp_path, {**store_env(request), **ADDRESS_LIMITS}).start()
    try:
        def register(user: str, address: str) -> Any:
            return rest(system.url, "POST", "/v1/dev/devices", body={"user": user},
                        headers={"X-Forwarded-For": address})

        tokens = []
        for i in range(3):
            status, _, reply = await register(f"a{i}", "203.0.113.7")
            assert status == 201, reply
            tokens.append(reply["token"])
        assert_429(*await register("a3", "203.0.113.7"))
        assert_429(*await register("a3", "198.51.100.1, 203.0.113.7"))  # the last hop counts
        status, _, other = await register("b0", "198.51.100.1")  # another address: its own
        assert status == 201

        async def upgrade(token: str, address: str) -> tuple[int, dict[str, str], Any]:
            return await rest(system.url, "GET", "/v1/ws", token=token,
                              headers={"X-Forwarded-For": address})

        for _ in range(4):  # attempts count before the token is read: bad tokens too
            status, _, problem = await upgrade("not-a-token", "203.0.113.9")
            assert (status, problem["code"]) == (401, "unauthorized")
        assert_429(*await upgrade(tokens[0], "203.0.113.9"))
        session = aiohttp.ClientSession()
        try:  # a real upgrade from another address passes
            ws = await session.ws_connect(
                system.url.replace("http", "ws", 1) + "/v1/ws",
                headers={"Authorization": f"Bearer {tokens[0]}",
                         "X-Forwarded-For": "203.0.113.10"})
            welcome = json.loads((await ws.receive()).data)
            assert welcome["type"] == "welcome" and welcome["user"] == "a0"
            await ws.close()
        finally:
            await session.close()
        client = CourierClient(system.url, Credentials(user="b0", device=other["device"],
                                                       token=other["token"]))
        await client.connect()  # no header: the TCP peer's own bucket
        await client.close()
    finally:
        system.stop()
