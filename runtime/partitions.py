"""Partition ownership: each partition is consumed by one member of a service at a time.

Routers and storage workers each run a ``LeaseHolder``. Leases are keys of the ``leases`` KV
bucket (``lease.<service>.<p>``, value: the holder's member id); the bucket's TTL is the lease
time, so a key nobody renews vanishes ``lease_ttl_s`` after its last write. Every
third of the lease time (its ``lease_ttl_s``, or the bucket's TTL if shorter: during a
rolling change of the setting another member may have shortened it) a holder:

1. writes its member key (``member.<service>.<id>``: how many members are alive; a member
   that left deleted its key, whose delete marker does not count) and reads the bucket's TTL;
2. renews each lease it holds by compare-and-set on the revision it wrote last; a lease it
   could not renew (taken, expired) is lost, and its consumer is stopped;
3. gives back leases above its fair share, ``ceil(P / members)`` (the work stops first,
   drained, then the key is deleted), so a new member gets partitions;
4. takes free leases (create: only one creator wins) up to its share, and beyond it any
   partition found free on ``FREE_TICKS_BEFORE_EXTRA`` ticks running (nobody may leave a
   partition unowned; the wait gives a new member, whose share others just gave back, the
   first go).

Single writer: a holder counts its lease as valid only until ``LOCAL_VALIDITY`` of the TTL
after it *sent* the renewal that succeeded, which is before the key can expire on the server;
``holds`` is checked before each batch (``PartitionConsumers``), so a holder whose renewals
stall stops writing before another member can take the partition. What a crashed holder had
in flight is redelivered to the next one: taking a partition over recreates its durable
consumer at the acknowledged floor when the previous holder left messages unacknowledged, so
the new holder reads the partition in stream order (``reset_consumer``).
"""

import asyncio
import math
import os
import socket
import time
import uuid
from collections.abc import Callable
from typing import Final, Protocol

import msgspec
import structlog
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js import api as js_api
from nats.js.errors import BadRequestError, KeyValueError, NotFoundError
from nats.js.kv import KeyValue
from prometheus_client import Counter, Gauge

from runtime.config import Config, ConfigError
from runtime.consumer import BatchHandler, PullLoop
from runtime.deadletter import DeadLetters
from runtime.kv import ensure_bucket
from runtime.natsconn import ensure_stream
from runtime.tasks import TaskGroup
from schemas.buckets import DEPLOYMENT, LEASES
from schemas.partitions import partition_of, position
from schemas.streams import partition_stream
from schemas.subjects import msgs_stream, msgs_subject

log = structlog.get_logger(__name__)

#: Part of the TTL after a successful renewal's send for which a holder trusts its lease.
LOCAL_VALIDITY: Final = 0.8
#: Ticks running a partition must be seen free before a member at its fair share takes it.
FREE_TICKS_BEFORE_EXTRA: Final = 2
PARTITIONS_KEY: Final = "partitions"

LATE_BATCHES = Counter("courier_partition_late_batches_total", "Batches fetched after the "
                       "lease could no longer be trusted, left for the next holder",
                       ["consumer"])
HELD = Gauge("courier_partitions_held", "Partitions this process holds the lease of",
             ["service"])
MOVES = Counter("courier_partition_moves_total", "Partition leases acquired, released (handed "
                "back), lapsed (not renewed in time) or lost (another member has it)",
                ["service", "event"])


class PartitionWork(Protocol):
    """What a holder starts and stops per partition (``PartitionConsumers``)."""

    async def start(self, partition: int) -> None: ...

    async def stop(self, partition: int, *, drain: bool) -> None: ...


def member_id(service: str) -> str:
    """A process's id among its service's members: unique per process start."""
    return f"{service}-{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


def lease_key(service: str, partition: int) -> str:
    return f"lease.{service}.{partition}"


def member_key(service: str, member: str) -> str:
    return f"member.{service}.{member}"


async def open_leases(js: JetStreamContext, ttl_s: float, replicas: int) -> KeyValue:
    """The leases bucket with ``ttl_s`` as its TTL (changed in place if configured anew)."""
    spec = msgspec.structs.replace(LEASES, ttl_s=ttl_s)
    try:
        return await ensure_bucket(js, spec, replicas)
    except BadRequestError:  # exists with another TTL: the configuration changed
        info = await js.stream_info(f"KV_{LEASES.name}")
        info.config.max_age = ttl_s
        # the server refuses a duplicate window longer than the max age (a shorter TTL)
        info.config.duplicate_window = min(info.config.duplicate_window, ttl_s)
        await js.update_stream(info.config)
        return await js.key_value(LEASES.name)


async def check_partition_count(js: JetStreamContext, count: int, replicas: int) -> None:
    """Refuse to run with another partition count than the deployment's: the first process
    to start records its count; a process configured otherwise would hash conversations to
    other partitions (``ConfigError`` naming the key: exit 2)."""
    kv = await ensure_bucket(js, DEPLOYMENT, replicas)
    try:
        await kv.create(PARTITIONS_KEY, str(count).encode())
        return
    except (KeyValueError, BadRequestError):
        entry = await kv.get(PARTITIONS_KEY)
    recorded = int(entry.value or b"0")
    if recorded != count:
        raise ConfigError(f"partitions.count (COURIER_PARTITIONS_COUNT) is {count}, but this "
                          f"deployment runs {recorded} partitions (KV {DEPLOYMENT.name}."
                          f"{PARTITIONS_KEY}): stored positions depend on it")


class LeaseHolder:
    """The leases one member of ``service`` holds over ``count`` partitions."""

    def __init__(self, js: JetStreamContext, kv: KeyValue, *, service: str, count: int,
                 ttl_s: float, work: PartitionWork, member: str | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._js = js
        self._kv = kv
        self._service = service
        self._count = count
        self._ttl_s = ttl_s
        #: the lease time: ``ttl_s``, or the bucket's TTL if shorter (read at each tick)
        self._lease_s = ttl_s
        self._work = work
        self.member = member or member_id(service)
        self._clock = clock
        #: partition -> (revision of our last write, local deadline)
        self._held: dict[int, tuple[int, float]] = {}
        self._free_ticks: dict[int, int] = {}
        self._closed = False
        self._lock = asyncio.Lock()
        self._held_gauge = HELD.labels(service)

    @property
    def interval_s(self) -> float:
        return self._lease_s / 3

    @property
    def held(self) -> frozenset[int]:
        return frozenset(self._held)

    def holds(self, partition: int) -> bool:
        """Whether this member may still consume ``partition`` (its lease is surely valid)."""
        entry = self._held.get(partition)
        return entry is not None and self._clock() < entry[1]

    async def run(self) -> None:
        """Tick forever (run it under ``TaskGroup.watch``: a tick that fails is retried)."""
        while True:
            await self.tick()
            await asyncio.sleep(self.interval_s)

    async def tick(self) -> None:
        """One round: heartbeat, renew, rebalance, take (see the module docstring)."""
        async with self._lock:
            if self._closed:
                return
            await self._kv.put(member_key(self._service, self.member), self.member.encode())
            members, bucket_ttl_s = await self._survey()
            self._lease_s = min(self._ttl_s, bucket_ttl_s or self._ttl_s)
            for partition in list(self._held):
                await self._renew(partition)
            share = math.ceil(self._count / max(1, members))
            extras = sorted(self._held, reverse=True)[:max(0, len(self._held) - share)]
            await asyncio.gather(*(self._release(partition) for partition in extras))
            if not extras:
                await self._take(share)
            self._held_gauge.set(len(self._held))

    async def release_all(self) -> None:
        """Give every lease back (drained first) and leave the members: a clean shutdown
        hands the partitions over at once instead of after the TTL."""
        async with self._lock:
            self._closed = True
            await asyncio.gather(*(self._release(partition) for partition in sorted(self._held)))
            try:
                await self._kv.delete(member_key(self._service, self.member))
            except (KeyValueError, NotFoundError) as exc:
                log.info("member_delete_failed", error=repr(exc))
            self._held_gauge.set(0)

    async def _renew(self, partition: int) -> None:
        revision, deadline = self._held[partition]
        sent = self._clock()
        if sent >= deadline:
            await self._lose(partition, "lapsed")
            return
        try:
            revision = await self._kv.update(lease_key(self._service, partition),
                                             self.member.encode(), last=revision)
        except (KeyValueError, BadRequestError, NotFoundError) as exc:
            log.warning("lease_lost", service=self._service, partition=partition,
                        error=repr(exc))
            await self._lose(partition, "lost")
            return
        self._held[partition] = (revision, sent + self._lease_s * LOCAL_VALIDITY)

    async def _survey(self) -> tuple[int, float]:
        """The live members of the service, and the bucket's TTL (0: none)."""
        prefix = f"$KV.{LEASES.name}."
        info = await self._js.stream_info(f"KV_{LEASES.name}",
                                          subjects_filter=prefix + member_key(self._service, "*"))
        members = 0
        for subject in info.state.subjects or {}:
            try:  # a member that left cleanly: its delete marker stays until the TTL
                await self._kv.get(subject.removeprefix(prefix))
            except (KeyValueError, NotFoundError):
                continue
            members += 1
        return members, info.config.max_age or 0.0

    async def _take(self, share: int) -> None:
        start = hash(self.member) % self._count
        for step in range(self._count):
            partition = (start + step) % self._count
            if partition in self._held:
                continue
            if not await self._is_free(partition):
                self._free_ticks.pop(partition, None)
                continue
            ticks = self._free_ticks.get(partition, 0) + 1
            self._free_ticks[partition] = ticks
            if len(self._held) < share or ticks >= FREE_TICKS_BEFORE_EXTRA:
                await self._acquire(partition)

    async def _is_free(self, partition: int) -> bool:
        try:
            entry = await self._kv.get(lease_key(self._service, partition))
        except (KeyValueError, NotFoundError):  # never written, expired, or deleted
            return True
        return not entry.value

    async def _acquire(self, partition: int) -> None:
        sent = self._clock()
        try:
            revision = await self._kv.create(lease_key(self._service, partition),
                                             self.member.encode())
        except (KeyValueError, BadRequestError):
            return  # another member created it first
        self._free_ticks.pop(partition, None)
        self._held[partition] = (revision, sent + self._lease_s * LOCAL_VALIDITY)
        try:
            await self._work.start(partition)
        except BaseException:
            await self._release(partition)
            raise
        MOVES.labels(self._service, "acquired").inc()
        log.info("partition_taken", service=self._service, partition=partition,
                 member=self.member)

    async def _release(self, partition: int) -> None:
        """Stop the partition's work, drained within a tick (then cut short: the lease must
        not lapse while a batch takes long), then delete the lease."""
        try:
            await asyncio.wait_for(self._work.stop(partition, drain=True), self.interval_s)
        except TimeoutError:
            log.warning("partition_drain_cut", service=self._service, partition=partition)
        revision, _ = self._held.pop(partition)
        try:
            await self._kv.delete(lease_key(self._service, partition), last=revision)
        except (KeyValueError, BadRequestError, NotFoundError) as exc:
            log.info("lease_delete_failed", partition=partition, error=repr(exc))
        MOVES.labels(self._service, "released").inc()
        log.info("partition_released", service=self._service, partition=partition)

    async def _lose(self, partition: int, reason: str) -> None:
        """Another member may own it already: stop at once, nothing more is written."""
        self._held.pop(partition, None)
        await self._work.stop(partition, drain=False)
        MOVES.labels(self._service, reason).inc()
        log.warning("partition_lost", service=self._service, partition=partition,
                    reason=reason)


async def reset_consumer(js: JetStreamContext, stream: str, durable: str, *,
                         ack_wait_s: float, max_ack_pending: int) -> None:
    """Make ``durable`` deliver from its acknowledged floor, in stream order.

    Created if missing. If a previous holder left messages delivered but unacknowledged
    (also nak'ed ones), JetStream would redeliver them only after the ack wait, behind newer
    ones: the consumer is recreated to start right after the floor instead (acked messages
    above the floor are delivered again: every handler is idempotent)."""
    config = js_api.ConsumerConfig(
        durable_name=durable, ack_policy=js_api.AckPolicy.EXPLICIT,
        deliver_policy=js_api.DeliverPolicy.ALL, ack_wait=ack_wait_s,
        max_ack_pending=max_ack_pending, max_deliver=-1)
    try:
        info = await js.consumer_info(stream, durable)
    except NotFoundError:
        await js.add_consumer(stream, config)
        return
    floor = (info.ack_floor.stream_seq if info.ack_floor else 0) or 0
    delivered = (info.delivered.stream_seq if info.delivered else 0) or 0
    if delivered <= floor:  # nothing handed out beyond the floor: in order already
        return
    await js.delete_consumer(stream, durable)
    config.deliver_policy = js_api.DeliverPolicy.BY_START_SEQUENCE
    config.opt_start_seq = floor + 1
    await js.add_consumer(stream, config)
    log.info("consumer_reset", stream=stream, consumer=durable, floor=floor,
             delivered=delivered)


class LeaseLapsed(Exception):
    """Raised by a batch handler between two envelopes when its partition's lease is no
    longer trusted (``Lease.check``): a batch that runs long (a loaded machine, a slow
    store) must not go on writing past the moment another member may take over."""


class Lease:
    """What a batch handler sees of its partition's lease."""

    def __init__(self, partition: int, holds: Callable[[int], bool]) -> None:
        self.partition = partition
        self._holds = holds

    def check(self) -> None:
        """Raise ``LeaseLapsed`` unless the lease is still surely held."""
        if not self._holds(self.partition):
            raise LeaseLapsed(f"lease of partition {self.partition} lapsed")


class PartitionConsumers:
    """One pull loop per held partition (the ``PartitionWork`` of routers and storage
    workers). ``handler_for(lease)`` makes the batch handler of ``lease.partition``; a batch
    is handled only while ``holds(p)``, and a handler calls ``lease.check()`` before each
    envelope's writes: what is left of a batch once the lease lapsed stays unacknowledged
    for the next holder."""

    def __init__(self, js: JetStreamContext, durable: str,
                 handler_for: Callable[[Lease], BatchHandler], *, batch: int,
                 dead_letters: DeadLetters, ack_wait_s: float, max_ack_pending: int,
                 linger_s: float = 0.0) -> None:
        self._js = js
        self._durable = durable
        self._handler_for = handler_for
        self._batch = batch
        self._linger_s = linger_s
        self._dead_letters = dead_letters
        self._ack_wait_s = ack_wait_s
        self._max_ack_pending = max_ack_pending
        self._loops: dict[int, PullLoop] = {}
        self.holds: Callable[[int], bool] = lambda partition: True

    async def start(self, partition: int) -> None:
        stream = msgs_stream(partition)
        await reset_consumer(self._js, stream, self._durable, ack_wait_s=self._ack_wait_s,
                             max_ack_pending=self._max_ack_pending)
        loop = PullLoop(self._js, stream, self._durable,
                        self._guarded(partition, self._handler_for(
                            Lease(partition, lambda p: self.holds(p)))),
                        batch=self._batch, dead_letters=self._dead_letters,
                        may_fetch=lambda: self.holds(partition), linger_s=self._linger_s)
        await loop.start()
        self._loops[partition] = loop

    async def stop(self, partition: int, *, drain: bool) -> None:
        """Stop a partition's loop; ``drain``: after the batch in hand (a cancelled drain
        still stops it)."""
        loop = self._loops.get(partition)
        if loop is None:
            return
        try:
            if drain:
                await loop.drain()
        finally:
            await loop.stop()
            self._loops.pop(partition, None)

    async def stop_all(self) -> None:
        for partition in list(self._loops):
            await self.stop(partition, drain=False)

    def _guarded(self, partition: int, handler: BatchHandler) -> BatchHandler:
        async def handle(msgs: list[Msg]) -> None:
            if not self.holds(partition):
                # Left unacknowledged, not nak'ed: a nak would hand them out again at once,
                # behind newer ones. The next holder resets the consumer to the floor.
                LATE_BATCHES.labels(self._durable).inc()
                return
            try:
                await handler(msgs)
            except LeaseLapsed:  # mid-batch: the rest stays unacknowledged, as above
                LATE_BATCHES.labels(self._durable).inc()

        return handle


class PartitionStreams:
    """Publishing into the partition streams, and reading where each one stands."""

    def __init__(self, js: JetStreamContext, count: int) -> None:
        self._js = js
        self.count = count

    def of(self, app: str, conversation: str) -> int:
        return partition_of(app, conversation, self.count)

    async def publish(self, partition: int, kind: str, data: bytes, *,
                      msg_id: str | None = None, timeout: float = 5.0) -> int:
        """Publish one envelope (``kind``: ``schemas.subjects.CHAT`` ...) into a partition;
        returns its position. Raises what nats-py raises."""
        headers = {"Nats-Msg-Id": msg_id} if msg_id else None
        ack = await self._js.publish(msgs_subject(partition, kind), data,
                                     stream=msgs_stream(partition), timeout=timeout,
                                     headers=headers)
        return position(int(ack.seq), partition, self.count)

    async def last_sequences(self) -> list[int]:
        """Each partition stream's last sequence (a barrier: see ``schemas.rpc.SyncRequest``).
        Raises what nats-py raises."""
        infos = await asyncio.gather(*(self._js.stream_info(msgs_stream(partition))
                                       for partition in range(self.count)))
        return [int(info.state.last_seq) for info in infos]


async def ensure_partition_streams(js: JetStreamContext, config: Config, *,
                                   owner: bool) -> None:
    """Check the deployment's partition count, then create each partition's stream if it is
    missing (``owner``, the storage worker: also apply configuration changes)."""
    await check_partition_count(js, config.partitions.count, config.nats.replicas)
    for partition in range(config.partitions.count):
        await ensure_stream(js, partition_stream(partition), config.nats, update=owner)


class PartitionOwnership:
    """A service's share of the partitions: its lease holder and one pull loop per held
    partition, started, drained (each partition handed back at once) and stopped together."""

    def __init__(self, js: JetStreamContext, config: Config, *, service: str, durable: str,
                 handler_for: Callable[[Lease], BatchHandler], batch: int,
                 dead_letters: DeadLetters, linger_s: float = 0.0) -> None:
        self._js = js
        self._config = config
        self._service = service
        self.consumers = PartitionConsumers(
            js, durable, handler_for, batch=batch, dead_letters=dead_letters,
            ack_wait_s=config.nats.ack_wait_s, max_ack_pending=20_000, linger_s=linger_s)
        self._holder: LeaseHolder | None = None
        self._tasks = TaskGroup(f"{service}-partitions")

    async def start(self) -> None:
        """Take a first share of the partitions, then keep the leases (every tick)."""
        partitions = self._config.partitions
        self._holder = LeaseHolder(
            self._js, await open_leases(self._js, partitions.lease_ttl_s,
                                        self._config.nats.replicas),
            service=self._service, count=partitions.count, ttl_s=partitions.lease_ttl_s,
            work=self.consumers)
        self.consumers.holds = self._holder.holds
        await self._holder.tick()
        self._tasks.watch(self._holder.run, name="leases")

    async def drain(self) -> None:
        await self._tasks.drain()
        if self._holder is not None:
            await self._holder.release_all()

    async def stop(self) -> None:
        await self._tasks.stop()
        await self.consumers.stop_all()
