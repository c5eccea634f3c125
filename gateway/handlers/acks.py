"""The acks of all of a gateway's sockets, published together: one ``ReceiptBatch`` per
partition per tick instead of one receipt envelope per ``ack`` frame.

``add`` takes a device's validated acks (membership was checked by ``Messaging.ack``); the
flush task publishes what is pending ``ack_flush_ms`` after the first ack of a tick, or at
once when a partition holds ``ack_batch_max`` items. An envelope carries at most
``ack_batch_max`` items. A publish that fails keeps its items for the next tick (at most four
times ``ack_batch_max`` per partition: past that the oldest are dropped and logged). An ack
that never reaches the store only costs a redelivery: the message stays in the device's
backlog and comes again at its next sync (delivery is at-least-once). ``drain`` publishes what
is pending before the gateway exits.
"""

import asyncio
import time
from collections import deque
from typing import Final

import structlog
from nats.errors import Error as NatsError
from prometheus_client import Counter, Histogram

from runtime.backoff import Backoff
from runtime.partitions import PartitionStreams
from runtime.tasks import TaskGroup
from schemas.envelopes import DeviceAcks, ReceiptBatch, encode_envelope
from schemas.frames import AckItem
from schemas.subjects import RECEIPT

log = structlog.get_logger(__name__)

ACK_BATCH_ITEMS = Histogram(
    "courier_gateway_ack_batch_items", "Ack items per published receipt batch",
    buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500, 1000))
ACK_BATCH_DEVICES = Histogram(
    "courier_gateway_ack_batch_devices", "Devices per published receipt batch",
    buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500, 1000))
ACK_FLUSHES = Counter("courier_gateway_ack_flushes_total",
                      "Receipt batch publishes, by result", ["result"])
ACKS_DROPPED = Counter("courier_gateway_acks_dropped_total",
                       "Ack items given up after failed publishes (redelivered at next sync)")
FLUSH_OK = ACK_FLUSHES.labels("ok")
FLUSH_FAILED = ACK_FLUSHES.labels("failed")

#: A partition keeps at most this many times ``batch_max`` items while its publishes fail.
KEPT_FACTOR: Final = 4
#: Longest wait between two attempts of a failing flush.
RETRY_CAP_S: Final = 1.0
#: Between two attempts of the final flush on ``drain``.
DRAIN_RETRY_S: Final = 0.1


def now_ms() -> int:
    return int(time.time() * 1000)


class AckBatcher:
    """Pending acks per partition, and the task that publishes them."""

    def __init__(self, streams: PartitionStreams, gateway_id: str, *, flush_ms: int,
                 batch_max: int) -> None:
        self._streams = streams
        self._gateway_id = gateway_id
        self._interval_s = flush_ms / 1000
        self._batch_max = batch_max
        self._max_kept = batch_max * KEPT_FACTOR
        self._pending: dict[int, deque[DeviceAcks]] = {}
        self._sizes: dict[int, int] = {}
        #: Set by the first ``add`` of a tick; a tick starts only when there is work.
        self._has_pending = asyncio.Event()
        #: Set when a partition holds ``batch_max`` items: flush before the tick ends.
        self._full = asyncio.Event()
        #: Resolved when the next flush has run, and when the running one has (``settle``).
        self._next_flush: asyncio.Future[None] | None = None
        self._flushing: asyncio.Future[None] | None = None
        self._tasks = TaskGroup("acks")
        self.log = log.bind(gateway=gateway_id)

    def start(self) -> None:
        self._tasks.watch(self._flush_forever, name="ack_flush")

    async def drain(self, timeout_s: float) -> None:
        """Stop the flush task, then publish what is pending (retrying until ``timeout_s``);
        what is still pending after it is logged as lost."""
        await self._tasks.drain()
        deadline = time.monotonic() + timeout_s
        while self.pending_items() and time.monotonic() < deadline:
            if not await self.flush():
                await asyncio.sleep(DRAIN_RETRY_S)
        if lost := self.pending_items():
            ACKS_DROPPED.inc(lost)
            self.log.warning("acks_lost_on_shutdown", items=lost)

    async def stop(self) -> None:
        await self._tasks.stop()
        self._resolve_waiters()

    def add(self, partition: int, acks: DeviceAcks) -> None:
        """Queue one device's acks of one partition for the next flush."""
        queue = self._pending.setdefault(partition, deque())
        queue.append(acks)
        self._sizes[partition] = self._sizes.get(partition, 0) + len(acks.items)
        self._bound(partition)
        self._has_pending.set()
        if self._sizes[partition] >= self._batch_max:
            self._full.set()

    def pending_items(self) -> int:
        return sum(self._sizes.values())

    async def settle(self) -> None:
        """Return once the acks pending now have been handed to a flush (published, or kept
        after a failure): a ``sync`` after an ``ack`` sees the ack in its barrier."""
        if self.pending_items():
            if self._next_flush is None:
                self._next_flush = asyncio.get_running_loop().create_future()
            await asyncio.shield(self._next_flush)
        elif self._flushing is not None:
            await asyncio.shield(self._flushing)

    async def _flush_forever(self) -> None:
        """A tick starts with the first pending ack; failed flushes are retried, backing off
        from the tick up to ``RETRY_CAP_S``."""
        backoff = Backoff(self._interval_s, max(self._interval_s, RETRY_CAP_S),
                          reset_after_s=self._interval_s)
        while True:
            await self._has_pending.wait()
            try:
                async with asyncio.timeout(self._interval_s):
                    await self._full.wait()
            except TimeoutError:
                pass
            if await self.flush():
                backoff.failures = 0
            else:
                await asyncio.sleep(backoff.failed(0.0))

    async def flush(self) -> bool:
        """Publish every partition's pending acks; False when a publish failed (its items
        stay pending)."""
        self._has_pending.clear()
        self._full.clear()
        taken = {partition: self._take(partition) for partition in list(self._pending)}
        flushing = self._next_flush or asyncio.get_running_loop().create_future()
        self._next_flush, self._flushing = None, flushing
        try:
            results = await asyncio.gather(*(self._publish(partition, batch)
                                             for partition, batches in taken.items()
                                             for batch in batches))
        finally:
            self._flushing = None
            if not flushing.done():
                flushing.set_result(None)
        if self.pending_items():
            self._has_pending.set()
        return all(results)

    def _take(self, partition: int) -> list[list[DeviceAcks]]:
        """The partition's pending acks, one entry per device, cut into envelopes of at most
        ``batch_max`` items."""
        queue = self._pending.pop(partition)
        self._sizes.pop(partition)
        by_device: dict[tuple[str, str, str], list[AckItem]] = {}
        for acks in queue:
            by_device.setdefault((acks.app, acks.user, acks.device), []).extend(acks.items)
        batches: list[list[DeviceAcks]] = [[]]
        room = self._batch_max
        for (app, user, device), items in by_device.items():
            while items:
                if room == 0:
                    batches.append([])
                    room = self._batch_max
                part, items = items[:room], items[room:]
                batches[-1].append(DeviceAcks(app=app, user=user, device=device, items=part))
                room -= len(part)
        return batches

    async def _publish(self, partition: int, entries: list[DeviceAcks]) -> bool:
        items = sum(len(entry.items) for entry in entries)
        data = encode_envelope(ReceiptBatch(ts=now_ms(), entries=entries,
                                            gateway=self._gateway_id))
        try:
            await self._streams.publish(partition, RECEIPT, data)
        except NatsError as exc:
            FLUSH_FAILED.inc()
            self.log.warning("ack_flush_failed", partition=partition, items=items,
                             error=repr(exc))
            self._keep(partition, entries)
            return False
        except BaseException:
            self._keep(partition, entries)  # cancelled (drain/stop): ``drain`` retries them
            raise
        FLUSH_OK.inc()
        ACK_BATCH_ITEMS.observe(items)
        ACK_BATCH_DEVICES.observe(len(entries))
        return True

    def _keep(self, partition: int, entries: list[DeviceAcks]) -> None:
        """Put a failed batch back before what arrived since."""
        queue = self._pending.setdefault(partition, deque())
        queue.extendleft(reversed(entries))
        self._sizes[partition] = (self._sizes.get(partition, 0)
                                  + sum(len(entry.items) for entry in entries))
        self._bound(partition)

    def _bound(self, partition: int) -> None:
        queue = self._pending[partition]
        dropped = 0
        while self._sizes[partition] > self._max_kept and len(queue) > 1:
            oldest = queue.popleft()
            self._sizes[partition] -= len(oldest.items)
            dropped += len(oldest.items)
        if dropped:
            ACKS_DROPPED.inc(dropped)
            self.log.warning("acks_dropped", partition=partition, items=dropped,
                             kept=self._sizes[partition])

    def _resolve_waiters(self) -> None:
        if self._next_flush is not None and not self._next_flush.done():
            self._next_flush.set_result(None)
        self._next_flush = None
