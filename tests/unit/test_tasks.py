"""The owned task group and the back-off shared by task watchers and the make run supervisor."""

import asyncio

import pytest
import structlog

from runtime.backoff import CRASH_LOOP_AFTER, Backoff
from runtime.tasks import GroupClosed, TaskGroup


def test_backoff_doubles_up_to_the_cap() -> None:
    backoff = Backoff(0.5, 4.0, reset_after_s=30.0)
    assert [backoff.failed(1.0) for _ in range(6)] == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    assert backoff.failures == 6


def test_backoff_resets_after_a_healthy_run() -> None:
    backoff = Backoff(0.5, 30.0, reset_after_s=10.0)
    backoff.failed(0.1)
    backoff.failed(0.1)
    assert backoff.failed(9.9) == 2.0  # still short runs
    assert backoff.failed(10.0) == 0.5  # lasted reset_after_s: counts as the first again
    assert backoff.failures == 1


def test_backoff_reports_a_crash_loop() -> None:
    backoff = Backoff(0.5, 30.0)
    for _ in range(CRASH_LOOP_AFTER - 1):
        backoff.failed(0.0)
    assert not backoff.crash_looping
    backoff.failed(0.0)
    assert backoff.crash_looping
    backoff.failed(60.0)
    assert not backoff.crash_looping


@pytest.mark.parametrize("args", [(0.0, 1.0), (2.0, 1.0), (-1.0, 1.0)])
def test_backoff_refuses_bad_bounds(args: tuple[float, float]) -> None:
    with pytest.raises(ValueError):
        Backoff(*args)


async def test_a_failing_watcher_is_logged_and_started_again() -> None:
    group = TaskGroup("test")
    runs = 0
    third = asyncio.Event()

    async def flaky() -> None:
        nonlocal runs
        runs += 1
        if runs >= 3:
            third.set()
            await asyncio.Event().wait()  # healthy from now on
        raise RuntimeError(f"boom {runs}")

    with structlog.testing.capture_logs() as logs:
        group.watch(flaky, name="flaky", backoff=Backoff(0.01, 0.02))
        await asyncio.wait_for(third.wait(), 5)
    failures = [entry for entry in logs if entry["event"] == "watcher_failed"]
    assert len(failures) == 2
    assert all(entry["group"] == "test" and entry["task"] == "flaky" for entry in failures)
    assert all(entry["log_level"] == "error" for entry in failures)
    await group.stop()
    assert len(group) == 0


async def test_a_watcher_that_returns_is_started_again() -> None:
    group = TaskGroup("test")
    runs = 0
    again = asyncio.Event()

    async def ends() -> None:
        nonlocal runs
        runs += 1
        if runs == 2:
            again.set()

    group.watch(ends, name="ends", backoff=Backoff(0.01, 0.01))
    await asyncio.wait_for(again.wait(), 5)
    await group.drain()


async def test_drain_cancels_and_awaits_watchers_and_waits_for_work() -> None:
    group = TaskGroup("test")
    watcher_ended = asyncio.Event()
    release = asyncio.Event()
    finished: list[str] = []

    watching = asyncio.Event()
    working = asyncio.Event()

    async def forever() -> None:
        watching.set()
        try:
            await asyncio.Event().wait()
        finally:
            watcher_ended.set()

    async def work() -> None:
        working.set()
        await release.wait()
        finished.append("work")

    group.watch(forever, name="forever")
    group.spawn(work(), name="work")
    await asyncio.wait_for(asyncio.gather(watching.wait(), working.wait()), 5)
    draining = asyncio.create_task(group.drain())
    await asyncio.wait_for(watcher_ended.wait(), 5)
    assert not draining.done()  # the work is still in flight
    release.set()
    await asyncio.wait_for(draining, 5)
    assert finished == ["work"] and len(group) == 0
    with pytest.raises(GroupClosed):
        group.spawn(work(), name="late")


async def test_drain_timeout_cancels_what_is_left() -> None:
    group = TaskGroup("test")
    cancelled = asyncio.Event()

    async def stuck() -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise

    group.spawn(stuck(), name="stuck")
    await group.drain(timeout_s=0.05)
    assert cancelled.is_set() and len(group) == 0


async def test_failed_work_is_logged_with_its_name() -> None:
    group = TaskGroup("rpc")

    async def fails() -> None:
        raise ValueError("bad")

    with structlog.testing.capture_logs() as logs:
        task = group.spawn(fails(), name="request")
        await task
    [entry] = [e for e in logs if e["event"] == "task_failed"]
    assert (entry["group"], entry["task"]) == ("rpc", "request")


async def test_stop_cancels_everything() -> None:
    group = TaskGroup("test")
    started: list[asyncio.Event] = [asyncio.Event(), asyncio.Event()]

    async def waits(index: int) -> None:
        started[index].set()
        await asyncio.Event().wait()

    group.watch(lambda: waits(0), name="w")
    group.spawn(waits(1), name="s")
    await asyncio.wait_for(asyncio.gather(*(event.wait() for event in started)), 5)
    await group.stop()
    assert len(group) == 0


async def test_spawn_bounded_holds_at_most_the_slots() -> None:
    group = TaskGroup("test")
    slots = asyncio.Semaphore(2)
    running = 0
    peak = 0
    release = asyncio.Event()

    async def job() -> None:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await release.wait()
        running -= 1

    async def submit_all() -> None:
        for _ in range(5):
            await group.spawn_bounded(job, name="job", slots=slots)

    submitting = asyncio.create_task(submit_all())
    async with asyncio.timeout(5):
        while running < 2:
            await asyncio.sleep(0.01)
    assert slots.locked()  # the third job waits for a slot
    release.set()
    await asyncio.wait_for(submitting, 5)
    await group.drain()
    assert peak == 2 and running == 0


async def test_stop_ends_a_watcher_whose_wait_for_dropped_the_cancellation() -> None:
    """On Python 3.11 ``asyncio.wait_for`` returns its inner result and drops a cancellation
    that arrives with it; a watcher waiting like nats-py's KV ``updates`` runs on. The group
    cancels again until it ends (a presence view's ``stop`` once never returned)."""
    queue: asyncio.Queue[int] = asyncio.Queue()
    received: list[int] = []
    waiting = asyncio.Event()

    async def watcher() -> None:
        while True:
            waiting.set()
            try:
                received.append(await asyncio.wait_for(queue.get(), 1.0))
            except TimeoutError:
                continue

    group = TaskGroup("test")
    group.watch(watcher, name="updates", backoff=Backoff(0.01, 0.01))
    await waiting.wait()
    queue.put_nowait(1)  # the update and the cancellation arrive together
    async with asyncio.timeout(10):
        await group.stop()
    assert received == [1]  # wait_for did return the update: the first cancel was dropped
