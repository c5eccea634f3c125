"""One client WebSocket: reads and dispatches frames, writes through a bounded queue.

Outbound frames (replies and live deliveries) go through one queue drained by one writer task,
bounded in frames and in bytes (``send_buffer_bytes``, counting what the transport holds
unsent too). Live deliveries and the backlog go through the socket's ``DeviceSync``
(``gateway.handlers.sync``: live frames held until the backlog is out); backlog frames wait
for room in the send budget. A socket over a budget, or whose writes make no progress for
``write_stall_s`` (its client stopped reading), is closed with ``SLOW_CONSUMER``; its
undelivered messages stay in the device's backlog (they were never acked).

Inbound frames are read one at a time, in order, with one exception: a ``send`` is checked and
its envelope built in frame order, then its publish to JetStream is started and the next frame
is read while it is in flight (at most ``send_window`` per socket; a full window stops reading
the socket until a publish completes: backpressure, nothing is dropped). Replies (``accepted``,
``error``, ``pong``, a callback's reply) are written in frame order as the publishes before
them complete. ``sync`` and the presence and typing frames wait until the sends before them
are answered; ``ack``, ``read``, ``ping`` and ``callback`` do not wait (their replies, if any,
still come in order).

Every close the gateway does goes through ``close_soon``: the connection's own closing task
writes the close frame, waits for the client's answer and for the connection to end, and
aborts the transport after ``close_timeout_s``; the socket handler awaits it (``shutdown``).
"""

import asyncio
import secrets
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, Final

import msgspec
import structlog
from aiohttp import WebSocketError, WSCloseCode, WSMsgType
from prometheus_client import Counter, Gauge, Histogram

from gateway.auth import Identity
from gateway.handlers.callbacks import CallbackRelay
from gateway.handlers.control import ControlGuard
from gateway.handlers.limits import Limits
from gateway.handlers.messaging import Messaging
from gateway.handlers.peer import SocialFrames
from gateway.handlers.sync import BUFFERED, DeviceSync
from gateway.ws.websocket import LingeringWebSocket
from runtime.config import GatewayConfig
from runtime.lean_event import LeanEvent
from schemas.codec import decode_client_frame, encode_frame
from schemas.errors import RETRYABLE, CloseCode, ErrorCode, ProtocolError
from schemas.frames import (
    Accepted,
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
    Typing,
)

log = structlog.get_logger(__name__)

FRAMES_IN = Counter("courier_gateway_frames_in_total", "Client frames", ["type"])
ERRORS_OUT = Counter("courier_gateway_errors_total", "Error frames sent", ["code"])
CLOSES = Counter("courier_gateway_closes_total", "Sockets closed by the gateway", ["code"])
DELIVERED_OUT = Counter("courier_gateway_deliveries_total", "Frames forwarded from NATS")
SLOW_CONSUMERS = Counter("courier_gateway_slow_consumers_total",
                         "Sockets closed with 4008, by cause: send budget, held budget, held "
                         "frame count, no write progress", ["cause"])
CLOSE_ABORTS = Counter("courier_gateway_close_aborts_total",
                       "Closing sockets whose transport was aborted after close_timeout_s")
SEND_WINDOW_DEPTH = Histogram(
    "courier_gateway_send_window_depth",
    "Publishes of the socket in flight when a send's publish starts (itself included)",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024))
SEND_WINDOW_FULL = Counter("courier_gateway_send_window_full_total",
                           "Sends that waited for a slot of their socket's full send window")
SENDS_IN_FLIGHT = Gauge("courier_gateway_sends_in_flight",
                        "Publishes of sends awaiting JetStream's ack, all sockets")
SYNC_BUFFER_LIMIT_FACTOR = 4


@dataclass(slots=True)
class _Reply:
    """A reply owed to the client, in frame order: a send's publish in flight, or a frame
    ready to write once the replies before it are out."""

    request_id: str | None
    publish: "asyncio.Task[Accepted] | None" = None
    frame: msgspec.Struct | None = None

    def ready(self) -> bool:
        return self.publish is None or self.publish.done()
for _buffer in ("send", "held"):
    BUFFERED.labels(_buffer)
#: A write that leaves the transport's buffer at most this full cannot wait: aiohttp waits
#: only while the transport is paused, above its high-water mark (64 KiB by default on asyncio
#: and uvloop). Such writes skip the stall timeout, a timer per frame (about 4 µs, a large
#: share of a fan-out's cost per delivery).
UNBLOCKED_WRITE_BYTES: Final = 16 * 1024
#: Bound once: ``labels()`` on every frame was a measurable share of the gateway's CPU.
_SEND_BUFFERED: Final = BUFFERED.labels("send")
_FRAMES_IN: dict[type, Any] = {}


def _frames_in(kind: type) -> Any:
    """The ``courier_gateway_frames_in_total`` child of a client frame type."""
    child = _FRAMES_IN.get(kind)
    if child is None:
        child = _FRAMES_IN[kind] = FRAMES_IN.labels(kind.__name__.lower())
    return child


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
        #: Frames for the writer, at most ``send_queue`` (a deque and lean events, not an
        #: ``asyncio.Queue``: 3 KB less per socket).
        self._frames: deque[bytes] = deque()
        self._queued_bytes = 0
        #: Set while frames wait for the writer.
        self._pending = LeanEvent()
        #: Set each time the writer takes a frame (or the socket starts closing): backlog
        #: frames waiting for room look again.
        self._room = LeanEvent()
        self._limits = limits
        self._strikes = 0
        self._closing = False
        self._writer: asyncio.Task[None] | None = None
        self._closer: asyncio.Task[None] | None = None
        #: Replies owed, oldest first, while sends are in flight (``_reply``).
        self._replies: deque[_Reply] = deque()
        self._window = asyncio.Semaphore(config.send_window)
        self._in_flight = 0
        #: Set while no reply is owed: ``sync`` waits for the sends before it.
        self._answered = LeanEvent(set_=True)
        #: Identifies this socket among all sockets of the device, on every gateway.
        self.session = secrets.token_hex(8)
        self.log = log.bind(user=identity.user, device=identity.device, session=self.session)
        self._sync = DeviceSync(identity, messaging, self, page=config.sync_page,
                                max_held_frames=config.send_queue * SYNC_BUFFER_LIMIT_FACTOR,
                                max_held_bytes=config.sync_buffer_bytes, logger=self.log,
                                session=self.session)

    # ------------------------------------------------------------------ outbound

    @property
    def closing(self) -> bool:
        """Whether the socket is closing: nothing more is queued."""
        return self._closing

    def start(self) -> None:
        """Start the writer task (owned here; ended by ``shutdown``)."""
        self._writer = asyncio.get_running_loop().create_task(
            self._write_forever(), name=f"ws-writer-{self.session}")

    async def _write_forever(self) -> None:
        """One socket write at a time, in queue order; a write that makes no progress for
        ``write_stall_s`` (the transport stays full: the client stopped reading) closes."""
        while not self._closing:
            if not self._frames:
                self._pending.clear()
                await self._pending.wait()
                continue
            data = self._frames.popleft()
            self._queued_bytes -= len(data)
            _SEND_BUFFERED.dec(len(data))
            self._room.set()
            if self._closing:
                break
            try:
                if self.ws.unsent_bytes() + len(data) <= UNBLOCKED_WRITE_BYTES:
                    await self.ws.send_frame(data, WSMsgType.TEXT)  # cannot wait: see the bound
                else:
                    async with asyncio.timeout(self._config.write_stall_s):
                        await self.ws.send_frame(data, WSMsgType.TEXT)
            except TimeoutError:
                self.slow("stalled", f"no write progress for {self._config.write_stall_s}s")
            except (ConnectionError, RuntimeError):
                self._stop_sending()  # the connection is gone; the read loop ends too

    def send(self, frame: msgspec.Struct) -> None:
        self.send_raw(encode_frame(frame))

    def send_raw(self, data: bytes) -> None:
        """Queue a frame now; a socket over its send budget is closed instead."""
        if self._closing:
            return
        if not self._fits(len(data)):
            self.slow("send_budget", "send buffer over budget")
            return
        self._enqueue(data)

    def _fits(self, size: int) -> bool:
        """Whether a frame of ``size`` bytes fits the send budget (one always fits an empty
        queue, so a frame bigger than the budget does not stall the socket on its own)."""
        if len(self._frames) >= self._config.send_queue:
            return False
        held = self._queued_bytes + self.ws.unsent_bytes()
        return not self._frames or held + size <= self._config.send_buffer_bytes

    def _enqueue(self, data: bytes) -> None:
        self._frames.append(data)
        self._pending.set()
        self._queued_bytes += len(data)
        _SEND_BUFFERED.inc(len(data))

    async def send_paced(self, data: bytes) -> None:
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
        if not self._closing:
            self._sync.deliver(data)

    def slow(self, cause: str, reason: str) -> None:
        """Close with ``SLOW_CONSUMER``; ``cause`` labels the metric."""
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
        """Queue nothing more; backlog frames waiting for room give up, the writer ends."""
        self._closing = True
        self._room.set()
        self._pending.set()

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
            await self._publishes_done()
            await self._sync.stop()
            if self._writer is not None:
                self._writer.cancel()
                await asyncio.wait([self._writer])
            self._release()

    def _release(self) -> None:
        while self._frames:
            data = self._frames.popleft()
            self._queued_bytes -= len(data)
            _SEND_BUFFERED.dec(len(data))

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
            _frames_in(type(frame)).inc()
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
            await self._start_send(frame)
        elif isinstance(frame, Callback):
            self._reply(await self._callbacks.publish(identity, frame))
        elif isinstance(frame, Ack):
            await self._messaging.ack(identity, frame)
        elif isinstance(frame, Read):
            await self._messaging.read(identity, frame)
        elif isinstance(frame, Sync):
            await self._answered.wait()
            await self._sync.client_sync(frame)
        elif isinstance(frame, Ping):
            self._reply(Pong(id=frame.id))
        elif isinstance(frame, PresenceSubscribe | PresenceUnsubscribe | Typing):
            await self._answered.wait()
            await self._social.handle(self, frame)

    async def _start_send(self, frame: Send) -> None:
        """Check the send and build its envelope now (frame order), then start its publish
        in a slot of the window; the read loop waits here while the window is full."""
        if self._window.locked():
            SEND_WINDOW_FULL.inc()
        await self._window.acquire()
        try:
            self._guard.check_send(self.identity, frame.module)
            prepared = await self._messaging.prepare_send(self.identity, frame)
            publish = await self._messaging.start_publish(prepared)
        except BaseException:
            self._window.release()
            raise
        self._in_flight += 1
        SENDS_IN_FLIGHT.inc()
        SEND_WINDOW_DEPTH.observe(self._in_flight)
        self._replies.append(_Reply(frame.id, publish=publish))
        self._answered.clear()
        publish.add_done_callback(self._write_replies)

    def _reply(self, frame: msgspec.Struct) -> None:
        """Write a reply after the replies owed before it."""
        if self._replies:
            self._replies.append(_Reply(getattr(frame, "id", None), frame=frame))
        else:
            self.send(frame)

    def _write_replies(self, _: object = None) -> None:
        """Write the owed replies that are ready, oldest first, up to the first publish
        still in flight (a publish's done callback)."""
        while self._replies and self._replies[0].ready():
            reply = self._replies.popleft()
            if reply.publish is None:
                assert reply.frame is not None
                self.send(reply.frame)
                continue
            self._in_flight -= 1
            SENDS_IN_FLIGHT.dec()
            self._window.release()
            if reply.publish.cancelled():
                continue
            exc = reply.publish.exception()
            if exc is None:
                self.send(reply.publish.result())
            else:
                if not isinstance(exc, ProtocolError):
                    self.log.error("send_failed", request_id=reply.request_id,
                                   exc_info=(type(exc), exc, exc.__traceback__))
                    exc = ProtocolError(ErrorCode.INTERNAL, "internal error")
                self.send(self._rejection(exc, reply.request_id))
                self._strike()
        if not self._replies:
            self._answered.set()

    async def _publishes_done(self) -> None:
        """Wait for the publishes still in flight (each ends within its publish timeout);
        cancelled, cancel them (a client retry with the same ``client_id`` finds what was
        stored)."""
        publishes = [reply.publish for reply in self._replies if reply.publish is not None]
        if not publishes:
            return
        try:
            await asyncio.wait(publishes)
        except asyncio.CancelledError:
            for publish in publishes:
                publish.cancel()
            raise

    def _reject(self, exc: ProtocolError, request_id: str | None) -> None:
        self._reply(self._rejection(exc, request_id))
        self._strike()

    def _strike(self) -> None:
        """One more rejected frame in a row; too many close the socket."""
        self._strikes += 1
        if self._strikes >= self._config.max_strikes:
            self.close_soon(CloseCode.TOO_MANY_ERRORS, "too many rejected frames")

    @staticmethod
    def _rejection(exc: ProtocolError, request_id: str | None) -> Error:
        ERRORS_OUT.labels(exc.code).inc()
        return Error(code=exc.code, message=exc.message, retry=exc.code in RETRYABLE,
                     id=request_id, retry_after_s=exc.retry_after_s)

    def resync(self) -> None:
        """Re-read the backlog without being asked (the gateway was away from NATS, so live
        frames may have been lost): ``DeviceSync.resync``."""
        self._sync.resync()

    def attached(self, barrier: list[int]) -> None:
        """Routers send this socket's live frames after ``barrier`` (its attach markers'
        stream sequences): ``DeviceSync.attached``."""
        self._sync.attached(barrier)
