"""Composition root of the push worker process."""

from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js import api as js_api

from push_worker.pipeline import PushPipeline
from push_worker.providers.routing import ProviderRouter, build_providers
from push_worker.tokens import TokenRegistry
from push_worker.wakeups import WakeUps
from runtime.config import Config, PushConfig
from runtime.consumer import PullLoop
from runtime.deadletter import DeadLetters
from runtime.kv import ensure_bucket
from runtime.natsconn import close, connect, ensure_stream
from schemas.nats_permissions import PUSH as PUSH_WORKER
from schemas.push import (
    PUSH_CONSUMER,
    PUSH_JOBS,
    PUSH_STREAM,
    PUSH_TOKENS,
    PUSH_WAKEUPS,
    push_stream,
)

FETCH_BATCH = 256


class PushWorker:
    """Consumes ``push.jobs`` and calls the push providers."""

    def __init__(self, config: Config) -> None:
        self._config = config
        self._nc: Client | None = None
        self._loop: PullLoop | None = None
        self._pipeline: PushPipeline | None = None
        self._providers: ProviderRouter | None = None

    async def start(self) -> None:
        config = self._config
        self._nc = await connect(config.nats, "push_worker", PUSH_WORKER)
        js = self._nc.jetstream()
        await ensure_stream(js, push_stream(config.push.job_max_age_s), config.nats)
        await _ensure_consumer(js, config.push)
        tokens = TokenRegistry(await ensure_bucket(js, PUSH_TOKENS, config.nats.replicas))
        wakeups = WakeUps(await ensure_bucket(js, PUSH_WAKEUPS, config.nats.replicas))
        self._providers = build_providers(config.push)
        self._pipeline = PushPipeline(js, tokens, wakeups, self._providers, config.push)
        self._pipeline.start()
        self._loop = PullLoop(js, PUSH_STREAM, PUSH_CONSUMER, self._pipeline, batch=FETCH_BATCH,
                              dead_letters=await DeadLetters.open(js, config, "push"))
        await self._loop.start()

    async def drain(self) -> None:
        """Stop pulling, send what is held, ack."""
        if self._loop is not None:
            await self._loop.drain()
        if self._pipeline is not None:
            await self._pipeline.drain()

    async def stop(self) -> None:
        if self._loop is not None:
            await self._loop.stop()
        if self._pipeline is not None:
            await self._pipeline.stop()
        if self._providers is not None:
            await self._providers.close()
        if self._nc is not None:
            await close(self._nc)


async def _ensure_consumer(js: JetStreamContext, config: PushConfig) -> None:
    """The shared durable consumer on ``push.jobs`` (not on the dead letters beside them)."""
    consumer = js_api.ConsumerConfig(
        durable_name=PUSH_CONSUMER,
        filter_subject=PUSH_JOBS,
        ack_policy=js_api.AckPolicy.EXPLICIT,
        deliver_policy=js_api.DeliverPolicy.ALL,
        ack_wait=config.ack_wait_s,
        max_ack_pending=config.max_pending,
        max_deliver=-1,
    )
    await js.add_consumer(PUSH_STREAM, consumer)  # creates, or updates changed limits
