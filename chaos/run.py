"""One fault from start to figures: a fresh system, the load around the fault, settling, the
tally.

Timeline: start nats-server, the storage worker, the push worker, a router and two gateways
(``tests.harness.System``, the way the end-to-end tests start them); register the devices;
connect the online recipients and wait for their first sync; start the senders; after a third
of ``duration_s`` inject the fault; keep sending for the rest of ``duration_s`` after it is
over; stop the senders (each finishes its message in flight). Then settle: the offline
recipients connect, and every recipient syncs until every accepted message has been shown
on every device that should have it, or ``settle_s`` ran out. What is then missing is lost.
"""

import asyncio
import shutil
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import msgspec

from bench.pacing import wait_until
from chaos.accounting import Tally, missing_deliveries, tally
from chaos.faults import ACK_WAIT_S, Fault, Injection, Timing
from chaos.load import EventLog, Receiver, Register, Sender
from tests.harness import System

READY_TIMEOUT_S: Final = 60.0
SETTLE_POLL_S: Final = 1.0
ERROR_LEVELS: Final = ("error", "critical")
#: The event log of a fault whose logs are kept, beside them (``chaos.accounting`` types).
EVENTS_FILE: Final = "events.json"


@dataclass(frozen=True)
class Settings:
    #: Messages per second offered by all senders together.
    rate_per_s: float = 40.0
    #: Seconds of traffic around each fault (a third before it, the rest after it).
    duration_s: float = 30.0
    #: Sender users, each streaming to a recipient user of its own.
    senders: int = 4
    #: Deadline for every recipient to have synced everything after the traffic stopped.
    settle_s: float = 90.0
    timing: Timing = field(default_factory=Timing)


@dataclass
class FaultResult:
    fault: str
    tally: Tally
    notes: list[str]
    #: Where the system's logs are, when they were kept.
    logs: Path | None = None

    @property
    def clean(self) -> bool:
        return (self.tally.lost, self.tally.duplicates, self.tally.out_of_order) == (0, 0, 0)


async def run_fault(fault: Fault, settings: Settings, root: Path,
                    keep_logs: bool = False) -> FaultResult:
    """Run ``fault`` on a fresh system under ``root`` (removed afterwards unless the fault
    was not clean or ``keep_logs``)."""
    system = System(root, extra_env={"COURIER_NATS_ACK_WAIT_S": str(ACK_WAIT_S)})
    try:
        await asyncio.to_thread(system.start)
        await asyncio.to_thread(system.add_gateway)
        log = EventLog()
        injection = Injection()
        receivers, settled = await _traffic(system, fault, settings, log, injection)
    finally:
        await asyncio.to_thread(system.stop)
    notes = [*injection.notes, *client_notes(receivers, log, settled)]
    notes.extend(error_lines(system.logs))
    result = FaultResult(fault.name, tally(list(log.sent.values()), log.shown, injection.began),
                         notes)
    if keep_logs or not result.clean:
        result.logs = system.logs
        (system.logs / EVENTS_FILE).write_bytes(msgspec.json.encode(
            {"fault_at": injection.began, "sent": list(log.sent.values()),
             "shown": log.shown}))
    else:
        shutil.rmtree(root, ignore_errors=True)
    return result


async def _traffic(system: System, fault: Fault, settings: Settings, log: EventLog,
                   injection: Injection) -> tuple[list[Receiver], bool]:
    return await stream_around(
        [system.gateway_url(0), system.gateway_url(1)], system.device,
        lambda: fault.inject(system, settings.timing, injection), settings, log)


async def stream_around(urls: list[str], register: Register,
                        inject: Callable[[], Awaitable[None]], settings: Settings,
                        log: EventLog, prefix: str = "",
                        balancer: str | None = None) -> tuple[list[Receiver], bool]:
    """The traffic around one fault (the module docstring's timeline) on the gateways at
    ``urls`` (each sender's home is one of them, its recipients' the next); ``register``
    makes a device's credentials; user names start with ``prefix`` (several runs on one
    system); with a ``balancer`` every device connects where it says (``urls`` are then only
    the devices' REST addresses). The online and offline receivers, and whether they settled."""
    senders: list[Sender] = []
    online: list[Receiver] = []
    offline: list[Receiver] = []
    for i in range(settings.senders):
        home = urls[i % len(urls):] + urls[:i % len(urls)]
        away = home[1:] + home[:1]  # recipients sit on another gateway
        sender, recipient = f"{prefix}s{i}", f"{prefix}r{i}"
        on, off = f"{recipient}-on", f"{recipient}-off"
        senders.append(Sender(await register(sender, f"{sender}-d"), home, log,
                              to=recipient, recipients=(on, off), balancer=balancer))
        online.append(Receiver(await register(recipient, on), away, log, balancer))
        offline.append(Receiver(await register(recipient, off), away, log, balancer))
    receivers = online + offline
    per_sender = settings.rate_per_s / settings.senders
    stop = asyncio.Event()
    settled = False
    try:
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(device.run()) for device in online]
            ready = time.monotonic()
            if not all(await asyncio.gather(*(device.synced_after(0.0, ready + READY_TIMEOUT_S)
                                              for device in online))):
                raise RuntimeError("the online recipients did not sync in time")
            sending = [group.create_task(sender.run(per_sender, stop, settings.settle_s))
                       for sender in senders]
            await asyncio.sleep(settings.duration_s / 3)
            await inject()
            await asyncio.sleep(settings.duration_s * 2 / 3)
            stop.set()
            await asyncio.gather(*sending)
            tasks += [group.create_task(device.run()) for device in offline]
            settled = await _settle(receivers, log, settings.settle_s)
            for task in tasks:
                task.cancel()
    finally:
        stop.set()
        await asyncio.gather(*(device.close() for device in [*senders, *receivers]),
                             return_exceptions=True)
    return receivers, settled


async def _settle(receivers: list[Receiver], log: EventLog, settle_s: float) -> bool:
    """Sync every recipient until nothing accepted is missing; False at the deadline."""
    deadline = time.monotonic() + settle_s
    while time.monotonic() < deadline:
        since = time.monotonic()
        await asyncio.gather(*(device.synced_after(since, deadline) for device in receivers))
        # the backlog is in the client libraries' inboxes: let it be shown
        await wait_until(lambda: not any(device.client.pending_messages()
                                         for device in receivers),
                         max(deadline - time.monotonic(), 0.0))
        if not missing_deliveries(log.sent.values(), log.shown):
            return True
        await asyncio.sleep(SETTLE_POLL_S)
    return False


def client_notes(receivers: list[Receiver], log: EventLog, settled: bool) -> list[str]:
    notes = []
    if not settled:
        notes.append("the recipients had not shown everything accepted at the settle deadline")
    wire = sum(device.client.duplicates for device in receivers)
    if wire:
        notes.append(f"{wire} message frame(s) arrived again and were dropped by the client "
                     "library's dedup (at-least-once on the wire)")
    reconnects = sum(max(device.connects - 1, 0) for device in receivers)
    if reconnects:
        notes.append(f"recipient devices reconnected {reconnects} time(s)")
        ended = sum((device.ended for device in receivers), Counter[int | None]())
        notes.append("their sockets had ended with close code " + ", ".join(
            f"{code or 'none (lost)'} x{count}" for code, count in sorted(
                ended.items(), key=lambda item: str(item[0]))))
        moves = Counter((a, b) for device in receivers
                        for a, b in zip(device.gateways, device.gateways[1:], strict=False))
        notes.append("reconnects by gateway (from -> to): " + ", ".join(
            f"{a} -> {b} x{count}" for (a, b), count in sorted(moves.items(), key=str)))
    if log.errors:
        notes.append("failed send attempts (then retried): " + ", ".join(
            f"{code} x{count}" for code, count in sorted(log.errors.items())))
    return notes


def error_lines(log_dir: Path) -> list[str]:
    """How many error lines each service logged (JSON lines with an error level, and
    tracebacks a process printed as it died)."""
    counts: Counter[str] = Counter()
    for path in sorted(log_dir.glob("*.log")):
        for line in path.read_bytes().splitlines():
            if line.startswith(b"Traceback"):
                counts[path.stem] += 1
                continue
            try:
                entry = msgspec.json.decode(line)
            except msgspec.DecodeError:
                continue
            if isinstance(entry, dict) and entry.get("level") in ERROR_LEVELS:
                counts[path.stem] += 1
    if not counts:
        return []
    return ["error log lines: " + ", ".join(f"{name} {count}"
                                            for name, count in sorted(counts.items()))]
