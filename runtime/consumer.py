"""A JetStream pull-consumer loop shared by the workers.

The loop fetches batches from a durable consumer and hands each batch to a handler. The handler
acks what it finished and terms what it can never process (poison); if it raises, the whole
batch is nak'ed with a delay and the loop backs off and goes on: one bad batch never kills the
worker, and nothing is acked that was not processed. ``drain`` stops fetching and waits for the
batch in hand; ``CancelledError`` is never swallowed.
"""

import asyncio
from collections.abc import Awaitable, Callable

import structlog
from nats.aio.msg import Msg
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js import JetStreamContext
from prometheus_client import Counter

log = structlog.get_logger(__name__)

BATCH_FAILURES = Counter(
    "courier_consumer_batch_failures_total", "Batches whose handler raised", ["consumer"]
)

BatchHandler = Callable[[list[Msg]], Awaitable[None]]


class PullLoop:
    """Fetch batches from ``durable`` on ``stream`` and pass them to ``handler``."""

    def __init__(
        self,
        js: JetStreamContext,
        stream: str,
        durable: str,
        handler: BatchHandler,
        *,
        batch: int,
        max_backoff_s: float = 5.0,
    ) -> None:
        self._js = js
        self._stream = stream
        self._durable = durable
        self._handler = handler
        self._batch = batch
        self._max_backoff_s = max_backoff_s
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()

    async def start(self) -> None:
        subscription = await self._js.pull_subscribe_bind(self._durable, stream=self._stream)
        self._task = asyncio.create_task(self._run(subscription), name=f"pull-{self._durable}")

    async def drain(self) -> None:
        """Stop fetching; wait for the batch in hand to be handled."""
        self._stopping.set()
        if self._task is not None:
            await self._task

    async def stop(self) -> None:
        if self._task is not None and not self._task.done():
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass

    async def _run(self, subscription: JetStreamContext.PullSubscription) -> None:
        backoff = 0.05
        while not self._stopping.is_set():
            try:
                msgs = await subscription.fetch(self._batch, timeout=0.5)
            except NatsTimeoutError:
                continue
            except Exception as exc:  # connection trouble: nats reconnects, we wait
                log.warning("fetch_failed", consumer=self._durable, error=repr(exc))
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self._max_backoff_s)
                continue
            try:
                await self._handler(msgs)
                backoff = 0.05
            except asyncio.CancelledError:
                raise
            except Exception:
                BATCH_FAILURES.labels(self._durable).inc()
                log.exception("batch_failed", consumer=self._durable, size=len(msgs),
                              retry_in_s=backoff)
                for msg in msgs:
                    await _nak_quietly(msg, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self._max_backoff_s)


async def _nak_quietly(msg: Msg, delay: float) -> None:
    try:
        await msg.nak(delay=delay)
    except Exception as exc:  # already acked/termed, or connection lost: redelivery covers it
        log.debug("nak_failed", error=repr(exc))
