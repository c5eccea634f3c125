"""A JetStream pull-consumer loop shared by the workers, and the isolation of what fails.

The loop fetches batches from a durable consumer and hands each batch to a handler. The handler
acks what it finished and may bury (dead-letter and term) what it cannot decode. When it
raises, ``Isolator`` decides what happens to the batch:

* A transient failure (``runtime.transient``: the store or NATS is unavailable, a timeout) is
  retried in place, forever, with backoff up to ``max_backoff_s``: nothing overtakes the batch
  (an outage must not reorder the stream) and nothing is dead-lettered because of an outage.
* Any other failure splits the batch in two, and each half is handled on its own, the first
  before the second (stream order), splitting again while a half fails, until the failing
  envelope is alone. An envelope that fails alone ``attempts`` times (``retry_s`` apart,
  doubling) is buried in the ``DLQ`` stream and termed; the rest of the batch goes on.

While a batch waits, its envelopes get "in progress" acks, so JetStream does not redeliver
them elsewhere. ``drain`` stops fetching and waits for the batch in hand, except while it
waits out a failure: then what is unacknowledged is nak'ed for redelivery.
``CancelledError`` is never swallowed.
"""

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

import structlog
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from prometheus_client import Counter

from runtime.deadletter import DeadLetters, RetryPolicy, describe
from runtime.tasks import cancel_and_wait
from runtime.transient import is_transient

log = structlog.get_logger(__name__)

BATCH_FAILURES = Counter(
    "courier_consumer_batch_failures_total", "Batches whose handler raised", ["consumer"]
)
SPLITS = Counter(
    "courier_consumer_splits_total", "Failing batches split in two to isolate an envelope",
    ["consumer"]
)

T = TypeVar("T")
BatchHandler = Callable[[list[Msg]], Awaitable[None]]
#: Waits so long before the next try; raises ``Abandoned`` when the loop is stopping.
Wait = Callable[[float], Awaitable[None]]

#: Longest single sleep between "in progress" acks while a batch waits (well inside any
#: sensible ack wait).
PROGRESS_EVERY_S = 1.0


class Abandoned(Exception):
    """The loop is stopping while a batch waits out a failure."""


class Isolator(Generic[T]):
    """Runs a batch handler so that one failing item cannot hold the items after it.

    Pure logic over any item type: ``handle`` runs a batch, ``bury`` gives up on one item,
    ``pending`` drops the items already settled (acked or termed by a failed run), ``wait``
    sleeps between tries."""

    def __init__(self, name: str, handle: Callable[[list[T]], Awaitable[None]],
                 bury: Callable[[T, BaseException, int], Awaitable[None]], policy: RetryPolicy,
                 *, pending: Callable[[list[T]], list[T]] = list,
                 transient: Callable[[BaseException], bool] = is_transient) -> None:
        self._name = name
        self._handle = handle
        self._bury = bury
        self._policy = policy
        self._pending = pending
        self._transient = transient

    async def run(self, items: list[T], wait: Wait) -> None:
        """Handle ``items`` in order; returns once each is handled or buried."""
        outage = self._policy.outage_backoff_s
        retry = self._policy.retry_s
        attempts = 0
        while items := self._pending(items):
            try:
                await self._handle(items)
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                BATCH_FAILURES.labels(self._name).inc()
                if self._transient(exc):
                    log.warning("batch_unavailable", consumer=self._name, size=len(items),
                                error=describe(exc), retry_in_s=outage)
                    await wait(outage)
                    outage = min(outage * 2, self._policy.max_backoff_s)
                    continue
                if len(items) > 1:
                    SPLITS.labels(self._name).inc()
                    log.warning("batch_split", consumer=self._name, size=len(items),
                                error=describe(exc))
                    middle = len(items) // 2
                    await self.run(items[:middle], wait)
                    await self.run(items[middle:], wait)
                    return
                attempts += 1
                log.error("envelope_failed", consumer=self._name, attempt=attempts,
                          of=self._policy.attempts, error=describe(exc), exc_info=attempts == 1)
                if attempts >= self._policy.attempts:
                    await self._give_up(items[0], exc, attempts, wait)
                    return
                await wait(retry)
                retry = min(retry * 2, self._policy.max_backoff_s)

    async def _give_up(self, item: T, exc: BaseException, attempts: int, wait: Wait) -> None:
        """Bury ``item``; while burying fails (NATS trouble), retry in place."""
        backoff = self._policy.outage_backoff_s
        while True:
            try:
                await self._bury(item, exc, attempts)
                return
            except asyncio.CancelledError:
                raise
            except Exception as failure:
                log.warning("dead_letter_failed", consumer=self._name, error=describe(failure),
                            retry_in_s=backoff)
                await wait(backoff)
                backoff = min(backoff * 2, self._policy.max_backoff_s)


def unsettled(msgs: list[Msg]) -> list[Msg]:
    """The messages not yet acked, nak'ed or termed."""
    return [msg for msg in msgs if not msg.is_acked]


class PullLoop:
    """Fetch batches from ``durable`` on ``stream`` and pass them to ``handler``.

    ``may_fetch`` (a partition's lease, ``runtime.partitions``) is asked before each fetch:
    once it says no, the loop ends. ``linger_s``: after a batch smaller than ``batch``, wait
    that long before fetching again, so that at low rates the next batch carries what
    arrived meanwhile (one transaction for several messages instead of one each); a drain
    does not wait for it."""

    def __init__(
        self,
        js: JetStreamContext,
        stream: str,
        durable: str,
        handler: BatchHandler,
        *,
        batch: int,
        dead_letters: DeadLetters,
        may_fetch: Callable[[], bool] = lambda: True,
        linger_s: float = 0.0,
    ) -> None:
        self._js = js
        self._may_fetch = may_fetch
        self._linger_s = linger_s
        self._stream = stream
        self._durable = durable
        self._batch = batch
        self._isolator = Isolator(durable, handler, dead_letters.bury, dead_letters.policy,
                                  pending=unsettled)
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()

    async def start(self) -> None:
        subscription = await self._js.pull_subscribe_bind(self._durable, stream=self._stream)
        self._task = asyncio.create_task(self._run(subscription), name=f"pull-{self._durable}")

    async def drain(self) -> None:
        """Stop fetching; wait for the batch in hand to be handled, and for a fetch in flight
        to end: a pull request cut short stays open on the server until it expires, and what
        the server sends to it would be lost to whoever consumes next (out of order)."""
        self._stopping.set()
        if self._task is not None:
            await self._task

    async def stop(self) -> None:
        if self._task is not None and not self._task.done():
            await cancel_and_wait([self._task])

    async def _run(self, subscription: JetStreamContext.PullSubscription) -> None:
        backoff = 0.05
        while not self._stopping.is_set():
            if not self._may_fetch():
                log.info("fetch_stopped", consumer=self._durable, stream=self._stream)
                return
            try:
                msgs = await subscription.fetch(self._batch, timeout=0.5)
            except TimeoutError:  # nats-py's own subclass, or asyncio's when the reply is late
                continue
            except Exception as exc:  # connection trouble: nats reconnects, we wait
                log.warning("fetch_failed", consumer=self._durable, error=repr(exc))
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
                continue
            await self._handle(msgs)
            backoff = 0.05
            if self._linger_s and len(msgs) < self._batch:
                await self._linger()

    async def _linger(self) -> None:
        """Wait ``linger_s``, or less if the loop is stopping."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self._linger_s):
                await self._stopping.wait()

    async def _handle(self, msgs: list[Msg]) -> None:
        async def wait(delay: float) -> None:
            """Keep the whole batch ours while part of it waits; give up when stopping."""
            while True:
                if self._stopping.is_set():
                    raise Abandoned
                for msg in unsettled(msgs):
                    await _in_progress_quietly(msg)
                step = min(delay, PROGRESS_EVERY_S)
                await asyncio.sleep(step)
                delay -= step
                if delay <= 0:
                    return

        try:
            await self._isolator.run(msgs, wait)
        except Abandoned:
            for msg in unsettled(msgs):
                await _nak_quietly(msg)


async def _in_progress_quietly(msg: Msg) -> None:
    try:
        await msg.in_progress()
    except Exception as exc:  # connection lost: redelivery after ack wait covers it
        log.debug("in_progress_failed", error=repr(exc))


async def _nak_quietly(msg: Msg) -> None:
    try:
        await msg.nak()
    except Exception as exc:  # already acked/termed, or connection lost: redelivery covers it
        log.debug("nak_failed", error=repr(exc))
