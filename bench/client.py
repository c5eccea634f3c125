"""A lean load-generator device: one WebSocket speaking protocol v1 JSON frames.

It sends the frames of ``schemas.frames`` and decodes replies with ``schemas.codec``, as
``client.sdk.CourierClient`` does, without that client's per-message queues and futures:
received frames go straight to a ``Handler``, sends are pipelined (``accepted`` is matched by
client id) with an optional window of unanswered sends, and received messages are acknowledged
in batches the way the SDK batches them (200 messages or 20 ms).

The body of every bench message is opaque to the server; it carries what the measurement
needs: phase, sender, counter and the sender's ``time.monotonic_ns()`` (one clock for every
process of this host).
"""

import asyncio
import struct
import time
from typing import Final, Literal

import aiohttp
from aiohttp import WSMsgType

from schemas.codec import decode_server_frame, encode_frame
from schemas.frames import (
    Accepted,
    Ack,
    AckItem,
    Destination,
    Error,
    Message,
    Send,
    Sync,
    Synced,
    Welcome,
)

ACK_BATCH: Final = 200
ACK_DELAY_S: Final = 0.02
CONNECT_TIMEOUT_S: Final = 30.0
CLOSE_TIMEOUT_S: Final = 2.0
#: A 503 upgrade (the store did not answer the device registration: "retry") is retried with
#: back-off for this long, as an app would; ``upgrade_retries`` counts the retries.
UPGRADE_RETRY_S: Final = 30.0
UPGRADE_UNAVAILABLE: Final = 503

#: Phases of a bench message (first body byte).
WARMUP: Final = 0
MEASURED: Final = 1

BODY_BYTES: Final = 128
_BODY_HEAD: Final = struct.Struct("<BIIq")  # phase, sender, counter, send time (ns)
_PADDING: Final = b"\0" * (BODY_BYTES - _BODY_HEAD.size)


def encode_body(phase: int, sender: int, counter: int, sent_ns: int) -> bytes:
    """A bench message body: the measurement header, padded to ``BODY_BYTES``."""
    return _BODY_HEAD.pack(phase, sender, counter, sent_ns) + _PADDING


def decode_body(body: bytes) -> tuple[int, int, int, int]:
    """``(phase, sender, counter, sent_ns)`` of a bench message body."""
    return _BODY_HEAD.unpack_from(body)


class Handler:
    """What a device does with frames it receives; the defaults ignore them."""

    def on_message(self, device: "Device", frame: Message, now_ns: int) -> None:
        """A ``message`` frame (before deduplication: duplicates on the wire included)."""

    def on_accepted(self, device: "Device", frame: Accepted) -> None:
        """The server stored a send of this device."""

    def on_error(self, device: "Device", frame: Error) -> None:
        """The server refused a frame of this device."""


class Device:
    """One device's connection. ``window`` bounds the sends awaiting their reply (None: no
    bound, the offered rate alone paces them)."""

    def __init__(self, index: int, user: str, device: str, handler: Handler, *,
                 window: int | None = None, ack: bool = True) -> None:
        self.index = index
        self.user = user
        self.device = device
        self.handler = handler
        self.ack = ack
        self.welcome: Welcome | None = None
        self.synced: Synced | None = None
        self.unanswered = 0
        #: Upgrades answered 503 and retried before this device connected.
        self.upgrade_retries = 0
        #: Close code of a socket the server (or the network) closed; None if we closed it.
        self.close_code: int | None = None
        self._closing = False
        self._window = asyncio.Semaphore(window) if window else None
        self._ws: aiohttp.ClientWebSocketResponse[Literal[False]] | None = None
        self._reader: asyncio.Task[None] | None = None
        self._welcomed: asyncio.Event = asyncio.Event()
        self._synced: asyncio.Event = asyncio.Event()
        self._all_answered: asyncio.Event = asyncio.Event()
        self._all_answered.set()
        self._acks: list[AckItem] = []
        self._ack_due: asyncio.Event = asyncio.Event()
        self._acker: asyncio.Task[None] | None = None

    @property
    def open(self) -> bool:
        return self._ws is not None and not self._ws.closed

    async def connect(self, session: aiohttp.ClientSession, ws_url: str, token: str) -> Welcome:
        """Open the socket (retrying a 503 upgrade) and wait for ``welcome``."""
        deadline = time.monotonic() + UPGRADE_RETRY_S
        while True:
            try:
                self._ws = await session.ws_connect(
                    ws_url, headers={"Authorization": f"Bearer {token}"}, heartbeat=None,
                    autoping=True, max_msg_size=0, decode_text=False,
                    timeout=aiohttp.ClientWSTimeout(ws_close=CLOSE_TIMEOUT_S))
                break
            except aiohttp.WSServerHandshakeError as exc:
                if exc.status != UPGRADE_UNAVAILABLE or time.monotonic() > deadline:
                    raise
            self.upgrade_retries += 1
            await asyncio.sleep(min(0.05 * 2 ** self.upgrade_retries, 2.0))
        self._reader = asyncio.create_task(self._read_forever(), name=f"read-{self.device}")
        if self.ack:
            self._acker = asyncio.create_task(self._ack_forever(), name=f"ack-{self.device}")
        async with asyncio.timeout(CONNECT_TIMEOUT_S):
            await self._welcomed.wait()
        if self.welcome is None:
            raise ConnectionError(f"{self.device}: closed before welcome ({self.close_code})")
        return self.welcome

    async def send(self, to: Destination, body: bytes, client_id: str) -> None:
        """Send a message; waits for room in the window first, if there is one."""
        if self._window is not None:
            await self._window.acquire()
        self.unanswered += 1
        self._all_answered.clear()
        await self._send(encode_frame(Send(client_id=client_id, to=to, body=body, id=client_id)))

    async def sync(self, wait_s: float) -> Synced:
        """Ask for the backlog and wait until all of it has arrived (``synced``)."""
        self._synced.clear()
        await self._send(encode_frame(Sync()))
        async with asyncio.timeout(wait_s):
            await self._synced.wait()
        if self.synced is None:
            raise ConnectionError(f"{self.device}: closed during sync ({self.close_code})")
        return self.synced

    async def drained(self, wait_s: float) -> None:
        """Wait until every send has its reply or the socket closed; ``TimeoutError`` after
        ``wait_s``."""
        async with asyncio.timeout(wait_s):
            await self._all_answered.wait()

    async def close(self) -> None:
        """Flush pending acknowledgements and close the socket."""
        self._closing = True
        if self.open:
            await self._flush_acks()
        if self._acker is not None:
            self._acker.cancel()
        if self._ws is not None:
            await self._ws.close()
        await asyncio.gather(*(task for task in (self._reader, self._acker) if task is not None),
                             return_exceptions=True)

    # ------------------------------------------------------------------ internals

    async def _send(self, data: bytes) -> None:
        assert self._ws is not None
        await self._ws.send_frame(data, WSMsgType.TEXT)

    async def _read_forever(self) -> None:
        assert self._ws is not None
        try:
            async for msg in self._ws:
                if msg.type is WSMsgType.TEXT:
                    self._on_frame(msg.data)
        finally:
            if not self._closing:
                self.close_code = self._ws.close_code
            self._welcomed.set()
            self._synced.set()
            self._all_answered.set()

    def _on_frame(self, data: bytes) -> None:
        now_ns = time.monotonic_ns()
        frame = decode_server_frame(data)
        if isinstance(frame, Message):
            self.handler.on_message(self, frame, now_ns)
            if self.ack:
                self._acks.append(AckItem(id=frame.message_id, seq=frame.seq,
                                          conversation=frame.conversation,
                                          sender=frame.sender.user))
                self._ack_due.set()
        elif isinstance(frame, Accepted):
            self._answered()
            self.handler.on_accepted(self, frame)
        elif isinstance(frame, Error):
            if frame.id is not None:
                self._answered()
            self.handler.on_error(self, frame)
        elif isinstance(frame, Synced):
            self.synced = frame
            self._synced.set()
        elif isinstance(frame, Welcome):
            self.welcome = frame
            self._welcomed.set()

    def _answered(self) -> None:
        self.unanswered -= 1
        if self.unanswered <= 0:
            self._all_answered.set()
        if self._window is not None:
            self._window.release()

    async def _ack_forever(self) -> None:
        """Acknowledge received messages in batches of up to ``ACK_BATCH`` every
        ``ACK_DELAY_S``; runs until ``close`` cancels it."""
        while True:
            await self._ack_due.wait()
            await asyncio.sleep(ACK_DELAY_S)
            self._ack_due.clear()
            await self._flush_acks()

    async def _flush_acks(self) -> None:
        while self._acks and self.open:
            batch, self._acks = self._acks[:ACK_BATCH], self._acks[ACK_BATCH:]
            await self._send(encode_frame(Ack(messages=batch)))
