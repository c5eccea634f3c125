"""Push to offline devices through real endpoints: SNS (``moto_server``) and a webhook.

One push per burst and device, no body in any payload, rejected tokens disabled, transient
failures retried then dead-lettered, online devices left alone; the messages themselves come
from the backlog when the device reconnects.
"""

import base64
import json
import time
from collections.abc import Iterator
from typing import Any

import aiohttp
import msgspec
import nats
import pytest

from presence.registry import PresenceView
from push_worker.providers.webhook import SIGNATURE_HEADER, verify_signature
from schemas.push import PUSH_DEAD, PUSH_STREAM, DeadPush
from tests.conftest import store_env
from tests.e2e.social_helpers import call
from tests.harness import System
from tests.pushkit import (  # noqa: F401  (fixtures)
    WEBHOOK_SECRET,
    MotoServer,
    WebhookReceiver,
    moto,
    push_env,
    push_settled,
    register_push,
    wait_until,
    wakeup_details,
    webhook,
)


@pytest.fixture(scope="module")
def push_system(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest,
                moto: MotoServer, webhook: WebhookReceiver) -> Iterator[System]:  # noqa: F811
    limits = {"COURIER_PUSH_USER_PER_MINUTE": "120", "COURIER_PUSH_USER_BURST": "2"}
    with System(tmp_path_factory.mktemp("push"),
                {**store_env(request), **push_env(moto, webhook, **limits)}) as system:
        yield system


def fcm_wakes(moto: MotoServer, token: str) -> list[dict[str, Any]]:  # noqa: F811
    """The wake-ups SNS received for ``token`` (from the FCM payload), checking the structure
    real SNS requires."""
    wakes = []
    for structure in moto.messages(token):
        assert set(structure) == {"default", "GCM"}
        data = json.loads(structure["GCM"])["fcmV1Message"]["message"]["data"]
        wakes.append(json.loads(data["courier"]))
    return wakes


def webhook_wakes(webhook: WebhookReceiver, token: str) -> list[dict[str, Any]]:  # noqa: F811
    wakes = []
    for delivery in webhook.for_token(token):
        assert verify_signature(WEBHOOK_SECRET.encode(), delivery.headers[SIGNATURE_HEADER],
                                delivery.body, int(time.time()))
        wakes.append(delivery.json["wake"])
    return wakes


def assert_no_content(raw: str, bodies: list[bytes]) -> None:
    for body in bodies:
        assert body.decode() not in raw
        assert base64.b64encode(body).decode() not in raw


async def wait_online(system: System, device: str) -> None:
    """Wait until the presence registry (which routers watch) has the device online."""
    nc = await system.nats_client("admin")
    view = PresenceView(nc, gateway_ttl_s=3.0, replicas=1)
    try:
        await view.start()
        await wait_until(lambda: view.is_online("default", device))
    finally:
        await view.stop()
        await nc.close()


async def settle(system: System) -> None:
    await wait_until(lambda: push_settled(system), within_s=20)


async def test_an_offline_device_gets_one_push_per_burst_then_the_messages(
        push_system: System, moto: MotoServer, webhook: WebhookReceiver) -> None:  # noqa: F811
    system = push_system
    phone = await system.device("bob1", "bob1-phone")
    browser = await system.device("bob1", "bob1-web")
    await register_push(system.url, phone.token, "fcm", "fcm-bob1")
    await register_push(system.url, browser.token, "webhook", "hook-bob1")
    alice = await system.connect(await system.device("alice1"))
    bodies = [f"secret message {i}".encode() for i in range(5)]
    accepted = [await alice.send("bob1", body) for body in bodies]

    await wait_until(lambda: fcm_wakes(moto, "fcm-bob1") and webhook_wakes(webhook, "hook-bob1"))
    await settle(system)
    [sns_wake] = fcm_wakes(moto, "fcm-bob1")
    [hook_wake] = webhook_wakes(webhook, "hook-bob1")
    for wake, creds in ((sns_wake, phone), (hook_wake, browser)):
        assert set(wake) == {"id", "count", "collapse_key", "type", "v"}
        assert wake["count"] == 5 and wake["type"] == "wake"
        status, details = await wakeup_details(system.url, creds.token, wake["id"])
        assert status == 200, details
        [about] = details["conversations"]
        assert about["conversation"] == "d:alice1:bob1" and about["count"] == 5
        assert about["message_ids"] == [a.message_id for a in accepted]
        assert about["seq"] == accepted[-1].seq
    assert_no_content(json.dumps(moto.messages("fcm-bob1")), bodies)
    assert_no_content(b"".join(d.body for d in webhook.for_token("hook-bob1")).decode(), bodies)

    more = [await alice.send("bob1", f"later {i}".encode()) for i in range(2)]  # a second burst
    await wait_until(lambda: len(fcm_wakes(moto, "fcm-bob1")) == 2
                     and len(webhook_wakes(webhook, "hook-bob1")) == 2)
    await settle(system)
    assert [w["count"] for w in fcm_wakes(moto, "fcm-bob1")] == [5, 2]
    assert [w["count"] for w in webhook_wakes(webhook, "hook-bob1")] == [5, 2]

    for creds in (phone, browser):  # on reconnect, the messages themselves
        client = await system.connect(creds, sync=False)
        synced = await client.sync()
        assert synced.count == 7
        got = [await client.next_message() for _ in range(7)]
        assert [m.message_id for m in got] == [a.message_id for a in accepted + more]
        assert [m.body for m in got[:5]] == bodies
        await client.close()
    await alice.close()


async def test_online_devices_get_no_push(push_system: System, moto: MotoServer,  # noqa: F811
                                          webhook: WebhookReceiver) -> None:  # noqa: F811
    system = push_system
    phone = await system.device("bob2", "bob2-phone")
    browser = await system.device("bob2", "bob2-web")
    await register_push(system.url, phone.token, "fcm", "fcm-bob2")
    await register_push(system.url, browser.token, "webhook", "hook-bob2")
    online = await system.connect(phone)
    alice = await system.connect(await system.device("alice2"))
    await wait_online(system, "bob2-phone")
    for i in range(3):
        await alice.send("bob2", f"hi {i}".encode())
    assert [(await online.next_message()).body for _ in range(3)] == [b"hi 0", b"hi 1", b"hi 2"]
    await wait_until(lambda: webhook_wakes(webhook, "hook-bob2"))  # the offline one: pushed
    await settle(system)
    assert fcm_wakes(moto, "fcm-bob2") == []  # the online one: not
    assert len(webhook_wakes(webhook, "hook-bob2")) == 1
    await online.close()
    await alice.close()


async def get_registration(system: System, token: str) -> tuple[int, dict[str, Any]]:
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{system.url}/v1/devices/me/push",
                               headers={"Authorization": f"Bearer {token}"}) as response:
            return response.status, await response.json(content_type=None)


async def test_a_rejected_token_is_disabled_until_the_device_registers_again(
        push_system: System, moto: MotoServer, webhook: WebhookReceiver) -> None:  # noqa: F811
    system = push_system
    browser = await system.device("bob3", "bob3-web")
    phone = await system.device("bob3", "bob3-phone")
    await register_push(system.url, browser.token, "webhook", "hook-bob3-old")
    await register_push(system.url, phone.token, "fcm", "fcm-bob3")
    webhook.status["hook-bob3-old"] = 410  # the receiver says: this token is gone
    alice = await system.connect(await system.device("alice3"))
    await alice.send("bob3", b"one")
    await wait_until(lambda: fcm_wakes(moto, "fcm-bob3"))
    moto.client().set_endpoint_attributes(EndpointArn=moto.endpoint_arn("fcm-bob3"),
                                          Attributes={"Enabled": "false"})  # APNs/FCM feedback

    async def both_disabled() -> bool:
        regs = [await get_registration(system, c.token) for c in (browser, phone)]
        return all(status == 200 and reg.get("disabled") for status, reg in regs)

    await alice.send("bob3", b"two")  # SNS now refuses the endpoint
    await wait_until(both_disabled)
    _, registration = await get_registration(system, browser.token)
    assert registration["disabled_reason"] == "webhook answered 410"
    await settle(system)
    await alice.send("bob3", b"three")  # nothing is sent to disabled tokens
    await settle(system)
    assert len(webhook.for_token("hook-bob3-old")) == 1 and len(fcm_wakes(moto, "fcm-bob3")) == 1

    rotated = await register_push(system.url, browser.token, "webhook", "hook-bob3-new")
    assert not rotated.get("disabled")
    await alice.send("bob3", b"four")
    await wait_until(lambda: webhook_wakes(webhook, "hook-bob3-new"))
    assert webhook_wakes(webhook, "hook-bob3-new")[0]["count"] == 1
    await alice.close()


async def test_transient_failures_are_retried_then_dead_lettered(
        push_system: System, webhook: WebhookReceiver) -> None:  # noqa: F811
    system = push_system
    flaky = await system.device("bob4", "bob4-web")
    broken = await system.device("carol4", "carol4-web")
    await register_push(system.url, flaky.token, "webhook", "hook-bob4")
    await register_push(system.url, broken.token, "webhook", "hook-carol4")
    webhook.fail_next["hook-bob4"] = 1  # one 503, then fine
    webhook.status["hook-carol4"] = 503  # always failing
    alice = await system.connect(await system.device("alice4"))
    await alice.send("bob4", b"x")
    await alice.send("carol4", b"y")
    await wait_until(lambda: len(webhook.for_token("hook-bob4")) == 2)
    nc = await system.nats_client("admin")
    try:
        async def dead_letter() -> DeadPush | None:
            try:
                raw = await nc.jetstream().get_last_msg(PUSH_STREAM, PUSH_DEAD)
            except nats.js.errors.NotFoundError:
                return None
            assert raw.data is not None
            return msgspec.json.decode(raw.data, type=DeadPush)

        await wait_until(dead_letter, within_s=20)
        dead = await dead_letter()
        assert dead is not None
        assert (dead.device, dead.provider, dead.attempts) == ("carol4-web", "webhook", 3)
        assert dead.error == "webhook answered 503"
    finally:
        await nc.close()
    await settle(system)
    assert len(webhook.for_token("hook-carol4")) == 3  # max_attempts sends, then given up
    assert len(webhook.for_token("hook-bob4")) == 2  # one failure, one success
    await alice.close()


async def test_push_registration_bad_input(push_system: System) -> None:
    system = push_system
    creds = await system.device("bob5", "bob5-phone")
    cases: list[tuple[dict[str, str], Any, int, str]] = [
        ({}, {"platform": "fcm", "token": "t"}, 401, "unauthorized"),
        ({"Authorization": "Bearer nope"}, {"platform": "fcm", "token": "t"}, 401,
         "unauthorized"),
        ({"Authorization": f"Bearer {creds.token}"}, {"platform": "pager", "token": "t"}, 422,
         "invalid"),
        ({"Authorization": f"Bearer {creds.token}"}, {"platform": "fcm", "token": ""}, 422,
         "invalid"),
        ({"Authorization": f"Bearer {creds.token}"}, {"platform": "fcm", "token": "t",
                                                      "user": "mallory"}, 422, "invalid"),
        ({"Authorization": f"Bearer {creds.token}"}, "not json", 400, "bad_frame"),
        ({"Authorization": f"Bearer {creds.token}"}, {"platform": "fcm", "token": "x" * 20_000},
         413, "too_large"),
    ]
    async with aiohttp.ClientSession() as session:
        for headers, body, status, code in cases:
            data = body.encode() if isinstance(body, str) else json.dumps(body).encode()
            async with session.put(f"{system.url}/v1/devices/me/push", data=data,
                                   headers=headers) as response:
                problem = await response.json(content_type=None)
                assert (response.status, problem["code"]) == (status, code), problem
        async with session.get(f"{system.url}/v1/devices/me/push",
                               headers={"Authorization": f"Bearer {creds.token}"}) as response:
            assert response.status == 404
            assert (await response.json(content_type=None))["code"] == "not_found"
        await register_push(system.url, creds.token, "fcm", "t5")
        async with session.delete(f"{system.url}/v1/devices/me/push",
                                  headers={"Authorization": f"Bearer {creds.token}"}) as response:
            assert response.status == 204
    assert (await get_registration(system, creds.token))[0] == 404


async def test_the_per_user_limit_defers_and_coalesces_instead_of_dropping(
        push_system: System, webhook: WebhookReceiver) -> None:  # noqa: F811
    """Two pushes per user at once, then two per second (this module's limit): a third
    conversation's wake-up waits, and whatever arrives meanwhile joins it."""
    system = push_system
    device = await system.device("bob6", "bob6-web")
    await register_push(system.url, device.token, "webhook", "hook-bob6")
    senders = [await system.connect(await system.device(f"alice6{c}")) for c in "abc"]
    for sender in senders:
        await sender.send("bob6", b"hello")
    await wait_until(lambda: len(webhook.for_token("hook-bob6")) == 3)
    await settle(system)
    deliveries = webhook.for_token("hook-bob6")
    assert len(deliveries) == 3  # nothing dropped
    conversations = []
    for delivery in deliveries:
        status, details = await wakeup_details(system.url, device.token,
                                               delivery.json["wake"]["id"])
        assert status == 200, details
        conversations += [c["conversation"] for c in details["conversations"]]
    assert sorted(conversations) == ["d:alice6a:bob6", "d:alice6b:bob6", "d:alice6c:bob6"]
    assert deliveries[2].received_at - deliveries[0].received_at >= 0.4  # held back
    for sender in senders:
        await sender.close()


async def test_the_push_payload_names_nobody_and_the_device_trades_its_id(
        push_system: System, moto: MotoServer, webhook: WebhookReceiver) -> None:  # noqa: F811
    """Issue 10, finding 6: wake-ups named the conversation (``d:<a>:<b>``), so the push
    provider learned who talks to whom. As SNS and the webhook receive them now, they carry
    no conversation, user, device or message id of anyone but the target; the target device
    trades the opaque id for the details and fetches each message by id."""
    system = push_system
    phone = await system.device("yan7", "yan7-phone")
    browser = await system.device("yan7", "yan7-web")
    await register_push(system.url, phone.token, "fcm", "fcm-yan7")
    await register_push(system.url, browser.token, "webhook", "hook-yan7")
    sender = await system.connect(await system.device("zed7", "zed7-laptop"))
    member = await system.connect(await system.device("xo7", "xo7-tablet"))
    await call(sender, "POST", "/v1/groups", {"id": "qq7", "members": ["yan7", "xo7"]}, 201)
    direct = await sender.send("yan7", b"direct secret")
    grouped = await sender.send("qq7", b"group secret", kind="group")
    await wait_until(lambda: len(fcm_wakes(moto, "fcm-yan7")) >= 2
                     and len(webhook_wakes(webhook, "hook-yan7")) >= 2)
    await settle(system)

    named = ["zed7", "zed7-laptop", "xo7", "xo7-tablet", "qq7", direct.conversation,
             grouped.conversation, direct.message_id, grouped.message_id, "secret",
             "yan7-web"]  # the browser is not the phone's business either
    raw_sns = json.dumps(moto.messages("fcm-yan7"))
    for name in [*named, "yan7"]:  # SNS gets no user or device id at all
        assert name not in raw_sns, name
    hook_bodies = [d.json for d in webhook.for_token("hook-yan7")]
    for body in hook_bodies:  # the webhook is told its target, and only its target
        assert (body["user"], body["device"], body["token"]) == ("yan7", "yan7-web", "hook-yan7")
        raw_wake = json.dumps(body["wake"])
        for name in [*named[:-1], "yan7", "yan7-phone"]:
            assert name not in raw_wake, name
        raw_rest = json.dumps({k: v for k, v in body.items() if k != "wake"})
        for name in [*named[:-1], "yan7-phone"]:
            assert name not in raw_rest, name

    found: dict[str, list[str]] = {}
    for wake in fcm_wakes(moto, "fcm-yan7"):
        status, details = await wakeup_details(system.url, phone.token, wake["id"])
        assert status == 200, details
        assert details["id"] == wake["id"] and details["expires_at"] > details["created_at"]
        for about in details["conversations"]:
            found.setdefault(about["conversation"], []).extend(about["message_ids"])
        # the same user's other device, another user, and nobody get the same 404
        for token in (browser.token, sender.credentials.token):
            status, problem = await wakeup_details(system.url, token, wake["id"])
            assert (status, problem["code"]) == (404, "not_found")
    assert found[direct.conversation] == [direct.message_id]
    assert found[grouped.conversation][-1] == grouped.message_id  # after the group's creation

    async with aiohttp.ClientSession() as session:
        async def get(path: str, token: str | None) -> tuple[int, Any]:
            headers = {"Authorization": f"Bearer {token}"} if token else {}
            async with session.get(f"{system.url}{path}", headers=headers) as response:
                return response.status, await response.json(content_type=None)

        for path, status, code in (
                ("/v1/devices/me/push/wakeups/w" + "0" * 32, 404, "not_found"),
                ("/v1/devices/me/push/wakeups/nope", 422, "invalid"),
                ("/v1/devices/me/push/wakeups/w" + "0" * 33, 422, "invalid"),
                ("/v1/messages/" + "m" * 64, 404, "not_found"),  # at the bound
                ("/v1/messages/" + "m" * 65, 422, "invalid"),
                ("/v1/messages/m.1", 422, "invalid")):
            got, problem = await get(path, phone.token)
            assert (got, problem["code"]) == (status, code), path
        assert (await get("/v1/devices/me/push/wakeups/w" + "0" * 32, None))[0] == 401
        assert (await get(f"/v1/messages/{direct.message_id}", None))[0] == 401
        for message_id, body in ((direct.message_id, b"direct secret"),
                                 (grouped.message_id, b"group secret")):
            status, item = await get(f"/v1/messages/{message_id}", phone.token)
            assert status == 200, item
            assert item["message"]["message_id"] == message_id
            assert base64.b64decode(item["message"]["body"]) == body
            assert item["message"]["sender"]["user"] == "zed7"
        status, item = await get(f"/v1/messages/{grouped.message_id}", member.credentials.token)
        assert status == 200 and item["message"]["conversation"] == "g:qq7"  # a member
        status, item = await get(f"/v1/messages/{direct.message_id}", sender.credentials.token)
        assert status == 200 and item["status"] in ("sent", "delivered")  # its sender
        for token, message_id in ((member.credentials.token, direct.message_id),
                                  (phone.token, "m" + "0" * 32)):  # not a member; unknown
            status, problem = await get(f"/v1/messages/{message_id}", token)
            assert (status, problem["code"]) == (404, "not_found")
    for client in (sender, member):
        await client.close()
