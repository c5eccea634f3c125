"""What the orchestrator reads of the system besides the protocol: a process's memory and CPU
time (``/proc``), how far the storage worker and the router are behind the partition
streams, and which process holds each partition's lease."""

import asyncio
import math
import os
import time
from pathlib import Path

from nats.js.errors import KeyValueError, NotFoundError

from bench.system import SystemUnderTest
from infra.nats_auth import NatsCredentials
from runtime.partitions import lease_key
from schemas.buckets import LEASES
from schemas.nats_permissions import ADMIN
from schemas.subjects import STORAGE_CONSUMER, msgs_stream

_TICKS_PER_S = os.sysconf("SC_CLK_TCK")


def rss_bytes(pid: int) -> int:
    """Resident set size of ``pid``."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time ``pid`` has used."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS_PER_S


async def wait_consumed(system: SystemUnderTest, wait_s: float,
                        consumers: tuple[str, ...] = (STORAGE_CONSUMER,),
                        partitions: int | None = None) -> float:
    """Wait until ``consumers`` (default: the storage worker's) have processed every envelope
    of every partition stream (``partitions``: the system's count by default); returns the
    monotonic time (seconds) at which they had. Raises
    ``TimeoutError`` after ``wait_s``."""
    nc = await system.nats_credentials.connect(system.nats_url, "admin", connect_timeout=5,
                                               max_reconnect_attempts=0)
    try:
        js = nc.jetstream()
        async with asyncio.timeout(wait_s):
            for partition in range(partitions or system.partitions):
                for consumer in consumers:
                    while True:
                        info = await js.consumer_info(msgs_stream(partition), consumer)
                        if not info.num_pending and not info.num_ack_pending:
                            break
                        await asyncio.sleep(0.02)
            return time.monotonic()
    finally:
        await nc.close()


async def wait_leases_spread(credentials: NatsCredentials, nats_url: str, service: str,
                             partitions: int, members: int, wait_s: float) -> dict[int, int]:
    """Wait until each of the ``partitions`` leases of ``service`` (``storage``, ``router``)
    is held and no member holds more than its fair share, ``ceil(partitions / members)``;
    returns how many partitions each holder's process (by PID) holds. Raises
    ``TimeoutError`` after ``wait_s``. Reads the bucket as ``admin`` (read-only)."""
    share = math.ceil(partitions / members)
    nc = await credentials.connect(nats_url, ADMIN, connect_timeout=5,
                                   max_reconnect_attempts=0)
    try:
        kv = await nc.jetstream().key_value(LEASES.name)
        async with asyncio.timeout(wait_s):
            while True:
                held: dict[int, int] = {}
                for partition in range(partitions):
                    try:
                        entry = await kv.get(lease_key(service, partition))
                    except (KeyValueError, NotFoundError):
                        break  # never written, expired, or deleted: free
                    if not entry.value:
                        break
                    pid = _member_pid(bytes(entry.value).decode())
                    held[pid] = held.get(pid, 0) + 1
                else:
                    if max(held.values()) <= share:
                        return held
                await asyncio.sleep(0.1)
    finally:
        await nc.close()


def _member_pid(member: str) -> int:
    """The PID in a member id (``<service>-<host>-<pid>-<random>``; the host may hold ``-``)."""
    return int(member.rsplit("-", 2)[1])


class CpuMeter:
    """CPU use of named processes over a window, as a percentage of one core each."""

    def __init__(self, pids: dict[str, list[int]]) -> None:
        self._pids = pids
        self._start: dict[str, float] = {}
        self._started_at = 0.0

    def start(self) -> None:
        self._start = {name: self._used(pids) for name, pids in self._pids.items()}
        self._started_at = time.monotonic()

    def stop(self) -> dict[str, float]:
        elapsed = time.monotonic() - self._started_at
        return {name: round(100 * (self._used(pids) - self._start[name]) / elapsed, 1)
                for name, pids in self._pids.items()}

    @staticmethod
    def _used(pids: list[int]) -> float:
        total = 0.0
        for pid in pids:
            try:
                total += cpu_seconds(pid)
            except OSError:
                pass  # exited: its share is lost, the others still count
        return total
