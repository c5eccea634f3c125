"""System control: disabling devices, users and modules through the admin API and
``control.apply``; sockets closed with 4103 within a second and refused until re-enabled;
routers stop delivering; every action audited."""

import base64
import json
import time
from collections.abc import Iterator
from typing import Any

import aiohttp
import pytest

from client.sdk import ClientError, CourierClient, Credentials
from schemas.errors import CloseCode
from tests.conftest import store_env
from tests.harness import System
from tests.pushkit import (  # noqa: F401  (fixtures)
    ADMIN_SECRET,
    SERVICE_SECRET,
    MotoServer,
    WebhookReceiver,
    moto,
    nats_request,
    push_env,
    push_settled,
    register_push,
    wait_until,
    webhook,
)


@pytest.fixture(scope="module")
def control_system(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest,
                   moto: MotoServer, webhook: WebhookReceiver) -> Iterator[System]:  # noqa: F811
    with System(tmp_path_factory.mktemp("control"),
                {**store_env(request), **push_env(moto, webhook)}) as system:
        system.add_gateway()
        yield system


def action(verb: str, kind: str, target_id: str, **extra: Any) -> dict[str, Any]:
    target = {"kind": kind, "id": target_id}
    if "app" in extra:
        target["app"] = extra.pop("app")
    return {"action": verb, "target": target, "actor": "ops-ann", "reason": "test", **extra}


async def admin(system: System, body: Any, secret: str | None = ADMIN_SECRET,
                method: str = "POST", path: str = "/v1/admin/control",
                ) -> tuple[int, dict[str, Any]]:
    headers = {"Authorization": f"Bearer {secret}"} if secret else {}
    data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
    async with aiohttp.ClientSession() as session:
        async with session.request(method, f"{system.url}{path}", data=data,
                                   headers=headers) as response:
            return response.status, await response.json(content_type=None)


async def nats_control(system: System, body: Any) -> dict[str, Any]:
    return await nats_request(system, "admin", "control.apply", body)


async def upgrade_refused(url: str, creds: Credentials) -> tuple[int, str]:
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{url}/v1/ws",
                               headers={"Authorization": f"Bearer {creds.token}"}) as response:
            return response.status, (await response.json(content_type=None))["code"]


async def closed_within(client: CourierClient, started: float, limit_s: float) -> float:
    await wait_until(lambda: client.closed and client.close_code is not None, interval=0.01)
    elapsed = time.monotonic() - started
    assert elapsed < limit_s, f"closed after {elapsed:.2f}s"
    return elapsed


async def test_a_disabled_device_is_disconnected_within_a_second_until_re_enabled(
        control_system: System) -> None:
    system = control_system
    creds = await system.device("dan", "dan-phone")
    dan = await system.connect(creds)
    alice = await system.connect(await system.device("alice-c1"))
    started = time.monotonic()
    status, result = await admin(system, action("disable", "device", "dan-phone",
                                                reason="phone reported lost"))
    assert status == 200 and result["changed"] is True, result
    await closed_within(dan, started, 1.0)
    assert dan.close_code == CloseCode.DISABLED
    for index in range(2):  # refused on every gateway
        assert await upgrade_refused(system.gateway_url(index), creds) == (403, "disabled")
    accepted = await alice.send("dan", b"while you were away")  # stored, not delivered
    status, result = await admin(system, action("disable", "device", "dan-phone"))
    assert status == 200 and result["changed"] is False  # already disabled
    status, result = await admin(system, action("enable", "device", "dan-phone"))
    assert status == 200 and result["changed"] is True
    again = await system.connect(creds, sync=False)
    await again.sync()
    assert (await again.next_message()).message_id == accepted.message_id
    await again.close()
    await dan.close()
    await alice.close()


async def test_a_disabled_user_loses_every_device_and_gets_nothing_delivered(
        control_system: System, webhook: WebhookReceiver) -> None:  # noqa: F811
    system = control_system
    phone_creds = await system.device("erin", "erin-phone")
    laptop_creds = await system.device("erin", "erin-laptop")
    tablet = await system.device("erin", "erin-tablet")
    await register_push(system.url, tablet.token, "webhook", "hook-erin-tablet")
    control = await system.device("frank", "frank-tablet")  # a user that stays enabled
    await register_push(system.url, control.token, "webhook", "hook-frank-tablet")
    phone = await system.connect(phone_creds)
    laptop = await system.connect(laptop_creds, url=system.gateway_url(1))
    alice = await system.connect(await system.device("alice-c2"))

    started = time.monotonic()
    reply = await nats_control(system, action("disable", "user", "erin"))
    assert reply["r"] == "ok" and reply["value"]["changed"] is True, reply
    for client in (phone, laptop):
        await closed_within(client, started, 1.0)
        assert client.close_code == CloseCode.DISABLED
    assert await upgrade_refused(system.gateway_url(1), phone_creds) == (403, "disabled")

    held = await alice.send("erin", b"for erin")
    await alice.send("frank", b"for frank")
    await wait_until(lambda: webhook.for_token("hook-frank-tablet"))
    await wait_until(lambda: push_settled(system))
    assert webhook.for_token("hook-erin-tablet") == []  # the router skipped erin's devices

    reply = await nats_control(system, action("enable", "user", "erin"))
    assert reply["r"] == "ok" and reply["value"]["changed"] is True
    back = await system.connect(phone_creds, sync=False)
    await back.sync()
    assert (await back.next_message()).message_id == held.message_id
    for client in (back, phone, laptop, alice):
        await client.close()


async def test_a_disabled_module_refuses_sends_and_notifications(control_system: System) -> None:
    system = control_system
    await system.device("bob-c3")
    alice = await system.connect(await system.device("alice-c3"))
    bob = await system.connect(await system.device("bob-c3", "bob-c3-phone"))
    status, _ = await admin(system, action("disable", "module", "shop"))
    assert status == 200
    status, listing = await admin(system, None, method="GET")
    assert status == 200
    assert {"kind": "module", "id": "shop", "app": "default"}.items() <= next(
        s for s in listing["disabled"] if s["id"] == "shop").items()
    with pytest.raises(ClientError) as info:
        await alice.send("bob-c3", b"buy", module="shop")
    assert info.value.code == "disabled" and info.value.retry is False
    await alice.send("bob-c3", b"chat still works")
    assert (await bob.next_message()).body == b"chat still works"
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{system.url}/v1/notifications",
                                headers={"Authorization": f"Bearer {SERVICE_SECRET}"},
                                json={"service": "shop", "notifications": [{
                                    "id": "promo", "module": "shop",
                                    "to": {"kind": "user", "id": "bob-c3"},
                                    "body": base64.b64encode(b"sale").decode()}]}) as response:
            result = await response.json()
    assert result["results"][0]["code"] == "disabled"
    status, _ = await admin(system, action("enable", "module", "shop", app="default"))
    assert status == 200
    await alice.send("bob-c3", b"buy now", module="shop")
    message = await bob.next_message()
    assert (message.body, message.module) == (b"buy now", "shop")
    await alice.close()
    await bob.close()


async def test_every_action_is_audited(control_system: System) -> None:
    system = control_system
    await system.device("audited", "audited-phone")
    before = time.time() * 1000
    assert (await admin(system, action("disable", "user", "audited")))[0] == 200
    assert (await nats_control(system, action("enable", "user", "audited")))["r"] == "ok"
    assert (await admin(system, action("enable", "user", "audited")))[0] == 200
    status, page = await admin(system, None, method="GET", path="/v1/admin/audit?limit=500")
    assert status == 200
    mine = [e for e in page["entries"] if e["record"]["target"]["id"] == "audited"]
    assert [(e["record"]["action"], e["record"]["via"], e["record"]["changed"]) for e in mine] == [
        ("disable", "rest", True), ("enable", "nats", True), ("enable", "rest", False)]
    for entry in mine:
        record = entry["record"]
        assert record["actor"] == "ops-ann" and record["ts"] >= before
        assert record["target"] == {"kind": "user", "id": "audited", "app": "default"}
    seqs = [e["seq"] for e in page["entries"]]
    assert seqs == sorted(seqs)
    status, first = await admin(system, None, method="GET", path="/v1/admin/audit?limit=1")
    assert status == 200 and len(first["entries"]) == 1 and first["next_after"] == seqs[0]
    status, rest = await admin(system, None, method="GET",
                               path=f"/v1/admin/audit?after={seqs[0]}&limit=500")
    assert [e["seq"] for e in rest["entries"]] == seqs[1:]


async def test_bad_input_gets_typed_errors(control_system: System) -> None:
    system = control_system
    good = action("disable", "device", "nobody-device")
    cases: list[tuple[Any, str | None, int, str]] = [
        (good, None, 401, "unauthorized"),
        (good, SERVICE_SECRET, 401, "unauthorized"),
        (good, ADMIN_SECRET, 404, "unknown_recipient"),
        (action("disable", "user", "nobody-user"), ADMIN_SECRET, 404, "unknown_recipient"),
        (action("explode", "user", "x"), ADMIN_SECRET, 422, "invalid"),
        (action("disable", "planet", "x"), ADMIN_SECRET, 422, "invalid"),
        (action("disable", "user", "a.b"), ADMIN_SECRET, 422, "invalid"),
        # ids are per app: a user unknown in the named app is nobody
        (action("disable", "user", "x", app="default"), ADMIN_SECRET, 404, "unknown_recipient"),
        (action("disable", "device", "x", app="otherapp"), ADMIN_SECRET, 404,
         "unknown_recipient"),
        ({"action": "disable", "target": {"kind": "user", "id": "x"}}, ADMIN_SECRET, 422,
         "invalid"),
        (b"{nope", ADMIN_SECRET, 400, "bad_frame"),
        (b"x" * 20_000, ADMIN_SECRET, 413, "too_large"),
    ]
    for body, secret, status, code in cases:
        got = await admin(system, body, secret)
        assert (got[0], got[1]["code"]) == (status, code), (body, got)
    for path in ("/v1/admin/audit?limit=0", "/v1/admin/audit?after=x"):
        got = await admin(system, None, method="GET", path=path)
        assert (got[0], got[1]["code"]) == (422, "invalid")
    assert (await admin(system, None, None, method="GET", path="/v1/admin/audit"))[0] == 401
    for body, code in ((action("disable", "user", "nobody-user"), "unknown_recipient"),
                       (b"\xff", "bad_frame"), (b"{}", "invalid"), (b"x" * 20_000, "too_large")):
        reply = await nats_control(system, body)
        assert (reply["r"], reply["code"]) == ("failed", code), reply
