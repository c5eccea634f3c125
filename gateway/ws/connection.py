"""One client WebSocket: reads and dispatches frames, writes through a bounded queue.

Outbound frames (replies and live deliveries) go through one queue drained by one writer task,
bounded in frames and in bytes (``send_buffer_bytes``, counting what the transport holds
unsent too). While a sync is running, and from the socket's opening until its first sync,
live deliveries are held (bounded by ``sync_buffer_bytes``) and released after the backlog,
minus those the backlog already carried; backlog frames wait for room in the send budget. A
socket over a budget, or whose writes make no progress for ``write_stall_s`` (its client
stopped reading), is closed with ``SLOW_CONSUMER``; its undelivered messages stay in the
device's backlog (they were never acked).

Every close the gateway does goes through ``close_soon``: the connection's own closing task
writes the close frame, waits for the client's answer and for the connection to end, and
aborts the transport after ``close_timeout_s``; the socket handler awaits it (``shutdown``).
"""

import asyncio
import secrets
import time
from collections import deque

import msgspec
import structlog
from aiohttp import WebSocketError, WSCloseCode, WSMsgType
from prometheus_client import Counter, Gauge

from gateway.auth import Identity
from gateway.handlers.callbacks import CallbackRelay
from gateway.handlers.control import ControlGuard
from gateway.handlers.limits import Limits
from gateway.handlers.messaging import Messaging
from gateway.handlers.peer import SocialFrames
from gateway.ws.websocket import LingeringWebSocket
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
BUFFERED = Gauge("courier_gateway_buffered_bytes",
                 "Bytes held for sockets: send queues (send) and live frames held until a "
                 "sync completes (held)", ["buffer"])
SLOW_CONSUMERS = Counter("courier_gateway_slow_consumers_total",
                         "Sockets closed with 4008, by cause: send budget, held budget, held "
                         "frame count, no write progress", ["cause"])
CLOSE_ABORTS = Counter("courier_gateway_close_aborts_total",
                       "Closing sockets whose transport was aborted after close_timeout_s")
#: Back-off of a server-side resync while storage or NATS are not back yet.
RESYNC_RETRY_S = 0.2
RESYNC_MAX_RETRY_S = 5.0
SYNC_BUFFER_LIMIT_FACTOR = 4
for _buffer in ("send", "held"):
    BUFFERED.labels(_buffer)


class Connection:
    """The state of one authenticated socket."""

    def __init__(self, ws: LingeringWebSocket, identity: Identity, messaging: Messaging,
                 config: GatewayConfig, *, guard: ControlGuard,
                 callbacks: CallbackRelay, social: SocialFrames, limits: Limits) -> None:
        self.ws = ws
        self.identity = identity
        self._messaging = messaging
        self._config = config
        self._guard = guard
        self._callbacks = callbacks
        self._social = social
        self._queue: asyncio.Queue[bytes] = asyncio.Queue(maxsize=config.send_queue)
        self._queued_bytes = 0
        #: Set each time the writer takes a frame (or the socket starts closing): backlog
        #: frames waiting for room look again.
        self._room = asyncio.Event()
        self._limits = limits
        self._strikes = 0
        #: Live deliveries held back while a sync runs, and from the socket's opening until
        #: its first sync, so the backlog always comes before what arrived after it.
        self._held: deque[tuple[str, bytes]] | None = deque()
        self._held_bytes = 0
        self._sync_running = False
        #: A NATS reconnect happened during a sync: its backlog may miss what was lost live.
        self._resync_wanted = False
        self._resyncer: asyncio.Task[None] | None = None
        self._closing = False
        self._writer: asyncio.Task[None] | None = None
        self._closer: asyncio.Task[None] | None = None
        #: Identifies this socket among all sockets of the device, on every gateway.
        self.session = secrets.token_hex(8)
        self.log = log.bind(user=identity.user, device=identity.device, session=self.session)

    # ------------------------------------------------------------------ outbound

    def start(self) -> None:
        """Start the writer task (owned here; ended by ``shutdown``)."""
        self._writer = asyncio.get_running_loop().create_task(
            self._write_forever(), name=f"ws-writer-{self.session}")

    async def _write_forever(self) -> None:
        """One socket write at a time, in queue order; a write that makes no progress for
        ``write_stall_s`` (the transport stays full: the client stopped reading) closes."""
        while not self._closing:
            data = await self._queue.get()
            self._queued_bytes -= len(data)
            BUFFERED.labels("send").dec(len(data))
            self._room.set()
            if self._closing:
                break
            try:
                async with asyncio.timeout(self._config.write_stall_s):
                    await self.ws.send_str(data.decode())
            except TimeoutError:
                self._slow("stalled", f"no write progress for {self._config.write_stall_s}s")
            except (ConnectionError, RuntimeError):
                self._stop_sending()  # the connection is gone; the read loop ends too

    def send(self, frame: msgspec.Struct) -> None:
        self.send_raw(encode_frame(frame))

    def send_raw(self, data: bytes) -> None:
        """Queue a frame now; a socket over its send budget is closed instead."""
        if self._closing:
            return
        if not self._fits(len(data)):
            self._slow("send_budget", "send buffer over budget")
            return
        self._enqueue(data)

    def _fits(self, size: int) -> bool:
        """Whether a frame of ``size`` bytes fits the send budget (one always fits an empty
        queue, so a frame bigger than the budget does not stall the socket on its own)."""
        if self._queue.full():
            return False
        held = self._queued_bytes + self.ws.unsent_bytes()
        return self._queue.empty() or held + size <= self._config.send_buffer_bytes

    def _enqueue(self, data: bytes) -> None:
        self._queue.put_nowait(data)
        self._queued_bytes += len(data)
        BUFFERED.labels("send").inc(len(data))

    async def _send_paced(self, data: bytes) -> None:
        """Queue a frame once it fits the send budget: the backlog is paced by the socket.
        A socket that stops reading is closed by the writer's stall timeout meanwhile."""
        while not self._closing and not self._fits(len(data)):
            self._room.clear()
            await self._room.wait()
        if not self._closing:
            self._enqueue(data)

    def deliver(self, data: bytes) -> None:
        """A live delivery from NATS (a ready frame); held while a sync is running."""
        DELIVERED_OUT.inc()
        if self._closing:
            return
        if self._held is None:
            self.send_raw(data)
            return
        if len(self._held) >= self._config.send_queue * SYNC_BUFFER_LIMIT_FACTOR:
            self._slow("held_frames", "too many live messages held for a sync")
            return
        if self._held_bytes + len(data) > self._config.sync_buffer_bytes:
            self._slow("held_budget", "live messages held for a sync over budget")
            return
        self._held.append((_message_id(data), data))
        self._held_bytes += len(data)
        BUFFERED.labels("held").inc(len(data))

    def _take_held(self) -> tuple[str, bytes]:
        assert self._held is not None
        message_id, data = self._held.popleft()
        self._held_bytes -= len(data)
        BUFFERED.labels("held").dec(len(data))
        return message_id, data

    def _slow(self, cause: str, reason: str) -> None:
        if self._closer is None:
            SLOW_CONSUMERS.labels(cause).inc()
        self.close_soon(CloseCode.SLOW_CONSUMER, reason)

    def close_soon(self, code: CloseCode, reason: str) -> None:
        """Close with ``code`` (callable from synchronous code: NATS callbacks, timers). The
        writer stops; the connection's closing task does the rest and ``shutdown`` awaits
        it. Only the first call counts."""
        if self._closer is not None:
            return
        self._stop_sending()
        if not self.ws.closed:
            CLOSES.labels(str(int(code))).inc()
            self.log.info("closing", code=int(code), reason=reason)
        self._closer = asyncio.get_running_loop().create_task(
            self._close(code, reason), name=f"ws-close-{self.session}")

    def _stop_sending(self) -> None:
        """Queue nothing more; backlog frames waiting for room give up."""
        self._closing = True
        self._room.set()

    async def _close(self, code: CloseCode, reason: str) -> None:
        """Write the close frame, wait for the client's answer and for the connection to end
        (``LingeringWebSocket`` keeps reading so no reset destroys the close frame); abort
        the transport at the deadline."""
        try:
            async with asyncio.timeout(self._config.close_timeout_s):
                await self.ws.close(code=code, message=reason.encode()[:123])
                await self.ws.wait_gone()
        except TimeoutError:
            CLOSE_ABORTS.inc()
            self.log.info("close_aborted", code=int(code), unsent_bytes=self.ws.unsent_bytes(),
                          timeout_s=self._config.close_timeout_s)
            self.ws.abort()

    async def shutdown(self) -> None:
        """End the socket after its handler: close it if nothing did yet (``GOING_AWAY``: the
        handler itself was cancelled or failed), await the closing task, stop the writer and
        release what the socket held. Cancelling this cancels the closing task and aborts the
        transport."""
        self.close_soon(CloseCode.GOING_AWAY, "socket handler ended")
        assert self._closer is not None
        try:
            await self._closer
        except asyncio.CancelledError:
            self.ws.abort()
            raise
        finally:
            for task in (self._resyncer, self._writer):
                if task is not None:
                    task.cancel()
                    await asyncio.wait([task])
            self._release()

    def _release(self) -> None:
        while self._held:
            self._take_held()
        while not self._queue.empty():
            data = self._queue.get_nowait()
            self._queued_bytes -= len(data)
            BUFFERED.labels("send").dec(len(data))

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
                    self._on_socket_error(self.ws.exception())
                    return
        finally:
            expiry.cancel()

    def _on_socket_error(self, exc: BaseException | None) -> None:
        """aiohttp ended the socket: a frame that broke the protocol (it sent 1002, 1007 or
        1009 itself, through ``LingeringWebSocket``) or a heartbeat without answer (1006)."""
        code = exc.code if isinstance(exc, WebSocketError) else WSCloseCode.ABNORMAL_CLOSURE
        CLOSES.labels(str(int(code))).inc()
        self.log.info("socket_error", code=int(code), error=repr(exc))

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
            if self._resyncer is not None and not self._resyncer.done():
                await asyncio.wait([self._resyncer])  # the server's own sync comes first
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

    def resync(self) -> None:
        """Re-read the backlog without being asked (the gateway was away from NATS, so live
        frames may have been lost): held live frames wait behind it as in a client's sync,
        and a ``synced`` frame without ``id`` ends it. Before the socket's first sync there
        is nothing to do (that sync reads everything); during a sync, another follows it."""
        if self._closing or (self._held is not None and not self._sync_running):
            return
        if self._sync_running:
            self._resync_wanted = True
            return
        if self._resyncer is None or self._resyncer.done():
            self._resyncer = asyncio.get_running_loop().create_task(
                self._resync_until_done(), name=f"ws-resync-{self.session}")

    async def _resync_until_done(self) -> None:
        """Server-side sync, retried with back-off while storage or NATS are not back yet."""
        delay = RESYNC_RETRY_S
        while not self._closing:
            try:
                await self._sync(Sync())
                return
            except ProtocolError as exc:
                if exc.code == ErrorCode.CONFLICT:
                    return  # the client's own sync started first: it reads past the gap
                if exc.code not in RETRYABLE:
                    self.log.warning("resync_failed", code=exc.code, error=exc.message)
                    return
            except Exception:
                self.log.exception("resync_failed")
                return
            await asyncio.sleep(delay)
            delay = min(delay * 2, RESYNC_MAX_RETRY_S)

    async def _sync(self, frame: Sync) -> None:
        """Send the backlog page by page, then the live messages that arrived meanwhile.

        The device's live subject has been subscribed since the socket opened, so reading the
        stream position now and waiting for storage to reach it leaves no gap."""
        if self._sync_running:
            raise ProtocolError(ErrorCode.CONFLICT, "a sync is already running")
        self._sync_running = True
        if self._held is None:
            self._held = deque()
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
                    await self._send_paced(encode_frame(message))
                count += len(page.messages)
                cursor = page.cursor
                if not page.more:
                    break
            self.send(Synced(cursor=cursor, count=count, id=frame.id))
        finally:
            self._sync_running = False
        # Only a complete sync releases the held frames: after a failed one (an error frame
        # with retry=true) they stay held, so the retried backlog still comes first. Frames
        # that arrive while the held ones are released are held behind them, until none is.
        while self._held and not self._closing:
            message_id, data = self._take_held()
            if message_id not in sent:
                await self._send_paced(data)
        if not self._closing:
            self._held = None
        if self._resync_wanted:
            self._resync_wanted = False
            self.resync()


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
