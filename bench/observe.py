"""What the orchestrator reads of the system besides the protocol: a process's memory and CPU
time (``/proc``), and how far the storage worker is behind the ``MSGS`` stream."""

import asyncio
import os
import time
from pathlib import Path

import nats

from schemas.subjects import MSGS_STREAM, STORAGE_CONSUMER

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


async def wait_stored(nats_url: str, timeout: float) -> float:
    """Wait until the storage worker has applied every envelope of the stream; returns the
    monotonic time (seconds) at which it had. Raises ``TimeoutError`` after ``timeout``."""
    nc = await nats.connect(nats_url, connect_timeout=5, max_reconnect_attempts=0)
    try:
        js = nc.jetstream()
        async with asyncio.timeout(timeout):
            while True:
                info = await js.consumer_info(MSGS_STREAM, STORAGE_CONSUMER)
                if not info.num_pending and not info.num_ack_pending:
                    return time.monotonic()
                await asyncio.sleep(0.02)
    finally:
        await nc.close()
