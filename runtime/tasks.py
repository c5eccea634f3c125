"""Owned background tasks: every task a service spawns belongs to one ``TaskGroup``.

Two kinds of task:

- **work** (``spawn``, ``spawn_bounded``): one piece of work, such as serving one request.
  A failure is logged with the group and task name (never lost in an unawaited task). ``drain``
  waits for work in flight (then cancels what is left after its timeout).
- **watchers** (``watch``): a loop that must run for the whole life of the service (a KV
  watcher, a purge loop, a heartbeat). When it raises, or returns, it is logged and started
  again after a back-off (``runtime.backoff``); ``drain`` and ``stop`` cancel it and wait.

``drain`` closes the group (no new tasks), stops the watchers and awaits every task; ``stop``
cancels whatever is still running and awaits it. ``CancelledError`` is never swallowed: a task
cancelled by the group ends cancelled, and the group's own waits propagate cancellation.
"""

import asyncio
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from typing import Any, Final

import structlog
from prometheus_client import Counter

from runtime.backoff import Backoff

log = structlog.get_logger(__name__)

#: How long a cancelled task may take to end before it is cancelled again.
RECANCEL_S: Final = 1.0

TASK_FAILURES = Counter("courier_task_failures_total", "Owned tasks that raised",
                        ["group", "task"])
WATCHER_RESTARTS = Counter("courier_watcher_restarts_total",
                           "Watcher tasks started again after they failed or ended",
                           ["group", "task"])


class GroupClosed(RuntimeError):
    """A task was spawned into a group that is draining or stopped."""


class TaskGroup:
    """The background tasks of one component, started, drained and stopped together."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._work: set[asyncio.Task[None]] = set()
        self._watchers: set[asyncio.Task[None]] = set()
        self._closed = False

    @property
    def closed(self) -> bool:
        return self._closed

    def __len__(self) -> int:
        """Tasks running now (work and watchers)."""
        return len(self._work) + len(self._watchers)

    def spawn(self, coro: Coroutine[Any, Any, None], *, name: str) -> "asyncio.Task[None]":
        """Run ``coro`` as owned work; its failure is logged, ``drain`` awaits it."""
        if self._closed:
            coro.close()
            raise GroupClosed(f"task group {self.name!r} is closed")
        task = asyncio.create_task(self._guard(coro, name), name=f"{self.name}:{name}")
        self._work.add(task)
        task.add_done_callback(self._work.discard)
        return task

    async def spawn_bounded(self, make: Callable[[], Coroutine[Any, Any, None]], *,
                            name: str, slots: asyncio.Semaphore) -> None:
        """Wait for one of ``slots``, then ``spawn(make())``; the slot is released when the
        task ends. The coroutine is made only once a slot is held."""
        await slots.acquire()
        try:
            task = self.spawn(make(), name=name)
        except BaseException:
            slots.release()
            raise
        task.add_done_callback(lambda _: slots.release())

    def watch(self, run: Callable[[], Awaitable[None]], *, name: str,
              backoff: Backoff | None = None) -> None:
        """Keep ``run()`` running until the group drains: started again after it raises or
        returns, waiting ``backoff`` (default: 0.5 s doubling up to 30 s) in between."""
        if self._closed:
            raise GroupClosed(f"task group {self.name!r} is closed")
        task = asyncio.create_task(self._keep_running(run, name, backoff or Backoff()),
                                   name=f"{self.name}:{name}")
        self._watchers.add(task)
        task.add_done_callback(self._watchers.discard)

    async def drain(self, timeout_s: float | None = None) -> None:
        """Close the group, stop the watchers, wait for the work in flight (cancelled after
        ``timeout_s``)."""
        self._closed = True
        await cancel_and_wait(self._watchers)
        if not self._work:
            return
        _, pending = await asyncio.wait(set(self._work), timeout=timeout_s)
        if pending:
            log.warning("drain_timeout", group=self.name, tasks=len(pending))
            await cancel_and_wait(pending)

    async def stop(self) -> None:
        """Close the group, cancel every task and wait for them to end."""
        self._closed = True
        await cancel_and_wait(self._watchers | self._work)

    async def _guard(self, coro: Coroutine[Any, Any, None], name: str) -> None:
        try:
            await coro
        except asyncio.CancelledError:
            raise
        except Exception:
            TASK_FAILURES.labels(self.name, name).inc()
            log.exception("task_failed", group=self.name, task=name)

    async def _keep_running(self, run: Callable[[], Awaitable[None]], name: str,
                            backoff: Backoff) -> None:
        loop = asyncio.get_running_loop()
        while True:
            started = loop.time()
            try:
                await run()
                failure: str | None = None
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                failure = repr(exc)
                TASK_FAILURES.labels(self.name, name).inc()
                log.exception("watcher_failed", group=self.name, task=name)
            delay = backoff.failed(loop.time() - started)
            WATCHER_RESTARTS.labels(self.name, name).inc()
            log.warning("watcher_restarting", group=self.name, task=name, in_s=delay,
                        attempt=backoff.failures, ended=failure is None)
            await asyncio.sleep(delay)


async def cancel_and_wait(tasks: Iterable["asyncio.Task[Any]"]) -> None:
    """Cancel ``tasks`` and wait until each has ended (their results are discarded).

    A task still running ``RECANCEL_S`` after its cancellation is cancelled again: on Python
    3.11 ``asyncio.wait_for`` (nats-py waits with it, e.g. a KV watcher's ``updates``) returns
    its inner result and drops a cancellation that arrives as that result does, and the task
    runs on (a KV follower loops forever: a ``stop`` that never returned)."""
    pending = set(tasks)
    while pending:
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=RECANCEL_S)
