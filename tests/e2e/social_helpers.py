"""Helpers of the groups, contacts and presence end-to-end tests."""

import asyncio
from collections.abc import Callable
from typing import Any, TypeVar

from client.sdk import CourierClient

T = TypeVar("T")


async def call(client: CourierClient, method: str, path: str, body: object | None = None,
               status: int = 200) -> Any:
    """A REST call that must answer ``status``; returns the decoded body."""
    got, reply = await client.api(method, path, body)
    assert got == status, f"{method} {path}: {got} {reply}"
    return reply


async def refused(client: CourierClient, method: str, path: str, body: object | None,
                  status: int, code: str) -> None:
    """A REST call that must fail with this status and problem ``code``."""
    reply = await call(client, method, path, body, status)
    assert isinstance(reply, dict) and reply["code"] == code, f"{method} {path}: {reply}"


async def next_of(queue: "asyncio.Queue[T]", match: Callable[[T], bool],
                  within: float = 10.0) -> T:
    """The next item of ``queue`` that matches (others are dropped)."""
    async with asyncio.timeout(within):
        while True:
            item = await queue.get()
            if match(item):
                return item


async def wait_for(condition: Callable[[], Any], within: float = 10.0) -> None:
    """Poll ``condition`` (a value or a coroutine) until it holds; fail after ``within``."""
    async with asyncio.timeout(within):
        while True:
            if await _value(condition()):
                return
            await asyncio.sleep(0.05)


async def _value(value: Any) -> Any:
    return await value if asyncio.iscoroutine(value) else value
