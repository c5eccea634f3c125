"""Partition leases (``runtime.partitions``) against a real nats-server with the generated
permissions: every holder connects as the ``router`` credential, so these tests also prove
that its grants suffice for the leases, changing their TTL and the per-partition consumers.

A fake ``PartitionWork`` records each holder's starts and stops (``time.monotonic``, the
holders' own clock) and checks, at every start, that no other holder still counts the
partition as held: the single-writer rule, checked at the moment it matters."""

import asyncio
import contextlib
import itertools
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.errors import KeyNotFoundError
from nats.js.kv import KeyValue

from infra.nats_auth import NatsCredentials
from infra.nats_server import NatsServer
from runtime.config import NatsConfig
from runtime.deadletter import DeadLetters, RetryPolicy
from runtime.natsconn import ensure_stream
from runtime.partitions import (
    LOCAL_VALIDITY,
    Lease,
    LeaseHolder,
    PartitionConsumers,
    lease_key,
    member_key,
    open_leases,
    reset_consumer,
)
from schemas.nats_permissions import GATEWAY, ROUTER
from schemas.streams import partition_stream
from schemas.subjects import CHAT, ROUTER_CONSUMER, msgs_stream, msgs_subject
from tests.e2e.social_helpers import wait_for

TTL_S = 2.0
SERVICE = "router"
#: How long the fake work takes to drain a partition it gives up.
DRAIN_S = 0.1


@dataclass
class Interval:
    """One holder's ownership of one partition, from its work's start to its stop."""

    holder: str
    partition: int
    start: float
    stop: float = math.inf
    drained: bool | None = None


@dataclass
class Ledger:
    """Every holder's work, one ledger: intervals per partition, and single-writer checks."""

    holders: dict[str, LeaseHolder] = field(default_factory=dict)
    intervals: list[Interval] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)

    def running(self, name: str) -> set[int]:
        return {i.partition for i in self.intervals
                if i.holder == name and i.stop == math.inf}

    def of(self, partition: int) -> list[Interval]:
        return sorted((i for i in self.intervals if i.partition == partition),
                      key=lambda i: i.start)


class FakeWork:
    """The ``PartitionWork`` of one holder, writing into the shared ledger."""

    def __init__(self, name: str, ledger: Ledger) -> None:
        self.name = name
        self.ledger = ledger

    async def start(self, partition: int) -> None:
        now = time.monotonic()
        for name, other in self.ledger.holders.items():
            if name != self.name and other.holds(partition):
                self.ledger.violations.append(f"{self.name} started {partition} while {name} "
                                              f"held it")
        if partition in self.ledger.running(self.name):
            self.ledger.violations.append(f"{self.name} started {partition} twice")
        self.ledger.intervals.append(Interval(self.name, partition, now))

    async def stop(self, partition: int, *, drain: bool) -> None:
        if drain:  # finishing the batches in flight takes a while
            await asyncio.sleep(DRAIN_S)
        now = time.monotonic()
        for interval in self.ledger.intervals:
            if (interval.holder, interval.partition, interval.stop) == (self.name, partition,
                                                                         math.inf):
                interval.stop, interval.drained = now, drain
                return
        self.ledger.violations.append(f"{self.name} stopped {partition}, never started")


@dataclass
class Bus:
    server: NatsServer
    credentials: NatsCredentials
    clients: list[Client] = field(default_factory=list)

    async def js(self, credential: str = ROUTER) -> JetStreamContext:
        nc = await self.credentials.connect(self.server.url, credential)
        self.clients.append(nc)
        return nc.jetstream()


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[tuple[NatsServer, NatsCredentials]]:
    credentials = NatsCredentials.ensure(tmp_path / "credentials")
    with NatsServer(tmp_path / "nats", authorization=credentials.authorization()) as server:
        yield server, credentials


@pytest.fixture
async def bus(nats_server: tuple[NatsServer, NatsCredentials]) -> AsyncIterator[Bus]:
    bus = Bus(*nats_server)
    try:
        yield bus
    finally:
        for nc in bus.clients:
            await nc.close()


class Holders:
    """Holders of one service, each driven by ``run()`` in its own task, one ledger."""

    def __init__(self, js: JetStreamContext, kv: KeyValue, count: int) -> None:
        self.js, self.kv, self.count = js, kv, count
        self.ledger = Ledger()
        self.tasks: dict[str, asyncio.Task[None]] = {}

    def new(self, name: str) -> LeaseHolder:
        holder = LeaseHolder(self.js, self.kv, service=SERVICE, count=self.count, ttl_s=TTL_S,
                             work=FakeWork(name, self.ledger), member=name)
        self.ledger.holders[name] = holder
        return holder

    def join(self, name: str) -> LeaseHolder:
        holder = self.new(name)
        self.tasks[name] = asyncio.create_task(holder.run())
        return holder

    async def crash(self, name: str) -> None:
        """Cancel the holder's task, no ``release_all``: its leases lapse on the server."""
        task = self.tasks.pop(name)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    async def leave(self, name: str) -> None:
        await self.crash(name)
        await self.ledger.holders[name].release_all()

    async def close(self) -> None:
        for name in list(self.tasks):
            await self.leave(name)

    def live(self) -> dict[str, frozenset[int]]:
        return {name: self.ledger.holders[name].held for name in self.tasks}

    def balanced(self) -> bool:
        """Disjoint, every partition owned, shares differ by at most one."""
        held = list(self.live().values())
        sizes = [len(h) for h in held]
        union = frozenset().union(*held)
        return (sum(sizes) == self.count == len(union)
                and max(sizes) - min(sizes) <= 1)

    def check_single_writer(self) -> None:
        assert not self.ledger.violations
        for partition in range(self.count):
            intervals = self.ledger.of(partition)
            for before, after in itertools.pairwise(intervals):
                assert before.stop < after.start, (partition, before, after)


@pytest.fixture
async def holders_factory(bus: Bus) -> AsyncIterator[Callable[[int], Holders]]:
    made: list[Holders] = []
    js = await bus.js()
    kv = await open_leases(js, TTL_S, 1)

    def make(count: int) -> Holders:
        made.append(Holders(js, kv, count))
        return made[-1]

    try:
        yield make
    finally:
        for holders in made:
            await holders.close()


async def test_one_holder_takes_all_and_a_clean_release_hands_over_at_once(
        holders_factory: Callable[[int], Holders]) -> None:
    holders = holders_factory(4)
    first = holders.new("first")
    await first.tick()
    assert first.held == {0, 1, 2, 3}
    assert all(first.holds(p) for p in range(4))
    assert holders.ledger.running("first") == {0, 1, 2, 3}

    await first.release_all()
    assert not any(first.holds(p) for p in range(4))
    assert [(i.partition, i.drained) for i in sorted(holders.ledger.intervals,
                                                    key=lambda i: i.partition)] == [
        (p, True) for p in range(4)]
    for partition in range(4):
        with pytest.raises(KeyNotFoundError):
            await holders.kv.get(lease_key(SERVICE, partition))
    await first.tick()  # closed: takes nothing back
    assert first.held == frozenset()

    second = holders.new("second")
    await second.tick()  # no TTL wait: the first one left the members too
    assert second.held == {0, 1, 2, 3}
    for partition in range(4):
        assert (await holders.kv.get(lease_key(SERVICE, partition))).value == b"second"
    holders.check_single_writer()
    await second.release_all()


@pytest.mark.parametrize("count", [4, 16])
async def test_two_holders_converge_to_disjoint_halves(
        holders_factory: Callable[[int], Holders], count: int) -> None:
    holders = holders_factory(count)
    a = holders.join("a")
    await wait_for(lambda: len(a.held) == count, 5)
    b = holders.join("b")
    await wait_for(lambda: len(a.held) == len(b.held) == count // 2, 10)
    assert a.held.isdisjoint(b.held) and a.held | b.held == set(range(count))
    for partition in range(count):
        owner = "a" if partition in a.held else "b"
        assert (await holders.kv.get(lease_key(SERVICE, partition))).value == owner.encode()
    # what a gave up it stopped drained, before b started it
    moved = [i for i in holders.ledger.intervals if i.holder == "a" and i.stop != math.inf]
    assert sorted(i.partition for i in moved) == sorted(b.held)
    assert all(i.drained for i in moved)
    holders.check_single_writer()


async def test_single_writer_while_holders_join_leave_and_crash(
        holders_factory: Callable[[int], Holders]) -> None:
    holders = holders_factory(6)
    a = holders.join("a")
    await wait_for(lambda: len(a.held) == 6, 5)
    holders.join("b")
    await wait_for(holders.balanced, 10)
    c = holders.join("c")
    await wait_for(lambda: holders.balanced() and len(c.held) == 2, 10)

    await holders.leave("b")  # clean: its partitions are free at once
    await wait_for(holders.balanced, 5)

    crashed = set(c.held)
    await holders.crash("c")
    crashed_at = time.monotonic()
    # the crashed holder's local deadlines: what its holds() compares the clock with
    deadlines = {p: c._held[p][1] for p in crashed}
    assert max(deadlines.values()) <= crashed_at + TTL_S * LOCAL_VALIDITY
    interval_s = TTL_S / 3
    await wait_for(lambda: a.held == set(range(6)), TTL_S + 2 * interval_s + 0.5)
    for partition in crashed:
        new_start = holders.ledger.of(partition)[-1]
        assert new_start.holder == "a"
        assert deadlines[partition] < new_start.start  # c had stopped counting it as held
        assert not c.holds(partition)
    # the crashed holder's intervals end at its local deadline (its work was never stopped)
    for interval in holders.ledger.intervals:
        if interval.holder == "c" and interval.stop == math.inf:
            interval.stop = deadlines[interval.partition]
    holders.check_single_writer()
    assert {i.holder for i in holders.ledger.intervals} == {"a", "b", "c"}


@pytest.mark.parametrize("intrusion", ["put", "delete"])
async def test_a_lease_overwritten_elsewhere_is_lost_at_the_next_tick(
        holders_factory: Callable[[int], Holders], intrusion: str) -> None:
    holders = holders_factory(4)
    holder = holders.new("h")
    await holder.tick()
    assert holder.held == {0, 1, 2, 3}
    if intrusion == "put":
        await holders.kv.put(lease_key(SERVICE, 2), b"intruder")
    else:
        await holders.kv.delete(lease_key(SERVICE, 2))
    assert holder.holds(2)  # it cannot know before it renews
    await holder.tick()
    lost = holders.ledger.of(2)[0]
    assert lost.stop != math.inf and lost.drained is False
    assert all(holder.holds(p) for p in (0, 1, 3))
    if intrusion == "put":  # somebody else's now: not taken back
        assert not holder.holds(2)
        assert (await holders.kv.get(lease_key(SERVICE, 2))).value == b"intruder"
    else:  # free again: taken anew, after the stop
        assert holder.holds(2) and holders.ledger.of(2)[1].start > lost.stop
    holders.check_single_writer()
    await holder.release_all()


async def test_reset_consumer_starts_at_the_acknowledged_floor(bus: Bus) -> None:
    js = await bus.js(ROUTER)
    publisher = await bus.js(GATEWAY)
    stream = msgs_stream(0)
    await ensure_stream(js, partition_stream(0), NatsConfig(), update=False)
    for n in range(1, 11):
        await publisher.publish(msgs_subject(0, CHAT), str(n).encode(), stream=stream)

    async def reset() -> None:
        await reset_consumer(js, stream, ROUTER_CONSUMER, ack_wait_s=30, max_ack_pending=100)

    await reset()  # missing: created, from the start
    sub = await js.pull_subscribe_bind(ROUTER_CONSUMER, stream)
    for msg in await sub.fetch(3, timeout=5):
        await msg.ack_sync()
    unacked = await sub.fetch(3, timeout=5)
    assert [m.data for m in unacked] == [b"4", b"5", b"6"]
    await sub.unsubscribe()

    await reset()  # 4..6 in flight: recreated right after the floor (3)
    sub = await js.pull_subscribe_bind(ROUTER_CONSUMER, stream)
    got = await sub.fetch(7, timeout=5)
    assert [m.data for m in got] == [str(n).encode() for n in range(4, 11)]
    for msg in got:
        await msg.ack_sync()
    before = await js.consumer_info(stream, ROUTER_CONSUMER)
    assert before.num_ack_pending == 0
    await sub.unsubscribe()

    await reset()  # nothing pending: left alone
    after = await js.consumer_info(stream, ROUTER_CONSUMER)
    assert after.created == before.created
    assert after.delivered.stream_seq == before.delivered.stream_seq == 10
    await publisher.publish(msgs_subject(0, CHAT), b"11", stream=stream)
    sub = await js.pull_subscribe_bind(ROUTER_CONSUMER, stream)
    assert [m.data for m in await sub.fetch(5, timeout=5)] == [b"11"]
    await sub.unsubscribe()


async def test_a_partition_free_on_two_ticks_is_taken_beyond_the_fair_share(
        holders_factory: Callable[[int], Holders]) -> None:
    """A member that counts but takes nothing (here a member key alone) must not leave
    partitions unowned: the others take them once seen free on two ticks running."""
    holders = holders_factory(4)
    await holders.kv.put(member_key(SERVICE, "idle"), b"idle")
    holder = holders.new("h")
    await holder.tick()
    assert len(holder.held) == 2  # its share: ceil(4 / 2)
    await holder.tick()
    assert holder.held == {0, 1, 2, 3}
    holders.check_single_writer()
    await holder.release_all()


async def test_a_shorter_bucket_ttl_shortens_a_longer_configured_holders_trust(
        bus: Bus) -> None:
    """A rolling change of ``lease_ttl_s`` from 6 to 2 s: a member still configured with 6
    must not trust its lease beyond the moment the server expires it (2 s after a write).
    The router credential may change the TTL (before, the change was refused)."""
    open_js = await bus.js()
    await open_leases(open_js, 6.0, 1)
    kv = await open_leases(open_js, 2.0, 1)  # a new member shortens the TTL
    info = await open_js.stream_info("KV_leases")
    assert info.config.max_age == 2.0
    ledger = Ledger()
    old = LeaseHolder(open_js, kv, service=SERVICE, count=1, ttl_s=6.0,
                      work=FakeWork("old", ledger), member="old")
    ledger.holders["old"] = old
    await old.tick()
    assert old.holds(0)
    deadline = time.monotonic() + 10

    async def expired() -> bool:  # the server expires the lease nobody renews
        try:
            await kv.get(lease_key(SERVICE, 0))
        except KeyNotFoundError:
            return True
        return False

    await wait_for(expired, within=max(0.0, deadline - time.monotonic()))
    assert not old.holds(0)

    # running, it renews often enough for the shorter TTL: it keeps the partition
    task = asyncio.create_task(old.run())
    try:
        revisions: set[int] = set()
        deadline = time.monotonic() + 15
        while len(revisions) < 5:  # the first take and four renewals
            assert time.monotonic() < deadline, (revisions, ledger.of(0))
            with contextlib.suppress(KeyNotFoundError):
                entry = await kv.get(lease_key(SERVICE, 0))
                assert entry.value == b"old" and entry.revision is not None
                revisions.add(entry.revision)
            await asyncio.sleep(0.02)
        lapsed, kept = ledger.of(0)  # the lapsed lease is stopped and taken anew, then kept
        assert lapsed.drained is False and kept.stop == math.inf
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    await old.release_all()


class Member:
    """A router-like member: a lease holder whose work is real per-partition pull loops
    (``PartitionConsumers``) on its own connection, recording what its handler got."""

    def __init__(self, name: str, js: JetStreamContext, kv: KeyValue,
                 block_after: int | None = None, slow_s: float = 0.0,
                 batch: int = 3) -> None:
        self.name = name
        self._slow_s = slow_s
        self._lease: Lease | None = None
        self.handled: list[tuple[int, float]] = []  # (stream sequence, when)
        self.taken_at: list[float] = []
        self.stuck = asyncio.Event()  # set when it blocks on a message, never released
        self._block_after = block_after
        self.consumers = PartitionConsumers(
            js, ROUTER_CONSUMER, self._handler_for, batch=batch,
            dead_letters=DeadLetters(js, "router", RetryPolicy()), ack_wait_s=30,
            max_ack_pending=100)
        member = self

        class Work:
            async def start(self, partition: int) -> None:
                member.taken_at.append(time.monotonic())
                await member.consumers.start(partition)

            async def stop(self, partition: int, *, drain: bool) -> None:
                await member.consumers.stop(partition, drain=drain)

        self.holder = LeaseHolder(js, kv, service=SERVICE, count=1, ttl_s=TTL_S, work=Work(),
                                  member=name)
        self.consumers.holds = self.holder.holds
        self.task = asyncio.create_task(self.holder.run())

    def _handler_for(self, lease: Lease) -> Callable[[list[Msg]], Awaitable[None]]:
        self._lease = lease
        return self._handle

    async def _handle(self, msgs: list[Msg]) -> None:
        for msg in msgs:
            assert self._lease is not None
            self._lease.check()  # as the router and the storage worker do per envelope
            await asyncio.sleep(self._slow_s)
            seq = msg.metadata.sequence.stream
            if self._block_after is not None and seq > self._block_after:
                self.stuck.set()
                await asyncio.Event().wait()  # frozen with the batch in hand, unacked
            self.handled.append((seq, time.monotonic()))
            await msg.ack()  # as the workers ack: no reply awaited

    def seqs(self) -> list[int]:
        return [seq for seq, _ in self.handled]

    async def stall_leases(self) -> None:
        """Its lease task stops (renewals stall); its pull loops keep running."""
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task

    async def crash(self) -> None:
        """Dies: no release, no drain, nothing acknowledged any more."""
        await self.stall_leases()
        await self.consumers.stop_all()

    async def close(self) -> None:
        await self.stall_leases()
        await self.holder.release_all()
        await self.consumers.stop_all()


@pytest.fixture
async def partition_0(bus: Bus) -> tuple[JetStreamContext, KeyValue]:
    """Partition 0's stream (P = 1) and the leases bucket; returns the publisher's context."""
    js = await bus.js(ROUTER)
    await ensure_stream(js, partition_stream(0), NatsConfig(), update=False)
    return await bus.js(GATEWAY), await open_leases(js, TTL_S, 1)


async def publish(js: JetStreamContext, first: int, last: int) -> None:
    for n in range(first, last + 1):
        ack = await js.publish(msgs_subject(0, CHAT), str(n).encode(), stream=msgs_stream(0))
        assert ack.seq == n


async def test_a_crashed_members_unacked_batch_goes_first_to_the_next_one(
        bus: Bus, partition_0: tuple[JetStreamContext, KeyValue]) -> None:
    publisher, kv = partition_0
    await publish(publisher, 1, 10)
    first = Member("first", await bus.js(), kv, block_after=3)
    second: Member | None = None
    try:
        await wait_for(first.stuck.is_set, 10)  # 1..3 acked, 4.. delivered, not acked
        assert first.seqs() == [1, 2, 3]
        await first.crash()
        second = Member("second", await bus.js(), kv)
        await wait_for(lambda: len(second.handled) >= 7, TTL_S * 3 + 5)
        # in stream order from the acknowledged floor, not 7.. first (4..6 would come back
        # only after the 30 s ack wait)
        assert second.seqs()[:7] == list(range(4, 11))
        assert second.taken_at[0] > first.holder._held[0][1]  # after its local deadline
    finally:
        await first.close()
        if second is not None:
            await second.close()


async def test_a_member_whose_renewals_stall_stops_handling_before_the_next_one_starts(
        bus: Bus, partition_0: tuple[JetStreamContext, KeyValue]) -> None:
    """The single-writer rule where it matters: the batches. The stalled member's pull loops
    still fetch, but its guard gives every batch back once its lease is not surely valid."""
    publisher, kv = partition_0
    stalled = Member("stalled", await bus.js(), kv)
    taker: Member | None = None
    try:
        await publish(publisher, 1, 5)
        await wait_for(lambda: stalled.seqs() == [1, 2, 3, 4, 5], 10)
        await stalled.stall_leases()
        taker = Member("taker", await bus.js(), kv)
        sent = 5
        while not taker.handled:  # traffic all along the takeover
            assert sent < 400, "nobody took the partition over"
            sent += 1
            await publish(publisher, sent, sent)
            await asyncio.sleep(0.02)
        await publish(publisher, sent + 1, sent + 1)  # the sentinel: handled, all before it
        await wait_for(lambda: sent + 1 in taker.seqs(), 10)
        took_over = taker.taken_at[0]
        assert all(when < took_over for _, when in stalled.handled)
        assert set(stalled.seqs()) | set(taker.seqs()) == set(range(1, sent + 2))
        assert not stalled.holder.holds(0)
    finally:
        await stalled.close()
        if taker is not None:
            await taker.close()


async def test_a_long_batch_stops_mid_way_once_the_lease_lapses(
        bus: Bus, partition_0: tuple[JetStreamContext, KeyValue]) -> None:
    """A batch slower than the lease's margin (a loaded machine): the holder stops between
    two envelopes once its lease is not surely valid, and the next holder goes on from the
    first unacknowledged one, in order. Before, the whole batch went on past the takeover."""
    publisher, kv = partition_0
    await publish(publisher, 1, 40)  # one batch of 30 taking 3 lease times
    slow = Member("slow", await bus.js(), kv, slow_s=TTL_S / 10, batch=30)
    taker: Member | None = None
    try:
        await wait_for(lambda: slow.seqs()[:1] == [1], 10)
        await slow.stall_leases()  # renewals stop; its batch goes on, slowly
        taker = Member("taker", await bus.js(), kv)
        await wait_for(lambda: 40 in taker.seqs(), TTL_S * 4 + 10)
        await slow.consumers.stop(0, drain=True)  # whatever it had in hand is done now
        took_over = taker.taken_at[0]
        assert all(when < took_over for _, when in slow.handled)
        handled = slow.seqs() + [seq for seq in taker.seqs() if seq not in slow.seqs()]
        assert handled == list(range(1, 41))  # nothing lost, each once, in order
        assert len(slow.seqs()) < 30  # it did stop mid-way through its batch
    finally:
        await slow.close()
        if taker is not None:
            await taker.close()
