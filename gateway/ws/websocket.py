"""aiohttp's server WebSocket with a close whose close frame reaches the client.

aiohttp closes the transport as soon as a closing handshake ends or fails, and right after it
answers a protocol error itself (1009 frame too big, 1007 invalid UTF-8, 1002), while the
client may still be sending. Closing a TCP socket with unread input makes the kernel send a
reset instead of a FIN, and a reset destroys what the client has not read yet: the close frame
(the client reads 1006). So every transport close of this socket is a lingering one: the
write side is shut after what is queued (the close frame, then a FIN), and the input is read
and dropped until the client ends the connection too. Whoever owns the socket waits for that
with ``wait_gone`` and calls ``abort`` at its deadline.
"""

import asyncio
from typing import Any

from aiohttp import web
from aiohttp.abc import AbstractStreamWriter

#: Poll interval of ``wait_gone`` (a closing transport reports its end to no one but aiohttp).
GONE_POLL_S = 0.02


class LingeringWebSocket(web.WebSocketResponse):
    """A ``WebSocketResponse`` whose transport is half-closed, never reset, when it ends."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._request: web.BaseRequest | None = None
        self._lingering = False

    async def prepare(self, request: web.BaseRequest) -> AbstractStreamWriter:
        self._request = request
        return await super().prepare(request)

    def _transport(self) -> asyncio.Transport | None:
        request = self._request
        return None if request is None else request.transport  # None once the peer is gone

    def _close_transport(self) -> None:
        """aiohttp's one place for ending the transport (handshake done, failed or cut short,
        protocol error, heartbeat timeout): shut the write side, keep reading and drop it."""
        transport, request = self._transport(), self._request
        if transport is None or request is None or transport.is_closing() or self._lingering:
            return
        self._lingering = True
        request.protocol.close()  # the protocol drops input from now on
        if not transport.can_write_eof():
            transport.close()
            return
        transport.write_eof()  # FIN after what is queued: the close frame goes first
        transport.resume_reading()  # read to the client's FIN, so nothing is left unread

    def unsent_bytes(self) -> int:
        """Bytes written to the transport that it has not handed to the kernel yet."""
        transport = self._transport()
        return 0 if transport is None else transport.get_write_buffer_size()

    async def wait_gone(self) -> None:
        """Until the connection has ended (the client closed its side too, or it was lost)."""
        while self._transport() is not None:  # noqa: ASYNC110 (no event to wait on)
            await asyncio.sleep(GONE_POLL_S)

    def abort(self) -> None:
        """End the connection now, unsent bytes and all."""
        transport = self._transport()
        if transport is not None:
            transport.abort()
