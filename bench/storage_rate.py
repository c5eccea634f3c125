"""Sustained write rate of the message store, through the real ``MessageStore`` API.

The storage worker applies its stream one batch at a time: ``append`` for a run of messages
(up to ``COURIER_STORE_BATCH``, 500), then each receipt on its own (``record_acks`` for a
device's ``ack`` frame, ``mark_read`` for a read marker). This benchmark drives a store the
same way, for a fixed time per phase, and prints the rates::

    .venv/bin/python -m bench.storage_rate                      # Cassandra node of its own
    .venv/bin/python -m bench.storage_rate --store sqlite        # the embedded store
    .venv/bin/python -m bench.storage_rate --contact-point 10.0.0.5:9042 --keyspace bench

Phases, after a warm-up of appends: ``append`` (direct messages between ``--users`` users,
2 inbox entries each, bodies of ``--body-bytes`` random bytes), ``acks`` (every recipient
device acknowledges what it got, ``--acks-per-receipt`` messages per ``record_acks`` call, in
order as clients do), ``reads`` (``mark_read`` per conversation). ``--json`` writes the
figures for docs/benchmarks.md.
"""

import argparse
import asyncio
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from infra.cassandra_node import CassandraNode, cassandra_version, fetch
from runtime.config import StoreConfig
from schemas.envelopes import MessageEnvelope
from schemas.frames import AckItem, Destination, Sender
from schemas.ids import direct_conversation
from storage_worker.store.base import MessageStore, StoredMessage
from storage_worker.store.cassandra import CassandraStore
from storage_worker.store.sqlite import SqliteStore

APP = "bench"


@dataclass
class Phase:
    """One timed phase: ``items`` done in ``calls`` store calls."""

    name: str
    unit: str
    items: int
    calls: int
    seconds: float
    call_ms_p50: float
    call_ms_p99: float

    @property
    def rate(self) -> float:
        return self.items / self.seconds


@dataclass(frozen=True)
class Workload:
    users: int
    batch: int
    body_bytes: int
    acks_per_receipt: int
    seconds: float
    warmup: float


class Driver:
    """Feeds one store like the storage worker does, remembering what it wrote."""

    def __init__(self, store: MessageStore, workload: Workload) -> None:
        self.store = store
        self.workload = workload
        self.seq = 0
        self.body = os.urandom(workload.body_bytes)
        #: (recipient user, conversation, sender) -> seqs not yet acknowledged, oldest first
        self.unacked: dict[tuple[str, str, str], list[int]] = {}

    async def register(self) -> None:
        now = _now()
        for index in range(self.workload.users):
            await self.store.register_device(APP, _user(index), _device(index), now)

    def batch(self) -> list[StoredMessage]:
        """The next ``batch`` messages: user i writes to user i+1 (mod users), round robin."""
        out = []
        for _ in range(self.workload.batch):
            self.seq += 1
            sender = (self.seq * 7919) % self.workload.users
            to = (sender + 1) % self.workload.users
            conversation = direct_conversation(_user(sender), _user(to))
            envelope = MessageEnvelope(
                id=f"b{self.seq}", kind="chat", app=APP, module="chat",
                sender=Sender(user=_user(sender), device=_device(sender)),
                to=Destination(kind="user", id=_user(to)), conversation=conversation,
                ts=_now(), receipt=True, body=self.body, client_id=f"c{self.seq}")
            out.append(StoredMessage(seq=self.seq, envelope=envelope,
                                     recipients=sorted({_user(sender), _user(to)})))
            key = (_user(to), conversation, _user(sender))
            self.unacked.setdefault(key, []).append(self.seq)
        return out

    def receipts(self) -> list[tuple[str, str, list[AckItem]]]:
        """Ack frames of every recipient device, ``acks_per_receipt`` messages each."""
        frames = []
        size = self.workload.acks_per_receipt
        for (user, conversation, sender), seqs in self.unacked.items():
            device = _device(int(user[1:]))
            for start in range(0, len(seqs), size):
                items = [AckItem(id=f"b{seq}", seq=seq, conversation=conversation, sender=sender)
                         for seq in seqs[start:start + size]]
                frames.append((user, device, items))
        return frames


async def timed(name: str, unit: str, seconds: float,
                calls: Callable[[], Awaitable[int] | None]) -> Phase:
    """Run ``calls()`` back to back for ``seconds``; each returns how many items it did."""
    latencies: list[float] = []
    items = 0
    started = time.perf_counter()
    while time.perf_counter() - started < seconds:
        call = calls()
        if call is None:
            break
        begun = time.perf_counter()
        items += await call
        latencies.append(time.perf_counter() - begun)
    elapsed = time.perf_counter() - started
    latencies.sort()
    return Phase(name=name, unit=unit, items=items, calls=len(latencies), seconds=elapsed,
                 call_ms_p50=1000 * statistics.median(latencies) if latencies else 0.0,
                 call_ms_p99=1000 * latencies[int(0.99 * (len(latencies) - 1))]
                 if latencies else 0.0)


async def run(store: MessageStore, workload: Workload) -> list[Phase]:
    driver = Driver(store, workload)
    await store.open()
    try:
        await driver.register()

        async def append() -> int:
            messages = driver.batch()
            await store.append(messages)
            return len(messages)

        await timed("warm-up", "messages/s", workload.warmup, append)  # JIT, caches
        phases = [await timed("append", "messages/s", workload.seconds, append)]
        pending = iter(driver.receipts())

        def ack() -> Awaitable[int] | None:
            frame = next(pending, None)
            if frame is None:
                return None
            user, device, items = frame

            async def call() -> int:
                await store.record_acks(APP, user, device, items, _now())
                return len(items)

            return call()

        phases.append(await timed("acks", "acknowledged messages/s", workload.seconds, ack))
        markers = iter([(user, conversation, seqs[-1])
                        for (user, conversation, _), seqs in driver.unacked.items()] * 1000)

        def read() -> Awaitable[int] | None:
            marker = next(markers, None)
            if marker is None:
                return None

            async def call() -> int:
                await store.mark_read(APP, *marker)
                return 1

            return call()

        phases.append(await timed("reads", "read markers/s", workload.seconds, read))
        return phases
    finally:
        await store.close()


def _user(index: int) -> str:
    return f"u{index}"


def _device(index: int) -> str:
    return f"d{index}"


def _now() -> int:
    return int(time.time() * 1000)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.storage_rate",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--store", choices=("cassandra", "sqlite"), default="cassandra")
    parser.add_argument("--contact-point", default="",
                        help="host:port of a running Cassandra (default: start a node here)")
    parser.add_argument("--keyspace", default=f"bench_{os.getpid()}",
                        help="keyspace to create and fill (default: bench_<pid>)")
    parser.add_argument("--consistency", default="LOCAL_QUORUM")
    parser.add_argument("--seconds", type=_positive(float), default=20.0,
                        help="duration of each phase (default 20)")
    parser.add_argument("--warmup", type=_positive(float), default=5.0,
                        help="seconds of appends before measuring (default 5)")
    parser.add_argument("--batch", type=_positive(int), default=500,
                        help="messages per append call, as COURIER_STORE_BATCH (default 500)")
    parser.add_argument("--users", type=_positive(int), default=1000)
    parser.add_argument("--body-bytes", type=_positive(int), default=256)
    parser.add_argument("--acks-per-receipt", type=_positive(int), default=20,
                        help="messages per record_acks call (default 20)")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args(argv)
    if args.users < 2:
        parser.error("--users: at least 2")
    return args


def _positive(kind: type[int] | type[float]) -> Callable[[str], float]:
    def convert(text: str) -> float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be positive, got {text}")
        return value

    return convert


async def amain(args: argparse.Namespace) -> int:
    workload = Workload(users=args.users, batch=args.batch, body_bytes=args.body_bytes,
                        acks_per_receipt=args.acks_per_receipt, seconds=args.seconds,
                        warmup=args.warmup)
    with tempfile.TemporaryDirectory(prefix="storage-rate-") as tmp:
        node: CassandraNode | None = None
        if args.store == "sqlite":
            store: MessageStore = SqliteStore(Path(tmp) / "bench.db")
            target = "SQLite (WAL, synchronous=NORMAL)"
        else:
            contact_point = args.contact_point
            if not contact_point:
                node = CassandraNode(Path(tmp) / "cassandra", lib_dir=fetch())
                await asyncio.to_thread(node.__enter__)
                contact_point = node.contact_point
            store = CassandraStore(StoreConfig(
                backend="cassandra", cassandra_contact_points=[contact_point],
                cassandra_keyspace=args.keyspace, cassandra_consistency=args.consistency))
            target = (f"Cassandra {cassandra_version()} at {contact_point}"
                      f"{' (one local node, 1 GB heap)' if node else ''}, {args.consistency}")
        try:
            phases = await run(store, workload)
        finally:
            if node is not None:
                await asyncio.to_thread(node.stop)
    print(f"store: {target}; {os.cpu_count()} CPUs, {platform.platform()}")
    print(f"workload: batches of {workload.batch}, {workload.users} users, "
          f"{workload.body_bytes}-byte bodies, {workload.acks_per_receipt} acks per receipt, "
          f"{workload.seconds:g} s per phase after {workload.warmup:g} s of warm-up")
    for phase in phases:
        print(f"{phase.name:>7}: {phase.rate:10,.0f} {phase.unit:<24} "
              f"({phase.items} in {phase.calls} calls, {phase.seconds:.1f} s; per call "
              f"p50 {phase.call_ms_p50:.1f} ms, p99 {phase.call_ms_p99:.1f} ms)")
    if args.json is not None:
        args.json.write_text(json.dumps({
            "store": target, "workload": asdict(workload),
            "phases": [{**asdict(phase), "rate": phase.rate} for phase in phases],
        }, indent=2) + "\n")
    return 0


def main(argv: list[str] | None = None) -> int:
    return asyncio.run(amain(parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
