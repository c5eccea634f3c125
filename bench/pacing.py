"""Time helpers of the generator processes: one monotonic clock (``time.monotonic_ns``, shared
by every process of the host), an offered rate paced in batches per tick, bounded waits."""

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Final

#: Sub-millisecond sleeps spin under uvloop: the offered rate is paced in batches per tick.
TICK_S: Final = 0.005
POLL_S: Final = 0.01


async def offer(rate_per_s: float, start_ns: int, end_ns: int,
                emit: Callable[[], Awaitable[None]]) -> int:
    """Call ``emit`` ``rate_per_s`` times per second from ``start_ns`` to ``end_ns``: every
    tick, as many times as are due. Returns how many were emitted (the rate times the span)."""
    await sleep_until(start_ns)
    total = int(rate_per_s * (end_ns - start_ns) / 1e9)
    emitted = 0
    while emitted < total:
        now = time.monotonic_ns()
        due = total if now >= end_ns else min(total, int(rate_per_s * (now - start_ns) / 1e9))
        while emitted < due:
            await emit()
            emitted += 1
        if emitted < total:
            await asyncio.sleep(TICK_S)
    return emitted


async def sleep_until(deadline_ns: int) -> None:
    delay = (deadline_ns - time.monotonic_ns()) / 1e9
    if delay > 0:
        await asyncio.sleep(delay)


async def wait_until(condition: Callable[[], bool], wait_s: float) -> bool:
    """Check ``condition`` every 10 ms until it holds (True) or ``wait_s`` passes (False)."""
    deadline = time.monotonic() + wait_s
    while not condition():
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(POLL_S)
    return True
