"""Business notifications from a test "business service": over NATS (``notify.send``) and REST
(``POST /v1/notifications``), to users, devices, groups and a whole app; online devices get
them over WebSocket, offline ones a push and their inbox."""

import base64
import json
from collections.abc import Iterator
from typing import Any

import aiohttp
import pytest

from client.sdk import CourierClient, Credentials
from schemas.frames import Message
from tests.conftest import store_env
from tests.harness import System
from tests.pushkit import (  # noqa: F401  (fixtures)
    SERVICE_SECRET,
    MotoServer,
    WebhookReceiver,
    moto,
    nats_request,
    push_env,
    register_push,
    wait_until,
    wakeup_details,
    webhook,
)

MAX_BATCH = 10


@pytest.fixture(scope="module")
def notify_system(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest,
                  moto: MotoServer, webhook: WebhookReceiver) -> Iterator[System]:  # noqa: F811
    env = push_env(moto, webhook, COURIER_NOTIFY_MAX_BATCH=str(MAX_BATCH),
                   COURIER_NOTIFY_MAX_BODY_BYTES="1024",
                   COURIER_NOTIFY_MAX_REQUEST_BYTES="200000")
    with System(tmp_path_factory.mktemp("notify"), {**store_env(request), **env}) as system:
        yield system


def item(item_id: str, to: dict[str, Any], body: bytes = b"payload",
         **extra: Any) -> dict[str, Any]:
    return {"id": item_id, "to": to, "body": base64.b64encode(body).decode(), **extra}


async def nats_send(system: System, request: Any) -> dict[str, Any]:
    """What a business service does: request/reply on ``notify.send``."""
    return await nats_request(system, "service", "notify.send", request)


async def rest_send(system: System, body: Any, secret: str | None = SERVICE_SECRET,
                    ) -> tuple[int, dict[str, Any]]:
    headers = {"Authorization": f"Bearer {secret}"} if secret else {}
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{system.url}/v1/notifications", data=data,
                                headers=headers) as response:
            return response.status, await response.json(content_type=None)


async def next_notification(client: CourierClient) -> Message:
    """The next notification (group system messages, e.g. "you were added", are skipped)."""
    while (message := await client.next_message()).kind == "system":
        pass
    assert message.kind == "notification", message
    return message


def wakes(webhook: WebhookReceiver, token: str) -> list[dict[str, Any]]:  # noqa: F811
    return [d.json["wake"] for d in webhook.for_token(token)]


async def offline_device(system: System, user: str, device: str, push_token: str) -> Credentials:
    creds = await system.device(user, device)
    await register_push(system.url, creds.token, "webhook", push_token)
    return creds


async def test_a_notification_on_nats_reaches_online_devices_live_and_offline_ones_by_push(
        notify_system: System, webhook: WebhookReceiver) -> None:  # noqa: F811
    system = notify_system
    phone = await system.connect(await system.device("carol", "carol-phone"))
    tablet = await offline_device(system, "carol", "carol-tablet", "hook-carol-tablet")
    reply = await nats_send(system, {"service": "billing", "notifications": [
        item("invoice-1", {"kind": "user", "id": "carol"}, b"invoice ready", receipt=True,
             module="invoices", ttl=3600)]})
    assert reply["r"] == "ok", reply
    result = reply["value"]
    assert (result["accepted"], result["failed"]) == (1, 0)
    [outcome] = result["results"]
    assert outcome["status"] == "accepted" and outcome["recipients"] == 1
    message_id = outcome["message_ids"]["carol"]

    live = await next_notification(phone)
    assert (live.message_id, live.body, live.conversation) == (message_id, b"invoice ready",
                                                                "n:carol")
    assert live.sender.service == "billing" and live.sender.user is None
    assert (live.module, live.receipt, live.to.kind) == ("invoices", True, "user")
    assert live.expires_at is not None

    await wait_until(lambda: wakes(webhook, "hook-carol-tablet"))
    [wake] = wakes(webhook, "hook-carol-tablet")
    status, details = await wakeup_details(system.url, tablet.token, wake["id"])
    assert status == 200, details
    [about] = details["conversations"]
    assert (about["kind"], about["conversation"], about["message_ids"]) == (
        "notification", "n:carol", [message_id])
    assert "invoice" not in json.dumps(webhook.for_token("hook-carol-tablet")[0].json)

    offline = await system.connect(tablet, sync=False)
    assert (await offline.sync()).count == 1
    assert (await next_notification(offline)).message_id == message_id  # from its inbox
    await offline.close()
    await phone.close()


async def test_a_broadcast_reaches_every_device_of_the_app(
        notify_system: System, webhook: WebhookReceiver) -> None:  # noqa: F811
    system = notify_system
    online = [await system.connect(await system.device(u, d))
              for u, d in (("bc1", "bc1-phone"), ("bc2", "bc2-phone"))]
    offline = [await offline_device(system, u, d, f"hook-{d}")
               for u, d in (("bc1", "bc1-tablet"), ("bc3", "bc3-phone"))]
    status, result = await rest_send(system, {"service": "ops", "notifications": [
        item("maintenance-1", {"kind": "app"}, b"maintenance tonight")]})
    assert status == 200 and result["accepted"] == 1, result
    assert result["results"][0]["recipients"] >= 3
    for client in online:
        message = await next_notification(client)
        assert message.body == b"maintenance tonight" and message.sender.service == "ops"
    for creds in offline:
        token = f"hook-{creds.device}"
        await wait_until(lambda: wakes(webhook, token))  # noqa: B023
        client = await system.connect(creds, sync=False)
        await client.sync()
        assert (await next_notification(client)).body == b"maintenance tonight"
        await client.close()
    for client in online:
        await client.close()


async def test_device_users_and_group_targets_in_one_batch(notify_system: System) -> None:
    system = notify_system
    dana_phone = await system.connect(await system.device("dana", "dana-phone"))
    dana_laptop = await system.connect(await system.device("dana", "dana-laptop"))
    eve = await system.connect(await system.device("eve", "eve-phone"))
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{system.url}/v1/groups",
                                headers={"Authorization": f"Bearer {eve.credentials.token}"},
                                json={"id": "team7", "members": ["dana"]}) as response:
            assert response.status == 201, await response.text()
    status, result = await rest_send(system, {"service": "hr", "notifications": [
        item("to-device", {"kind": "device", "id": "dana-laptop"}, b"only the laptop"),
        item("to-users", {"kind": "users", "ids": ["dana", "eve"]}, b"both of you"),
        item("to-group", {"kind": "group", "id": "team7"}, b"the team"),
        item("to-ghost", {"kind": "user", "id": "ghost"}),
        item("to-ghosts", {"kind": "users", "ids": ["eve", "ghost2"]}),
        item("to-no-device", {"kind": "device", "id": "no-such-device"}),
        item("to-no-group", {"kind": "group", "id": "no-such-group"}),
        item("too-big", {"kind": "user", "id": "eve"}, b"x" * 2000),
    ]})
    assert status == 200
    outcome = {r["id"]: r for r in result["results"]}
    assert (result["accepted"], result["failed"]) == (3, 5)
    for failed in ("to-ghost", "to-ghosts", "to-no-device", "to-no-group"):
        assert (outcome[failed]["status"], outcome[failed]["code"]) == (
            "failed", "unknown_recipient"), outcome[failed]
    assert outcome["too-big"]["code"] == "too_large"
    assert set(outcome["to-users"]["message_ids"]) == {"dana", "eve"}
    assert outcome["to-group"]["recipients"] == 2

    laptop = [(await next_notification(dana_laptop)).body for _ in range(3)]
    phone = [(await next_notification(dana_phone)).body for _ in range(2)]
    mine = [(await next_notification(eve)).body for _ in range(2)]
    assert laptop == [b"only the laptop", b"both of you", b"the team"]
    assert phone == [b"both of you", b"the team"]  # the device target skipped the phone
    assert mine == [b"both of you", b"the team"]
    for client in (dana_phone, dana_laptop, eve):
        await client.close()


async def test_a_retried_notification_is_delivered_once(notify_system: System) -> None:
    system = notify_system
    fay = await system.connect(await system.device("fay", "fay-phone"))
    request = {"service": "billing", "notifications": [
        item("dup-1", {"kind": "user", "id": "fay"}, b"once")]}
    first = await nats_send(system, request)
    second = await nats_send(system, request)
    assert first["value"]["results"] == second["value"]["results"]
    assert (await next_notification(fay)).body == b"once"
    await fay.ping()
    marker = await nats_send(system, {"service": "billing", "notifications": [
        item("dup-2", {"kind": "user", "id": "fay"}, b"next")]})
    assert marker["r"] == "ok"
    assert (await next_notification(fay)).body == b"next"  # no second "once" in between
    await fay.close()


async def test_bad_input_gets_typed_errors(notify_system: System) -> None:
    system = notify_system
    await system.device("gil", "gil-phone")
    ok = {"service": "svc", "notifications": [item("1", {"kind": "user", "id": "gil"})]}
    oversized = {"service": "svc", "notifications": [
        item(str(i), {"kind": "user", "id": "gil"}) for i in range(MAX_BATCH + 1)]}
    cases: list[tuple[Any, str | None, int, str]] = [
        (ok, None, 401, "unauthorized"),
        (ok, "wrong-secret", 401, "unauthorized"),
        (oversized, SERVICE_SECRET, 413, "too_large"),
        (b"x" * 250_000, SERVICE_SECRET, 413, "too_large"),
        (b"{not json", SERVICE_SECRET, 400, "bad_frame"),
        ({"service": "svc", "notifications": []}, SERVICE_SECRET, 422, "invalid"),
        ({"service": "bad service", "notifications": ok["notifications"]}, SERVICE_SECRET, 422,
         "invalid"),
        ({"service": "svc", "notifications": [item("1", {"kind": "planet", "id": "x"})]},
         SERVICE_SECRET, 422, "invalid"),
        ({"service": "svc", "notifications": [item("1", {"kind": "user", "id": "gil"}),
                                              item("1", {"kind": "user", "id": "gil"})]},
         SERVICE_SECRET, 422, "invalid"),
    ]
    for body, secret, status, code in cases:
        got_status, problem = await rest_send(system, body, secret)
        assert (got_status, problem["code"]) == (status, code), problem
    for body, code in ((oversized, "too_large"), (b"[]", "invalid"), (b"\xff", "bad_frame")):
        reply = await nats_send(system, body)
        assert (reply["r"], reply["code"]) == ("failed", code), reply
    status, result = await rest_send(system, ok)  # the service keeps working
    assert status == 200 and result["accepted"] == 1
