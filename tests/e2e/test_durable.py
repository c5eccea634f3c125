"""Receipts, read markers and unread counts, history over REST, idempotent retries, expiry,
and several router/gateway replicas."""

import asyncio
from pathlib import Path

import aiohttp
import pytest

from schemas.errors import ErrorCode
from schemas.frames import Receipt
from tests.conftest import store_env
from tests.harness import System

AB = "d:alice:bob"


async def get_json(url: str, token: str | None) -> tuple[int, dict[str, object]]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with aiohttp.ClientSession() as session:
        async with session.get(url, headers=headers) as response:
            return response.status, await response.json(content_type=None)


async def next_receipt(client: object, status: str) -> Receipt:
    queue: asyncio.Queue[Receipt] = client.receipts  # type: ignore[attr-defined]
    while True:
        receipt = await asyncio.wait_for(queue.get(), 10)
        if receipt.status == status:
            return receipt


async def test_delivered_and_read_receipts_reach_all_sender_devices(system: System) -> None:
    alice1 = await system.connect(await system.device("alice", "a1"))
    alice2 = await system.connect(await system.device("alice", "a2"))
    bob = await system.connect(await system.device("bob", "b1"))
    try:
        accepted = [await alice1.send("bob", f"hi{i}".encode()) for i in range(3)]
        got = [await bob.next_message() for _ in range(3)]  # auto-acked
        ids = {a.message_id for a in accepted}
        for alice in (alice1, alice2):
            seen: set[str] = set()
            while seen != ids:
                receipt = await next_receipt(alice, "delivered")
                assert receipt.by == "bob" and receipt.conversation == AB
                seen.update(receipt.message_ids)
        await bob.read(AB, got[1].seq)
        for alice in (alice1, alice2):
            receipt = await next_receipt(alice, "read")
            assert (receipt.by, receipt.seq) == ("bob", got[1].seq)
        # unread counts follow the read marker
        status, body = await get_json(f"{system.url}/v1/conversations", bob.credentials.token)
        assert status == 200
        [conversation] = body["conversations"]  # type: ignore[misc]
        assert conversation["conversation"] == AB
        assert conversation["unread"] == 1 and conversation["read_seq"] == got[1].seq
        await bob.read(AB, got[2].seq)
        await next_receipt(alice1, "read")
        status, body = await get_json(f"{system.url}/v1/conversations", bob.credentials.token)
        assert body["conversations"][0]["unread"] == 0  # type: ignore[index]
        # the sender's history shows the statuses
        status, page = await get_json(f"{system.url}/v1/conversations/{AB}/messages",
                                      alice1.credentials.token)
        assert [item["status"] for item in page["items"]] == ["read"] * 3  # type: ignore[union-attr,index]
    finally:
        for client in (alice1, alice2, bob):
            await client.close()


async def test_history_pages_and_membership(system: System) -> None:
    alice = await system.connect(await system.device("alice"))
    carol = await system.device("carol")
    await system.device("bob")
    try:
        for i in range(25):
            await alice.send("bob", f"h{i}".encode())
        token = alice.credentials.token
        url = f"{system.url}/v1/conversations/{AB}/messages"
        bodies: list[str] = []
        status, page = await get_json(f"{url}?limit=10", token)
        while True:
            assert status == 200
            items = page["items"]
            bodies = [__import__("base64").b64decode(i["message"]["body"]).decode()
                      for i in items] + bodies  # type: ignore[union-attr,index]
            if page["next_before"] is None:
                break
            status, page = await get_json(f"{url}?limit=10&before={page['next_before']}", token)
        assert bodies == [f"h{i}" for i in range(25)]
        status, forward = await get_json(f"{url}?limit=10&after=0", token)
        assert len(forward["items"]) == 10  # type: ignore[arg-type]
        status, problem = await get_json(url, carol.token)
        assert status == 403 and problem["code"] == ErrorCode.NOT_MEMBER
        status, problem = await get_json(url, None)
        assert status == 401 and problem["code"] == ErrorCode.UNAUTHORIZED
        for query in ("limit=0", "limit=abc", "before=1&after=2", "before=-5", "limit=100000"):
            status, problem = await get_json(f"{url}?{query}", token)
            assert status == 422 and problem["code"] == ErrorCode.INVALID, query
    finally:
        await alice.close()
    outsider = await system.connect(carol)
    try:
        await outsider.read(AB, 1)
        error = await asyncio.wait_for(outsider.errors.get(), 5)
        assert error.code == ErrorCode.NOT_MEMBER
    finally:
        await outsider.close()


async def test_rest_bad_input(system: System) -> None:
    async with aiohttp.ClientSession() as session:
        for body in (b"{", b"[]", b'{"user": 5}', b'{"user": "a b"}', b'{"user": "x", "y": 1}'):
            async with session.post(f"{system.url}/v1/dev/devices", data=body) as response:
                assert response.status in (400, 422)
                assert (await response.json(content_type=None))["code"] in ("bad_frame",
                                                                           "invalid")
        async with session.get(f"{system.url}/v1/nothing") as response:
            assert response.status == 404
        async with session.get(f"{system.url}/openapi.json") as response:
            document = await response.json()
            assert "/v1/conversations/{conversation}/messages" in document["paths"]


async def test_retry_with_same_client_id_is_stored_once(system: System) -> None:
    bob_creds = await system.device("bob")
    alice = await system.connect(await system.device("alice"))
    first = await alice.send("bob", b"once", client_id="retry-me")
    again = await alice.send("bob", b"once", client_id="retry-me")
    assert (again.message_id, again.seq) == (first.message_id, first.seq)
    # across a gateway restart too
    await alice.close()
    gateway, _port = system.gateways[0]
    gateway.restart()
    await asyncio.sleep(0.5)
    from infra.processes import wait_http_ok

    wait_http_ok(f"{system.url}/healthz", 30, gateway)
    alice = await system.connect(alice.credentials)
    third = await alice.send("bob", b"once", client_id="retry-me")
    assert third.message_id == first.message_id
    bob = await system.connect(bob_creds, sync=False)
    assert (await bob.sync()).count == 1
    await bob.close()
    await alice.close()


async def test_expired_message_is_never_delivered(system: System) -> None:
    bob_creds = await system.device("bob")
    alice = await system.connect(await system.device("alice"))
    await alice.send("bob", b"short-lived", ttl=1)
    await alice.send("bob", b"durable")
    await asyncio.sleep(1.2)
    bob = await system.connect(bob_creds, sync=False)
    await bob.sync()
    message = await bob.next_message()
    assert message.body == b"durable"
    await asyncio.sleep(0.2)
    assert bob.pending_messages() == 0
    await bob.close()
    await alice.close()


async def test_second_router_and_gateway_deliver_once(system: System) -> None:
    system.add_router()
    second_url = system.add_gateway()
    alice = await system.connect(await system.device("alice"))
    bob = await system.connect(await system.device("bob"), url=second_url)
    try:
        for i in range(200):
            await alice.send("bob", f"x{i}".encode())
        got = [await bob.next_message() for _ in range(200)]
        assert sorted(m.body.decode() for m in got) == sorted(f"x{i}" for i in range(200))
        await asyncio.sleep(0.3)
        assert bob.pending_messages() == 0 and bob.duplicates == 0
    finally:
        await alice.close()
        await bob.close()


async def test_sends_to_known_recipients_flow_while_storage_is_down(tmp_path: Path,
                                                                     request: pytest.FixtureRequest
                                                                     ) -> None:
    """A recipient the gateway knew stays known when its cache entry is stale and storage does
    not answer: the send is accepted at once instead of waiting out the RPC deadline (15 s,
    past the client's 5 s here)."""
    with System(tmp_path, extra_env={**store_env(request),
                                     "COURIER_GATEWAY_RECIPIENT_CACHE_S": "0.2"}) as system:
        await system.device("bob")
        alice = await system.connect(await system.device("alice"))
        try:
            await alice.send("bob", b"while storage is up")
            assert system.storage is not None
            system.storage.kill()
            await asyncio.sleep(0.5)  # the gateway's entry for bob is stale now
            for i in range(3):
                accepted = await alice.send("bob", f"while storage is down {i}".encode(),
                                            timeout=5.0)
                assert accepted.message_id
        finally:
            await alice.close()
