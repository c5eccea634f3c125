"""``LeanEvent``: ``asyncio.Event`` without its per-instance deque.

An ``asyncio.Event`` allocates a deque for its waiters when it is made (about 850 bytes with
the event); a gateway socket holds a few events that are almost never waited on, so at tens of
thousands of idle sockets they were a measurable part of each socket's memory. This one
allocates a list only while someone waits.
"""

import asyncio


class LeanEvent:
    """``set``, ``clear``, ``is_set`` and ``wait`` as ``asyncio.Event`` has them: ``set``
    wakes every waiter, and a waiter woken stays woken even if ``clear`` follows at once."""

    __slots__ = ("_set", "_waiters")

    def __init__(self, *, set_: bool = False) -> None:
        self._set = set_
        self._waiters: list[asyncio.Future[None]] | None = None

    def is_set(self) -> bool:
        return self._set

    def set(self) -> None:
        if self._set:
            return
        self._set = True
        waiters, self._waiters = self._waiters, None
        for waiter in waiters or ():
            if not waiter.done():
                waiter.set_result(None)

    def clear(self) -> None:
        self._set = False

    async def wait(self) -> None:
        if self._set:
            return
        waiter = asyncio.get_running_loop().create_future()
        if self._waiters is None:
            self._waiters = []
        self._waiters.append(waiter)
        try:
            await waiter
        finally:
            if self._waiters is not None and waiter in self._waiters:
                self._waiters.remove(waiter)
                if not self._waiters:
                    self._waiters = None
