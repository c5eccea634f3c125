"""The message load of one generator process: connect its devices, warm up, send at a fixed
offered rate (open loop) or with a window of unanswered sends per sender (closed loop), wait
for what is due to its devices, and report what was accepted and received.

Used by direct-latency, direct-throughput, group-fanout and offline-catchup; each scenario
builds the plans (which devices, which senders to which destination) and reads the reports
with ``bench.stats``. Phases, in order: ``connected``, ``warm`` (the go carries the start time),
``sent`` (the go carries how many deliveries this process still awaits), ``drained``.
"""

import asyncio
import time
from array import array
from collections import Counter
from dataclasses import dataclass, field
from typing import Final

import aiohttp
import numpy as np
import numpy.typing as npt

from bench.client import (
    BODY_BYTES,
    MEASURED,
    WARMUP,
    Device,
    Handler,
    decode_body,
    encode_body,
)
from bench.pacing import offer, sleep_until, wait_until
from bench.system import mint_token
from bench.workers import Phases
from schemas.frames import Accepted, Destination, Error, Message

WARMUP_TIMEOUT_S: Final = 30.0
SYNC_WAIT_S: Final = 30.0
WARMUP_PREFIX: Final = "w"


@dataclass(frozen=True)
class DeviceSpec:
    """A device to connect. ``index`` is global across processes: it names the recipient
    in reports and, when the device sends, the sender."""

    index: int
    user: str
    device: str


@dataclass(frozen=True)
class SenderSpec:
    """A device of this process that sends to ``to_kind``/``to_id``."""

    index: int
    to_kind: str
    to_id: str


@dataclass(frozen=True)
class TrafficPlan:
    """One generator process's share of a scenario's load."""

    ws_url: str
    secret: str
    devices: tuple[DeviceSpec, ...]
    senders: tuple[SenderSpec, ...]
    #: Open loop: messages per second offered by this process (None: closed loop).
    rate_per_s: float | None
    #: Closed loop: sends awaiting their ``accepted`` per sender.
    window: int | None
    duration_s: float
    #: Closed loop: stop each sender after this many messages (None: at ``duration_s``).
    messages_per_sender: int | None = None
    warmup_per_sender: int = 1
    #: Warm-up messages this process's devices receive (from every process's senders).
    expected_warmup_rx: int = 0
    connect_concurrency: int = 50
    drain_timeout_s: float = 30.0


@dataclass
class TrafficReport:
    """What one process's devices sent and received (measured messages only)."""

    accepted_sender: npt.NDArray[np.int64]
    accepted_counter: npt.NDArray[np.int64]
    rx_recipient: npt.NDArray[np.int64]
    rx_sender: npt.NDArray[np.int64]
    rx_counter: npt.NDArray[np.int64]
    rx_sent_ns: npt.NDArray[np.int64]
    rx_recv_ns: npt.NDArray[np.int64]
    duplicates: int
    out_of_order: int
    unanswered: int
    errors: dict[str, int] = field(default_factory=dict)
    closed: dict[str, int] = field(default_factory=dict)


class Recorder(Handler):
    """Counts accepted sends and received messages; flags duplicates (same server id twice
    on one device) and messages older than one already seen in the same conversation."""

    def __init__(self) -> None:
        self._acc_sender = array("q")
        self._acc_counter = array("q")
        self._rx: tuple[array[int], ...] = tuple(array("q") for _ in range(5))
        self._seen: set[tuple[int, str]] = set()
        self._last_seq: dict[tuple[int, str], int] = {}
        self.duplicates = 0
        self.out_of_order = 0
        self.warmup_received = 0
        self.errors: Counter[str] = Counter()

    @property
    def received(self) -> int:
        return len(self._rx[0])

    def on_message(self, device: Device, frame: Message, now_ns: int) -> None:
        key = (device.index, frame.message_id)
        if key in self._seen:
            self.duplicates += 1
            return
        self._seen.add(key)
        position = (device.index, frame.conversation)
        if frame.seq < self._last_seq.get(position, -1):
            self.out_of_order += 1
        else:
            self._last_seq[position] = frame.seq
        if frame.kind != "chat" or len(frame.body) != BODY_BYTES:
            return  # not a bench message (e.g. a group's system message)
        phase, sender, counter, sent_ns = decode_body(frame.body)
        if phase == WARMUP:
            self.warmup_received += 1
            return
        for column, value in zip(self._rx, (device.index, sender, counter, sent_ns, now_ns),
                                 strict=True):
            column.append(value)

    def on_accepted(self, device: Device, frame: Accepted) -> None:
        if not frame.client_id.startswith(WARMUP_PREFIX):
            self._acc_sender.append(device.index)
            self._acc_counter.append(int(frame.client_id))

    def on_error(self, device: Device, frame: Error) -> None:
        self.errors[frame.code] += 1

    def accepted_by_sender(self) -> dict[int, int]:
        return dict(Counter(self._acc_sender))

    def report(self, devices: list[Device]) -> TrafficReport:
        rx = [np.frombuffer(column, dtype=np.int64).copy() for column in self._rx]
        retried = sum(device.upgrade_retries for device in devices)
        if retried:
            self.errors["upgrade_503_retried"] += retried
        return TrafficReport(
            accepted_sender=np.frombuffer(self._acc_sender, dtype=np.int64).copy(),
            accepted_counter=np.frombuffer(self._acc_counter, dtype=np.int64).copy(),
            rx_recipient=rx[0], rx_sender=rx[1], rx_counter=rx[2], rx_sent_ns=rx[3],
            rx_recv_ns=rx[4], duplicates=self.duplicates, out_of_order=self.out_of_order,
            unanswered=sum(max(d.unanswered, 0) for d in devices), errors=dict(self.errors),
            closed=dict(Counter(str(d.close_code) for d in devices if d.close_code is not None)),
        )


async def connect_devices(session: aiohttp.ClientSession, ws_url: str, secret: str,
                          specs: tuple[DeviceSpec, ...], handler: Handler,
                          concurrency: int, window: int | None = None) -> list[Device]:
    """Connect every device (at most ``concurrency`` handshakes at a time)."""
    gate = asyncio.Semaphore(concurrency)

    async def connect(spec: DeviceSpec) -> Device:
        device = Device(spec.index, spec.user, spec.device, handler, window=window)
        async with gate:
            await device.connect(session, ws_url, mint_token(secret, spec.user, spec.device))
            await device.sync(SYNC_WAIT_S)  # live messages flow after the first sync
        return device

    return list(await asyncio.gather(*(connect(spec) for spec in specs)))


async def run_traffic(phases: Phases, plan: TrafficPlan) -> TrafficReport:
    """A generator process's whole part in a message scenario (see the module docstring)."""
    recorder = Recorder()
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        devices = await connect_devices(session, plan.ws_url, plan.secret, plan.devices,
                                        recorder, plan.connect_concurrency, plan.window)
        try:
            by_index = {device.index: device for device in devices}
            senders = [(by_index[s.index], Destination(kind=s.to_kind, id=s.to_id))  # type: ignore[arg-type]
                       for s in plan.senders]
            await phases.reach("connected")
            await _warm_up(senders, recorder, plan)
            start_ns: int = await phases.reach("warm")
            end_ns = start_ns + int(plan.duration_s * 1e9)
            await sleep_until(start_ns)
            if plan.rate_per_s is not None:
                await _open_loop(senders, plan.rate_per_s, start_ns, end_ns)
            else:
                await _closed_loop(senders, end_ns, plan.messages_per_sender)
            await _wait_answers(devices, plan.drain_timeout_s)
            expected_rx: int = await phases.reach("sent", recorder.accepted_by_sender())
            await wait_until(lambda: recorder.received >= expected_rx, plan.drain_timeout_s)
            await phases.reach("drained")
        finally:
            await asyncio.gather(*(device.close() for device in devices),
                                 return_exceptions=True)
    return recorder.report(devices)


async def _warm_up(senders: list[tuple[Device, Destination]], recorder: Recorder,
                   plan: TrafficPlan) -> None:
    """A few messages per sender fill the caches on the way (user lookups, device lists)."""
    for device, to in senders:
        for n in range(plan.warmup_per_sender):
            body = encode_body(WARMUP, device.index, n, time.monotonic_ns())
            await device.send(to, body, f"{WARMUP_PREFIX}{n}")
    await _wait_answers([device for device, _ in senders], WARMUP_TIMEOUT_S)
    await wait_until(lambda: recorder.warmup_received >= plan.expected_warmup_rx,
                    WARMUP_TIMEOUT_S)


async def _open_loop(senders: list[tuple[Device, Destination]], rate_per_s: float,
                     start_ns: int, end_ns: int) -> None:
    """Offer ``rate_per_s`` messages per second until ``end_ns``, round-robin over the
    senders."""
    counters = [0] * len(senders)
    turn = 0

    async def emit() -> None:
        nonlocal turn
        device, to = senders[turn]
        counter = counters[turn]
        counters[turn] += 1
        turn = (turn + 1) % len(senders)
        await device.send(to, encode_body(MEASURED, device.index, counter, time.monotonic_ns()),
                          str(counter))

    await offer(rate_per_s, start_ns, end_ns, emit)


async def _closed_loop(senders: list[tuple[Device, Destination]], end_ns: int,
                       limit: int | None) -> None:
    """Each sender keeps its window of unanswered sends full until ``end_ns`` (or until it
    sent ``limit`` messages)."""

    async def keep_sending(device: Device, to: Destination) -> None:
        counter = 0
        while time.monotonic_ns() < end_ns and (limit is None or counter < limit):
            body = encode_body(MEASURED, device.index, counter, time.monotonic_ns())
            await device.send(to, body, str(counter))
            counter += 1

    remaining_s = max((end_ns - time.monotonic_ns()) / 1e9, 0.0)
    try:
        async with asyncio.timeout(remaining_s + 1.0):
            await asyncio.gather(*(keep_sending(device, to) for device, to in senders))
    except TimeoutError:
        pass  # a sender blocked on a full window at the end: what it sent is counted


async def _wait_answers(devices: list[Device], wait_s: float) -> None:
    try:
        await asyncio.gather(*(device.drained(wait_s) for device in devices))
    except TimeoutError:
        pass  # reported as ``unanswered``
