"""The pull loop's linger (``runtime.consumer.PullLoop``, ``store.linger_ms``) on a real
nats-server: after a small batch the loop waits before fetching again, so what arrives
meanwhile is handled as one batch; a drain does not wait for the linger."""

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import nats
import pytest
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js.api import AckPolicy, ConsumerConfig, StreamConfig

from infra.nats_server import NatsServer
from runtime.consumer import PullLoop
from runtime.deadletter import DeadLetters, RetryPolicy
from tests.e2e.social_helpers import wait_for

STREAM, SUBJECT, DURABLE = "LINGER", "linger.x", "worker"


@pytest.fixture
async def nc(tmp_path: Path) -> AsyncIterator[Client]:
    with NatsServer(tmp_path / "nats") as server:
        client = await nats.connect(server.url)
        js = client.jetstream()
        await js.add_stream(StreamConfig(name=STREAM, subjects=[SUBJECT]))
        await js.add_consumer(STREAM, ConsumerConfig(durable_name=DURABLE,
                                                     ack_policy=AckPolicy.EXPLICIT))
        try:
            yield client
        finally:
            await client.close()


async def batches_after_a_burst(nc: Client, linger_s: float) -> list[int]:
    """Batch sizes seen when one message is handled, then nine more are published 10 ms
    apart."""
    js = nc.jetstream()
    sizes: list[int] = []

    async def handle(msgs: list[Msg]) -> None:
        sizes.append(len(msgs))
        for msg in msgs:
            await msg.ack()

    loop = PullLoop(js, STREAM, DURABLE, handle, batch=100, linger_s=linger_s,
                    dead_letters=DeadLetters(js, "test", RetryPolicy()))
    await loop.start()
    try:
        await js.publish(SUBJECT, b"first")
        await wait_for(lambda: sizes == [1])
        for index in range(9):
            await js.publish(SUBJECT, str(index).encode())
            await asyncio.sleep(0.01)
        await wait_for(lambda: sum(sizes) == 10)
        return sizes
    finally:
        await loop.drain()


async def test_messages_arriving_during_the_linger_come_as_one_batch(nc: Client) -> None:
    assert await batches_after_a_burst(nc, linger_s=1.0) == [1, 9]


async def test_without_linger_each_message_is_fetched_as_it_comes(nc: Client) -> None:
    """The same burst without linger: several batches (the comparison that makes the first
    test mean something)."""
    assert len(await batches_after_a_burst(nc, linger_s=0.0)) > 2


async def test_a_drain_does_not_wait_for_the_linger(nc: Client) -> None:
    js = nc.jetstream()
    handled = asyncio.Event()

    async def handle(msgs: list[Msg]) -> None:
        for msg in msgs:
            await msg.ack()
        handled.set()

    loop = PullLoop(js, STREAM, DURABLE, handle, batch=100, linger_s=600.0,
                    dead_letters=DeadLetters(js, "test", RetryPolicy()))
    await loop.start()
    await js.publish(SUBJECT, b"one")
    await handled.wait()  # now lingering for 10 minutes
    async with asyncio.timeout(5):
        await loop.drain()
