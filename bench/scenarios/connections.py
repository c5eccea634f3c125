"""connections: idle authenticated sockets on one gateway process.

Generator processes (at most 5,000 sockets each) open N sockets (20,000 by default), each a
device with its own token, and keep them idle, answering the gateway's heartbeat pings. The
bench measures the gateway's RSS before and after (``kb_per_connection`` is the difference
over N) and its CPU time over an idle window of 1.25 heartbeat intervals (the interval comes
from ``welcome``), so every socket is pinged at least once: ``heartbeat_cpu_pct`` is a
percentage of one core. The percentiles are connect-to-``welcome`` times; ``lost`` counts
sockets that did not survive the idle window.

One process cannot hold more sockets than its file limit: the bench raises its soft limit to
the hard one (the gateway inherits it); if N does not fit, N is lowered and ``capped_by`` says
why.
"""

import asyncio
import math
import time
from array import array
from collections import Counter
from dataclasses import dataclass, field
from typing import Final

import aiohttp
import numpy as np
import numpy.typing as npt

from bench.client import Device, Handler
from bench.observe import cpu_seconds, rss_bytes
from bench.scenario import Context, Outcome
from bench.stats import percentiles
from bench.system import mint_token, raise_file_limit
from bench.workers import Generators, Phases

NAME: Final = "connections"
PER_PROCESS: Final = 5_000
CONNECT_CONCURRENCY: Final = 32
#: Descriptors the gateway needs besides client sockets (listener, NATS, logs, epoll, ...).
FD_RESERVE: Final = 64
SETTLE_S: Final = 1.0
CONNECT_TIMEOUT_S: Final = 600.0


@dataclass(frozen=True)
class IdlePlan:
    ws_url: str
    secret: str
    first: int
    count: int


@dataclass
class IdleReport:
    connected: int
    connect_ms: npt.NDArray[np.float64]
    open_at_end: int
    heartbeat_s: float | None
    failures: dict[str, int] = field(default_factory=dict)


async def hold_idle(phases: Phases, plan: IdlePlan) -> IdleReport:
    """Open ``plan.count`` sockets, report at ``connected``, hold them until released."""
    gate = asyncio.Semaphore(CONNECT_CONCURRENCY)
    devices: list[Device] = []
    connect_ms = array("d")
    failures: Counter[str] = Counter()

    async def connect(index: int) -> None:
        device = Device(index, f"idle{index}", f"idle{index}-d", Handler(), ack=False)
        token = mint_token(plan.secret, device.user, device.device)
        async with gate:
            started = time.monotonic_ns()
            try:
                await device.connect(session, plan.ws_url, token)
            except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                failures[type(exc).__name__] += 1
                await device.close()
                return
            connect_ms.append((time.monotonic_ns() - started) / 1e6)
        devices.append(device)

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        try:
            await asyncio.gather(*(connect(i) for i in range(plan.first,
                                                             plan.first + plan.count)))
            heartbeat_s = devices[0].welcome.heartbeat_s if devices and devices[0].welcome \
                else None
            await phases.reach("connected", heartbeat_s)
            open_at_end = sum(device.open for device in devices)
        finally:
            await asyncio.gather(*(device.close() for device in devices),
                                 return_exceptions=True)
    return IdleReport(len(devices), np.frombuffer(connect_ms, dtype=np.float64).copy(),
                      open_at_end, heartbeat_s, dict(failures))


async def run(ctx: Context) -> Outcome:
    requested = ctx.sizes.connections
    fd_limit = raise_file_limit()
    count = min(requested, fd_limit - FD_RESERVE)
    processes = max(1, min(ctx.workers, count), math.ceil(count / PER_PROCESS))
    shares = [count // processes + (1 if i < count % processes else 0) for i in range(processes)]
    plans = [IdlePlan(ctx.system.ws_url, ctx.system.secret, sum(shares[:i]), share)
             for i, share in enumerate(shares)]
    gateway = ctx.system.pid("gateway")
    rss_before = rss_bytes(gateway)
    profiler = ctx.profiler()
    with Generators(hold_idle, plans) as generators:
        started = time.monotonic()
        heartbeats = await generators.gather("connected", wait_s=CONNECT_TIMEOUT_S)
        connect_s = time.monotonic() - started
        await asyncio.sleep(SETTLE_S)  # the last welcome frames leave the gateway
        rss_after = rss_bytes(gateway)
        heartbeat_s = next((h for h in heartbeats if h), None)
        window_s = ctx.sizes.idle_window_s or 1.25 * (heartbeat_s or 20.0)
        if profiler is not None:
            profiler.start(window_s)
        cpu_before, window_start = cpu_seconds(gateway), time.monotonic()
        await asyncio.sleep(window_s)  # the measurement window: heartbeats only
        cpu_pct = 100 * (cpu_seconds(gateway) - cpu_before) / (time.monotonic() - window_start)
        generators.release()
        reports: list[IdleReport] = await generators.results()
    if profiler is not None:
        ctx.measured["profile"] = profiler.finish()
    connected = sum(r.connected for r in reports)
    connect_ms = np.concatenate([r.connect_ms for r in reports])
    failures: Counter[str] = Counter()
    for report in reports:
        failures.update(report.failures)
    figures = {
        **percentiles(connect_ms),
        "delivered_per_s": None, "sent": None, "delivered": None,
        "lost": connected - sum(r.open_at_end for r in reports),
        "duplicates": None, "out_of_order": None,
        "connections": connected, "requested": requested, "failed": dict(failures),
        "rss_mb": round(rss_after / 2**20, 1), "rss_before_mb": round(rss_before / 2**20, 1),
        "kb_per_connection": round((rss_after - rss_before) / max(connected, 1) / 1024, 2),
        "heartbeat_s": heartbeat_s, "idle_window_s": round(window_s, 1),
        "heartbeat_cpu_pct": round(cpu_pct, 2),
        "connects_per_s": round(connected / connect_s, 1),
    }
    if count < requested:
        figures["capped_by"] = (f"file limit {fd_limit} (hard) of one gateway process: at most "
                                f"{count} sockets with {FD_RESERVE} descriptors kept for it")
    return Outcome(figures, latency_label="connect to welcome", latencies_ms=connect_ms)
