"""floor-nats: the fabric floor, measured in the same run with raw nats-py.

Three generator processes reproduce the system's two NATS hops without any of its code: a
publisher publishes to a JetStream stream (file storage, like ``MSGS``) and awaits each
acknowledgement, as the gateway does for a send; a forwarder pulls batches of 256 from a
durable consumer, republishes each message on a core subject with its stream sequence in a
header and acks it, as the router does; a subscriber receives them, as the gateway does for a
device. Bodies have the size of the bench's chat messages.

Two phases: the latency phase offers direct-latency's rate for as long (p50/p95/p99, lost,
duplicate and out-of-order counts by stream sequence); the max phase publishes in a closed loop
(a window of 256 publishes in flight) and ``max_per_s`` is the rate the subscriber received.
The message scenarios are compared with these figures.
"""

import asyncio
import struct
import time
from array import array
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Final

import numpy as np
import numpy.typing as npt
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import api

from bench.client import BODY_BYTES
from bench.pacing import offer, sleep_until, wait_until
from bench.scenario import START_DELAY_NS, Context, Outcome
from bench.stats import percentiles, rate_between, timeline
from bench.workers import Generators, Phases
from infra.nats_auth import NatsCredentials

NAME: Final = "floor-nats"
STREAM: Final = "BENCH_FLOOR"
SUBJECT_IN: Final = "bench.floor.in"
SUBJECT_OUT: Final = "bench.floor.out"
CONSUMER: Final = "forwarder"
FETCH_BATCH: Final = 256
WARMUP_MESSAGES: Final = 50
DRAIN_TIMEOUT_S: Final = 30.0
SEQ_HEADER: Final = "Bench-Seq"

WARMUP, LATENCY, MAX = 0, 1, 2
_HEAD: Final = struct.Struct("<BIq")  # phase, counter, send time (ns)
_PADDING: Final = b"\0" * (BODY_BYTES - _HEAD.size)


@dataclass(frozen=True)
class FloorPlan:
    role: str  # "forwarder", "publisher" or "subscriber"
    nats_url: str
    nats_keys: Path  # the runner's credentials directory: the roles connect as ``bench``
    rate_per_s: float
    latency_s: float
    max_s: float
    window: int


@dataclass
class FloorReport:
    """Publisher: acknowledged publishes per phase. Subscriber: what it received."""

    published: dict[int, int]
    rx_phase: npt.NDArray[np.int64]
    rx_sent_ns: npt.NDArray[np.int64]
    rx_recv_ns: npt.NDArray[np.int64]
    duplicates: int
    out_of_order: int


async def run_floor(phases: Phases, plan: FloorPlan) -> FloorReport:
    """One role of the floor; every role steps through the same phases."""
    nc = await NatsCredentials(plan.nats_keys).connect(
        plan.nats_url, "bench", connect_timeout=5, max_reconnect_attempts=0,
        pending_size=64 * 1024 * 1024)
    try:
        if plan.role == "forwarder":
            return await _forward(phases, nc)
        if plan.role == "publisher":
            return await _publish(phases, nc, plan)
        return await _subscribe(phases, nc, plan)
    finally:
        await nc.close()


async def _forward(phases: Phases, nc: Client) -> FloorReport:
    js = nc.jetstream()
    await js.add_stream(api.StreamConfig(name=STREAM, subjects=[SUBJECT_IN],
                                         storage=api.StorageType.FILE))
    await js.add_consumer(STREAM, api.ConsumerConfig(
        durable_name=CONSUMER, ack_policy=api.AckPolicy.EXPLICIT, max_ack_pending=20_000))
    subscription = await js.pull_subscribe_bind(CONSUMER, stream=STREAM)
    stopping = asyncio.Event()

    async def forward_forever() -> None:
        while not stopping.is_set():
            try:
                msgs = await subscription.fetch(FETCH_BATCH, timeout=0.5)
            except TimeoutError:  # nats-py's own subclass, or asyncio's when the reply is late
                continue
            for msg in msgs:
                await nc.publish(SUBJECT_OUT, msg.data,
                                 headers={SEQ_HEADER: str(msg.metadata.sequence.stream)})
                await msg.ack()

    task = asyncio.create_task(forward_forever(), name="forward")
    try:
        for name in ("ready", "sent", "drained", "sent", "drained"):
            await phases.reach(name)
    finally:
        stopping.set()
        await task
    return _report()


async def _publish(phases: Phases, nc: Client, plan: FloorPlan) -> FloorReport:
    js = nc.jetstream()
    published = {WARMUP: 0, LATENCY: 0, MAX: 0}
    counter = 0

    async def publish(phase: int) -> None:
        nonlocal counter
        counter += 1
        await js.publish(SUBJECT_IN, _HEAD.pack(phase, counter, time.monotonic_ns()) + _PADDING,
                         stream=STREAM, timeout=10)
        published[phase] += 1

    start_ns: int = await phases.reach("ready")
    await asyncio.gather(*(publish(WARMUP) for _ in range(WARMUP_MESSAGES)))
    in_flight: set[asyncio.Task[None]] = set()

    async def emit() -> None:
        task = asyncio.create_task(publish(LATENCY))
        in_flight.add(task)
        task.add_done_callback(in_flight.discard)

    await offer(plan.rate_per_s, start_ns, start_ns + int(plan.latency_s * 1e9), emit)
    if in_flight:
        await asyncio.wait(in_flight, timeout=DRAIN_TIMEOUT_S)
    await phases.reach("sent", published[LATENCY])
    start_ns = await phases.reach("drained")
    end_ns = start_ns + int(plan.max_s * 1e9)
    await sleep_until(start_ns)

    async def keep_publishing() -> None:
        while time.monotonic_ns() < end_ns:
            await publish(MAX)

    await asyncio.gather(*(keep_publishing() for _ in range(plan.window)))
    await phases.reach("sent", published[MAX])
    await phases.reach("drained")
    return _report(published=published)


async def _subscribe(phases: Phases, nc: Client, plan: FloorPlan) -> FloorReport:
    rx: tuple[array[int], ...] = (array("q"), array("q"), array("q"))
    seen: set[int] = set()
    counts = {WARMUP: 0, LATENCY: 0, MAX: 0}
    last_seq = 0
    duplicates = out_of_order = 0

    async def on_msg(msg: Msg) -> None:
        nonlocal last_seq, duplicates, out_of_order
        now_ns = time.monotonic_ns()
        seq = int((msg.headers or {})[SEQ_HEADER])
        if seq in seen:
            duplicates += 1
            return
        seen.add(seq)
        if seq < last_seq:
            out_of_order += 1
        last_seq = max(last_seq, seq)
        phase, _, sent_ns = _HEAD.unpack_from(msg.data)
        counts[phase] += 1
        for column, value in zip(rx, (phase, sent_ns, now_ns), strict=True):
            column.append(value)

    await nc.subscribe(SUBJECT_OUT, cb=on_msg)
    await nc.flush()
    for phase, duration_s in ((LATENCY, plan.latency_s), (MAX, plan.max_s)):
        start_ns: int = await phases.reach("ready" if phase == LATENCY else "drained")
        await sleep_until(start_ns + int(duration_s * 1e9))
        expected: int = await phases.reach("sent")
        await wait_until(partial(_at_least, counts, phase, expected), DRAIN_TIMEOUT_S)
    await phases.reach("drained")
    phase_, sent_ns, recv_ns = (np.frombuffer(column, dtype=np.int64).copy() for column in rx)
    return FloorReport({}, phase_, sent_ns, recv_ns, duplicates, out_of_order)


def _at_least(counts: dict[int, int], phase: int, expected: int) -> bool:
    return counts[phase] >= expected


def _report(published: dict[int, int] | None = None) -> FloorReport:
    """The report of a role that receives nothing."""
    nothing = np.empty(0, dtype=np.int64)
    return FloorReport(published or {}, nothing, nothing, nothing, 0, 0)


async def run(ctx: Context) -> Outcome:
    sizes = ctx.sizes
    plans = [FloorPlan(role, ctx.system.nats_url, ctx.system.nats_credentials.directory,
                       sizes.rate_per_s, sizes.latency_s, sizes.floor_max_s,
                       sizes.floor_max_window)
             for role in ("forwarder", "publisher", "subscriber")]
    starts: dict[int, int] = {}
    with Generators(run_floor, plans) as generators:
        await generators.gather("ready")
        for phase, duration_s in ((LATENCY, sizes.latency_s), (MAX, sizes.floor_max_s)):
            starts[phase] = time.monotonic_ns() + START_DELAY_NS
            generators.release([starts[phase]] * len(plans))
            meter = ctx.cpu_meter(generators.pids)
            await sleep_until(starts[phase])
            meter.start()
            published = (await generators.gather("sent", wait_s=duration_s + 120))[1]
            ctx.measured["cpu_pct" if phase == LATENCY else "cpu_pct_at_max"] = meter.stop()
            generators.release([None, None, published])
            await generators.gather("drained")
        generators.release()
        _, publisher, subscriber = await generators.results()
    latency = subscriber.rx_phase == LATENCY
    latency_ms = (subscriber.rx_recv_ns[latency] - subscriber.rx_sent_ns[latency]) / 1e6
    at_max = subscriber.rx_recv_ns[subscriber.rx_phase == MAX]
    max_end_ns = starts[MAX] + int(sizes.floor_max_s * 1e9)
    delivered = int(latency.sum())
    figures = {
        **percentiles(latency_ms),
        "delivered_per_s": round(rate_between(subscriber.rx_recv_ns[latency], starts[LATENCY],
                                              starts[LATENCY] + int(sizes.latency_s * 1e9)), 1),
        "sent": publisher.published[LATENCY], "delivered": delivered,
        "lost": publisher.published[LATENCY] - delivered,
        "duplicates": subscriber.duplicates, "out_of_order": subscriber.out_of_order,
        "max_per_s": round(rate_between(at_max, starts[MAX], max_end_ns), 1),
        "max_lost": publisher.published[MAX] - len(at_max),
        "offered_per_s": sizes.rate_per_s, "duration_s": sizes.latency_s,
    }
    return Outcome(figures, latencies_ms=latency_ms,
                   timeline=timeline(at_max, starts[MAX], sizes.bin_s))
