"""System callbacks: a client hands a payload to a declared handler; an internal service
consumes it from ``callback.<handler>`` with the sender's identity from the token."""

import asyncio
import base64
import json
from collections.abc import Iterator

import pytest
from nats.js.api import ConsumerConfig, DeliverPolicy

from client.sdk import ClientError
from schemas.callbacks import CALLBACKS_STREAM
from tests.conftest import store_env
from tests.harness import System


@pytest.fixture(scope="module")
def callback_system(tmp_path_factory: pytest.TempPathFactory,
                    request: pytest.FixtureRequest) -> Iterator[System]:
    with System(tmp_path_factory.mktemp("callbacks"), {
            **store_env(request), "COURIER_CALLBACKS_HANDLERS": "upload_logs,report",
            "COURIER_CALLBACKS_MAX_BODY_BYTES": "1024"}) as system:
        yield system


async def test_a_callback_reaches_its_handler_with_the_sender_identity(
        callback_system: System) -> None:
    system = callback_system
    client = await system.connect(await system.device("hal", "hal-phone"))
    accepted = await client.callback("upload_logs", b"2026-11-21 crash at launch")
    assert accepted.handler == "upload_logs" and accepted.callback_id.startswith("cb")
    nc = await system.nats_client("service")  # the internal service's own durable consumer
    try:
        subscription = await nc.jetstream().pull_subscribe(
            "callback.upload_logs", durable="log-collector", stream=CALLBACKS_STREAM,
            config=ConsumerConfig(deliver_policy=DeliverPolicy.ALL))
        [msg] = await subscription.fetch(1, timeout=10)
        envelope = json.loads(msg.data)
        await msg.ack()
    finally:
        await nc.close()
    assert envelope["id"] == accepted.callback_id
    assert (envelope["handler"], envelope["user"], envelope["device"], envelope["app"]) == (
        "upload_logs", "hal", "hal-phone", "default")
    assert base64.b64decode(envelope["body"]) == b"2026-11-21 crash at launch"
    await client.close()


async def test_bad_callbacks_get_typed_errors_and_the_socket_keeps_working(
        callback_system: System) -> None:
    system = callback_system
    client = await system.connect(await system.device("ida", "ida-phone"))
    for handler, body, code in (("launch_missiles", b"x", "unknown_recipient"),
                                ("report", b"x" * 1025, "too_large")):
        with pytest.raises(ClientError) as info:
            await client.callback(handler, body)
        assert info.value.code == code and info.value.retry is False
    for frame in ('{"type": "callback", "handler": "up.load", "body": ""}',
                  '{"type": "callback", "handler": "report"}',
                  '{"type": "callback", "handler": "report", "body": "", "user": "root"}'):
        await client.send_raw(frame)
        error = await asyncio.wait_for(client.errors.get(), 10)
        assert error.code == "invalid", error
    assert (await client.callback("report", b"ok")).handler == "report"
    await client.close()
