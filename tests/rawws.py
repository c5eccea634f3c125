"""A raw aiohttp WebSocket client for tests that must read what really reaches a client: the
close frame itself (its code), not the code a gateway logs or the SDK infers.

A socket that ends without a close frame is what a browser reports as 1006; ``close_frame``
fails the test then, naming what the client saw instead.
"""

import asyncio
import time
from collections.abc import AsyncIterator, Coroutine
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import pytest
from aiohttp import WSMsgType

from schemas.codec import decode_server_frame
from schemas.frames import Welcome


@asynccontextmanager
async def raw_socket(base_url: str, token: str) -> AsyncIterator[aiohttp.ClientWebSocketResponse]:
    """An open socket past its ``welcome``; no heartbeat, no size limit, no reading of its own."""
    async with aiohttp.ClientSession() as session:
        ws = await session.ws_connect(f"{base_url}/v1/ws", max_msg_size=0, heartbeat=None,
                                      headers={"Authorization": f"Bearer {token}"})
        try:
            first = await asyncio.wait_for(ws.receive(), 10)
            assert isinstance(decode_server_frame(first.data), Welcome), first
            yield ws
        finally:
            await ws.close()


async def close_frame(ws: aiohttp.ClientWebSocketResponse, within_s: float = 20.0) -> int:
    """Read (and drop) frames until the server's close frame; the code it carries."""
    async with asyncio.timeout(within_s):
        while True:
            msg = await ws.receive()
            if msg.type == WSMsgType.CLOSE:
                return int(msg.data)
            if msg.type in (WSMsgType.CLOSED, WSMsgType.CLOSING, WSMsgType.ERROR):
                pytest.fail(f"the socket ended without a close frame: the client reads "
                            f"{ws.close_code} ({msg.type.name}, {ws.exception()!r})")


async def read_until(ws: aiohttp.ClientWebSocketResponse, marker: bytes,
                     within_s: float = 20.0) -> None:
    """Read text frames until one contains ``marker`` (a sentinel's id, a frame type)."""
    async with asyncio.timeout(within_s):
        while True:
            msg = await ws.receive()
            if msg.type != WSMsgType.TEXT:
                pytest.fail(f"expected a text frame with {marker!r}, got {msg.type.name} "
                            f"{msg.data!r}")
            if marker in msg.data.encode():
                return


#: How long a hammering client writes without yielding to its event loop (so without reading).
BURST_S = 0.1


@asynccontextmanager
async def hammering(ws: aiohttp.ClientWebSocketResponse, frame: str) -> AsyncIterator[None]:
    """A client busy writing when the gateway closes: ``frame`` again and again, in bursts
    during which it reads nothing. A gateway that closes its side with this input unread makes
    the kernel reset the connection; the client's next write fails and aiohttp drops the
    connection with the close frame still unread (1006)."""

    async def keep_sending() -> None:
        while not ws.closed:
            try:
                end = time.monotonic() + BURST_S
                while time.monotonic() < end and not ws.closed:
                    await ws.send_str(frame)
            except ConnectionError:
                return
            await asyncio.sleep(0.002)

    async with background(keep_sending()):
        yield


@asynccontextmanager
async def background(work: Coroutine[Any, Any, None]) -> AsyncIterator[None]:
    """Run ``work`` beside the block; cancelled and awaited when the block ends."""
    task = asyncio.create_task(work)
    try:
        yield
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
