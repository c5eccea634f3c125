"""One client WebSocket: reads and dispatches frames, writes through a bounded queue.

Outbound frames (replies and live deliveries) go through one bounded queue drained by one
writer task; when the queue is full the socket is closed with ``SLOW_CONSUMER`` and the
undelivered messages stay in the device's backlog. While a sync is running, live deliveries
are buffered and released after the backlog, minus those the backlog already carried.
"""

import asyncio
import secrets
import time

import msgspec
import structlog
from aiohttp import WSMsgType, web
from prometheus_client import Counter

from gateway.auth import Identity
from gateway.callbacks import CallbackRelay
from gateway.control import ControlGuard
from gateway.limits import Limits
from gateway.messaging import Messaging
from gateway.peer import SocialFrames
from runtime.config import GatewayConfig
from schemas.codec import decode_client_frame, encode_frame
from schemas.errors import RETRYABLE, CloseCode, ErrorCode, ProtocolError
from schemas.frames import (
    Ack,
    Callback,
    ClientFrame,
    Error,
    Ping,
    Pong,
    PresenceSubscribe,
    PresenceUnsubscribe,
    Read,
    Send,
    Sync,
    Synced,
    Typing,
)

log = structlog.get_logger(__name__)

FRAMES_IN = Counter("courier_gateway_frames_in_total", "Client frames", ["type"])
ERRORS_OUT = Counter("courier_gateway_errors_total", "Error frames sent", ["code"])
CLOSES = Counter("courier_gateway_closes_total", "Sockets closed by the gateway", ["code"])
DELIVERED_OUT = Counter("courier_gateway_deliveries_total", "Frames forwarded from NATS")
SYNC_BUFFER_LIMIT_FACTOR = 4


class Connection:
    """The state of one authenticated socket."""

    def __init__(self, ws: web.WebSocketResponse, identity: Identity, messaging: Messaging,
                 config: GatewayConfig, *, guard: ControlGuard,
                 callbacks: CallbackRelay, social: SocialFrames, limits: Limits) -> None:
        self.ws = ws
        self.identity = identity
        self._messaging = messaging
        self._config = config
        self._guard = guard
        self._callbacks = callbacks
        self._social = social
        self._queue: asyncio.Queue[bytes | None] = asyncio.Queue(maxsize=config.send_queue)
        self._limits = limits
        self._strikes = 0
        #: Live deliveries held back while a sync runs, and from the socket's opening until
        #: its first sync, so the backlog always comes before what arrived after it.
        self._sync_buffer: list[tuple[str, bytes]] | None = []
        self._sync_running = False
        self._closing = False
        #: Identifies this socket among all sockets of the device, on every gateway.
        self.session = secrets.token_hex(8)
        self.log = log.bind(user=identity.user, device=identity.device)

    # ------------------------------------------------------------------ outbound

    async def write_forever(self) -> None:
        """The writer task: one socket write at a time, in queue order."""
        while (data := await self._queue.get()) is not None:
            if self._closing:
                continue  # keep draining so that producers waiting for room are released
            try:
                await self.ws.send_str(data.decode())
            except (ConnectionError, RuntimeError):
                self._closing = True

    def send(self, frame: msgspec.Struct) -> None:
        self.send_raw(encode_frame(frame))

    def send_raw(self, data: bytes) -> None:
        if self._closing:
            return
        try:
            self._queue.put_nowait(data)
        except asyncio.QueueFull:
            self.close_soon(CloseCode.SLOW_CONSUMER, "send queue full")

    def deliver(self, data: bytes) -> None:
        """A live delivery from NATS (a ready frame); held while a sync is running."""
        DELIVERED_OUT.inc()
        if self._sync_buffer is None:
            self.send_raw(data)
            return
        if len(self._sync_buffer) >= self._config.send_queue * SYNC_BUFFER_LIMIT_FACTOR:
            self.close_soon(CloseCode.SLOW_CONSUMER, "too many live messages during sync")
            return
        self._sync_buffer.append((_message_id(data), data))

    def close_soon(self, code: CloseCode, reason: str) -> None:
        """Close from synchronous code (a NATS callback): the writer stops, the socket closes."""
        if self._closing:
            return
        self._closing = True
        CLOSES.labels(str(int(code))).inc()
        self.log.info("closing", code=int(code), reason=reason)
        asyncio.get_running_loop().create_task(self.ws.close(code=code, message=reason.encode()))

    def finish(self) -> None:
        """Stop the writer after what is queued."""
        try:
            self._queue.put_nowait(None)
        except asyncio.QueueFull:
            pass

    # ------------------------------------------------------------------ inbound

    async def read_forever(self) -> None:
        """Serve frames until the socket closes; the token's expiry closes it too, idle or
        not."""
        expiry = asyncio.get_running_loop().call_later(
            max(0.0, self.identity.expires_at - time.time()),
            self.close_soon, CloseCode.TOKEN_EXPIRED, "token expired")
        try:
            async for msg in self.ws:
                if msg.type in (WSMsgType.TEXT, WSMsgType.BINARY) and not self._closing:
                    await self._on_frame(msg.data)
                elif msg.type == WSMsgType.ERROR:
                    self.log.info("socket_error", error=repr(self.ws.exception()))
                    return
        finally:
            expiry.cancel()

    async def _on_frame(self, data: str | bytes) -> None:
        request_id: str | None = None
        try:
            frame = decode_client_frame(data)
            request_id = frame.id
            self._limits.check_frame(self.identity, frame)
            FRAMES_IN.labels(type(frame).__name__.lower()).inc()
            await self._dispatch(frame)
            self._strikes = 0
        except ProtocolError as exc:
            self._reject(exc, request_id)
        except Exception:
            self.log.exception("frame_failed", request_id=request_id)
            self._reject(ProtocolError(ErrorCode.INTERNAL, "internal error"), request_id)

    async def _dispatch(self, frame: ClientFrame) -> None:
        identity = self.identity
        if isinstance(frame, Send):
            self._guard.check_send(identity, frame.module)
            self.send(await self._messaging.send(identity, frame))
        elif isinstance(frame, Callback):
            self.send(await self._callbacks.publish(identity, frame))
        elif isinstance(frame, Ack):
            await self._messaging.ack(identity, frame)
        elif isinstance(frame, Read):
            await self._messaging.read(identity, frame)
        elif isinstance(frame, Sync):
            await self._sync(frame)
        elif isinstance(frame, Ping):
            self.send(Pong(id=frame.id))
        elif isinstance(frame, PresenceSubscribe | PresenceUnsubscribe | Typing):
            await self._social.handle(self, frame)

    def _reject(self, exc: ProtocolError, request_id: str | None) -> None:
        ERRORS_OUT.labels(exc.code).inc()
        self.send(Error(code=exc.code, message=exc.message, retry=exc.code in RETRYABLE,
                        id=request_id, retry_after_s=exc.retry_after_s))
        self._strikes += 1
        if self._strikes >= self._config.max_strikes:
            self.close_soon(CloseCode.TOO_MANY_ERRORS, "too many rejected frames")

    async def _sync(self, frame: Sync) -> None:
        """Send the backlog page by page, then the live messages that arrived meanwhile.

        The device's live subject has been subscribed since the socket opened, so reading the
        stream position now and waiting for storage to reach it leaves no gap."""
        if self._sync_running:
            raise ProtocolError(ErrorCode.CONFLICT, "a sync is already running")
        self._sync_running = True
        if self._sync_buffer is None:
            self._sync_buffer = []
        sent: set[str] = set()
        count = 0
        try:
            barrier = await self._messaging.stream_position()
            cursor = frame.after or 0
            while not self._closing:
                page = await self._messaging.sync_page(self.identity, cursor,
                                                       self._config.sync_page, barrier)
                for message in page.messages:
                    sent.add(message.message_id)
                    await self._put_waiting(encode_frame(message))
                count += len(page.messages)
                cursor = page.cursor
                if not page.more:
                    break
            self.send(Synced(cursor=cursor, count=count, id=frame.id))
        finally:
            self._sync_running = False
        # Only a complete sync releases the held frames: after a failed one (an error frame
        # with retry=true) they stay held, so the retried backlog still comes first.
        buffered, self._sync_buffer = self._sync_buffer or [], None
        for message_id, data in buffered:
            if message_id not in sent:
                self.send_raw(data)

    async def _put_waiting(self, data: bytes) -> None:
        """Queue a backlog frame, waiting for room: the backlog is paced by the socket."""
        if not self._closing:
            await self._queue.put(data)


class _MessageId(msgspec.Struct):
    message_id: str = ""


_message_id_decoder = msgspec.json.Decoder(_MessageId)


def _message_id(frame: bytes) -> str:
    """The ``message_id`` of a frame from NATS (empty for frames that have none), read only
    for frames held during a sync, where the backlog may already have carried them."""
    try:
        return _message_id_decoder.decode(frame).message_id
    except msgspec.DecodeError:
        return ""
