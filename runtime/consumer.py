"""A JetStream pull-consumer loop shared by the workers.

The loop fetches batches from a durable consumer and hands each batch to a handler. The handler
acks what it finished and terms what it can never process (poison); if it raises, the same
batch is retried in place with backoff (kept with "in progress" acks, so nothing overtakes
it), and after many attempts nak'ed so the loop goes on: one bad batch never kills the worker,
and nothing is acked that was not processed. ``drain`` stops fetching and waits for the
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
        max_attempts: int = 120,
    ) -> None:
        self._js = js
        self._stream = stream
        self._durable = durable
        self._handler = handler
        self._batch = batch
        self._max_backoff_s = max_backoff_s
        self._max_attempts = max_attempts
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
            await self._handle(msgs)
            backoff = 0.05

    async def _handle(self, msgs: list[Msg]) -> None:
        """Run the handler on one batch, retrying the same batch in place while it fails, so
        that no later batch overtakes it (a store outage must not reorder the stream). After
        ``max_attempts`` the batch is nak'ed and the loop moves on: a batch that can never
        succeed must not block the stream for good."""
        backoff = 0.05
        for attempt in range(1, self._max_attempts + 1):
            msgs = [msg for msg in msgs if not msg.is_acked]  # done or termed last time
            try:
                await self._handler(msgs)
                return
            except asyncio.CancelledError:
                raise
            except Exception:
                BATCH_FAILURES.labels(self._durable).inc()
                log.exception("batch_failed", consumer=self._durable, size=len(msgs),
                              attempt=attempt, retry_in_s=backoff)
            if self._stopping.is_set():
                break
            for msg in msgs:  # keep the batch ours while we wait
                await _in_progress_quietly(msg)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, self._max_backoff_s)
        for msg in msgs:
            await _nak_quietly(msg, backoff)


async def _in_progress_quietly(msg: Msg) -> None:
    if msg.is_acked:
        return
    try:
        await msg.in_progress()
    except Exception as exc:  # connection lost: redelivery after ack wait covers it
        log.debug("in_progress_failed", error=repr(exc))


async def _nak_quietly(msg: Msg, delay: float) -> None:
    try:
        await msg.nak(delay=delay)
    except Exception as exc:  # already acked/termed, or connection lost: redelivery covers it
        log.debug("nak_failed", error=repr(exc))
