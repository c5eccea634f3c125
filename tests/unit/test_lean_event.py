"""``runtime.lean_event.LeanEvent`` behaves as ``asyncio.Event`` where the gateway relies on
it: ``set`` wakes every waiter, a woken waiter stays woken through a ``clear``, a cancelled
waiter leaves nothing behind."""

import asyncio

import pytest

from runtime.lean_event import LeanEvent


async def until_waiting(event: LeanEvent, count: int) -> None:
    """Until ``count`` tasks wait on ``event`` (fails after a second)."""
    async with asyncio.timeout(1):
        while len(event._waiters or ()) < count:
            await asyncio.sleep(0)  # one turn of the loop: the waiters start


async def test_set_wakes_every_waiter_and_later_waits_return_at_once() -> None:
    event = LeanEvent()
    waiters = [asyncio.create_task(event.wait()) for _ in range(3)]
    await until_waiting(event, 3)
    event.set()
    await asyncio.wait_for(asyncio.gather(*waiters), 1)
    assert event.is_set()
    await asyncio.wait_for(event.wait(), 1)  # set: no waiting


async def test_a_waiter_woken_by_set_stays_woken_when_clear_follows() -> None:
    event = LeanEvent()
    waiter = asyncio.create_task(event.wait())
    await until_waiting(event, 1)
    event.set()
    event.clear()
    await asyncio.wait_for(waiter, 1)
    assert not event.is_set()


async def test_a_cancelled_waiter_is_forgotten_and_the_event_still_works() -> None:
    event = LeanEvent()
    waiter = asyncio.create_task(event.wait())
    await until_waiting(event, 1)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert event._waiters is None  # nothing held for a waiter that left
    other = asyncio.create_task(event.wait())
    await until_waiting(event, 1)
    event.set()
    await asyncio.wait_for(other, 1)


def test_it_starts_set_when_asked() -> None:
    assert LeanEvent(set_=True).is_set() and not LeanEvent().is_set()
