"""The sync of one socket: its backlog first, then what arrived live meanwhile.

From the socket's opening until its first sync completes, and while any sync runs, live
deliveries are held (bounded in frames and in ``sync_buffer_bytes``): a socket over either
bound is a slow consumer. The barrier of the socket's first sync is the stream sequences of
its attach markers (``attached``: routers send it every message after them, so every earlier
one is in the backlog it reads); a later sync (a client's, or a resync) reads each
partition's last sequence instead, taken while routers already send this socket its live
frames, so there is no gap either way. A sync sends the backlog page by page at the
socket's pace, answers ``synced``, then releases the held frames minus those the
backlog already carried; frames that arrive during the release queue behind the held ones
until none is left, and the socket goes live. A live message at or before the barrier of the
sync due or running is not held at all: that sync's backlog carries it (routers still send a
device's messages to the socket it had here until they read its new socket's markers, which
after a reconnect can be a whole backlog). The store may already hold messages past the
barrier (storage ahead of the routers): the backlog carries them, and their live copy, which
can arrive after the sync ended, is dropped once. Only a complete sync releases: after a
failed one the held frames stay held, so the retried backlog still comes first.

A resync is the server's own sync after a NATS reconnect (live frames may have been lost):
nothing to do before the socket's first sync (that sync reads everything), deferred until the
end of a running one, and retried with back-off while storage or NATS are not back. A client's
``sync`` waits for a running resync first.
"""

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Final, Protocol

import msgspec
import structlog
from prometheus_client import Counter, Gauge

from gateway.auth import Identity
from runtime.tasks import cancel_and_wait
from schemas.codec import encode_frame
from schemas.errors import RETRYABLE, ErrorCode, ProtocolError
from schemas.frames import Sync, Synced
from schemas.partitions import decode_cursor, empty_cursor, encode_cursor
from schemas.rpc import SyncPage

BUFFERED: Final = Gauge("courier_gateway_buffered_bytes",
                        "Bytes held for sockets: send queues (send) and live frames held until "
                        "a sync completes (held)", ["buffer"])
_HELD: Final = BUFFERED.labels("held")
COVERED: Final = Counter("courier_gateway_live_covered_total",
                         "Live messages not held for a sync because its backlog carries them")
#: Back-off of a server-side resync while storage or NATS are not back yet.
RESYNC_RETRY_S: Final = 0.2
RESYNC_MAX_RETRY_S: Final = 5.0


class Backlog(Protocol):
    """Where the backlog is read (``gateway.handlers.messaging.Messaging``)."""

    @property
    def partitions(self) -> int: ...

    async def stream_position(self) -> list[int]: ...

    async def sync_page(self, identity: Identity, after: list[int], limit: int,
                        barrier: list[int]) -> SyncPage: ...


class Outbox(Protocol):
    """What a sync needs of its socket (``gateway.ws.connection.Connection``)."""

    @property
    def closing(self) -> bool: ...

    def send(self, frame: msgspec.Struct) -> None: ...

    def send_raw(self, data: bytes) -> None: ...

    async def send_paced(self, data: bytes) -> None:
        """Queue ``data`` once it fits the socket's send budget."""

    def slow(self, cause: str, reason: str) -> None:
        """Close the socket as a slow consumer (``cause`` labels the metric)."""


class DeviceSync:
    """The hold-and-release state of one socket, and its syncs."""

    def __init__(self, identity: Identity, backlog: Backlog, outbox: Outbox, *, page: int,
                 max_held_frames: int, max_held_bytes: int,
                 logger: structlog.typing.FilteringBoundLogger, session: str = "",
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        self._identity = identity
        self._backlog = backlog
        self._outbox = outbox
        self._page = page
        self._max_held_frames = max_held_frames
        self._max_held_bytes = max_held_bytes
        self._log = logger
        self._session = session
        self._sleep = sleep
        #: (message id, seq, frame) of live deliveries held back; None once live.
        self._held: deque[tuple[str, int, bytes]] | None = deque()
        self._held_bytes = 0
        self._running = False
        #: A NATS reconnect happened during a sync: its backlog may miss what was lost live.
        self._resync_wanted = False
        self._resyncer: asyncio.Task[None] | None = None
        #: The attach markers' sequences, until a sync completed with them as its barrier.
        self._attach_barrier: list[int] | None = None
        #: The barrier of the sync due or running, once known: live messages up to it are in
        #: its backlog.
        self._covering: list[int] | None = None
        #: Ids of backlog messages past the last sync's barrier: routers send those live to
        #: this socket too, maybe after the sync ended; their live copy is dropped once.
        self._expect_live: set[str] = set()

    @property
    def live(self) -> bool:
        """Whether live deliveries go straight out (no sync running, the first one done)."""
        return self._held is None

    def attached(self, barrier: list[int]) -> None:
        """Routers send the socket its live frames after ``barrier`` (one stream sequence
        per partition): the barrier of its first sync. Messages held until now that it
        covers are dropped (routed here for an earlier socket of the device)."""
        self._attach_barrier = barrier
        self._cover(barrier)

    def _cover(self, barrier: list[int]) -> None:
        """``barrier`` is the barrier of the sync due or running: drop the held messages it
        covers, and hold no more of them."""
        self._covering = barrier
        if not self._held:
            return
        kept: deque[tuple[str, int, bytes]] = deque()
        for held in self._held:
            if self._covered(held[1]):
                COVERED.inc()
                self._held_bytes -= len(held[2])
                _HELD.dec(len(held[2]))
            else:
                kept.append(held)
        self._held = kept

    def _covered(self, seq: int) -> bool:
        """Whether the message of ``seq`` (-1: not a message) is at or before the barrier of
        the sync due or running."""
        barrier = self._covering
        if seq < 0 or barrier is None:
            return False
        partitions = len(barrier)
        return seq // partitions <= barrier[seq % partitions]

    def deliver(self, data: bytes) -> None:
        """A live delivery (a ready frame): sent, or held while a sync is due or running."""
        if self._held is None:
            if self._expect_live:
                message_id = _live_ref(data)[0]
                if message_id in self._expect_live:
                    self._expect_live.discard(message_id)
                    return
            self._outbox.send_raw(data)
            return
        message_id, seq = _live_ref(data)
        if self._covered(seq):
            COVERED.inc()
            return
        if len(self._held) >= self._max_held_frames:
            self._outbox.slow("held_frames", "too many live messages held for a sync")
            return
        if self._held_bytes + len(data) > self._max_held_bytes:
            self._outbox.slow("held_budget", "live messages held for a sync over budget")
            return
        self._held.append((message_id, seq, data))
        self._held_bytes += len(data)
        _HELD.inc(len(data))

    async def client_sync(self, frame: Sync) -> None:
        """A client's ``sync`` frame: after the server's own resync, if one is running."""
        if self._resyncer is not None and not self._resyncer.done():
            await asyncio.wait([self._resyncer])
        await self.sync(frame)

    async def sync(self, frame: Sync) -> None:
        """Send the backlog after ``frame.after``, ``synced``, then the held live frames.
        Raises ``CONFLICT`` while another sync runs."""
        if self._running:
            raise ProtocolError(ErrorCode.CONFLICT, "a sync is already running")
        self._running = True
        if self._held is None:
            self._held = deque()
        sent: set[str] = set()
        self._expect_live = set()
        count = 0
        try:
            cursor = self._cursor(frame.after)
            barrier = (self._attach_barrier if self._attach_barrier is not None
                       else await self._backlog.stream_position())
            partitions = len(barrier)
            self._cover(barrier)
            while not self._outbox.closing:
                page = await self._backlog.sync_page(self._identity, cursor, self._page,
                                                     barrier)
                for message in page.messages:
                    sent.add(message.message_id)
                    if message.seq // partitions > barrier[message.seq % partitions]:
                        self._expect_live.add(message.message_id)
                    await self._outbox.send_paced(encode_frame(message))
                count += len(page.messages)
                cursor = page.cursor
                if not page.more:
                    break
            self._outbox.send(Synced(cursor=encode_cursor(cursor), count=count, id=frame.id))
            self._attach_barrier = None
        finally:
            self._running = False
        while self._held and not self._outbox.closing:
            message_id, _, data = self._take_held()
            if message_id not in sent:
                await self._outbox.send_paced(data)
            else:
                self._expect_live.discard(message_id)
        if not self._outbox.closing:
            self._held = None
            self._covering = None
        if self._resync_wanted:
            self._resync_wanted = False
            self.resync()

    def _cursor(self, after: str | None) -> list[int]:
        if after is None:
            return empty_cursor(self._backlog.partitions)
        try:
            return decode_cursor(after, self._backlog.partitions)
        except ValueError as exc:
            raise ProtocolError(ErrorCode.INVALID, f"after: {exc}") from None

    def resync(self) -> None:
        """Re-read the backlog without being asked: held live frames wait behind it as in a
        client's sync, and a ``synced`` frame without ``id`` ends it."""
        if self._outbox.closing or (self._held is not None and not self._running):
            return
        if self._running:
            self._resync_wanted = True
            return
        if self._resyncer is None or self._resyncer.done():
            self._resyncer = asyncio.get_running_loop().create_task(
                self._resync_until_done(), name=f"ws-resync-{self._session}")

    async def _resync_until_done(self) -> None:
        """Server-side sync, retried with back-off while storage or NATS are not back yet."""
        delay = RESYNC_RETRY_S
        while not self._outbox.closing:
            try:
                await self.sync(Sync())
                return
            except ProtocolError as exc:
                if exc.code == ErrorCode.CONFLICT:
                    return  # the client's own sync started first: it reads past the gap
                if exc.code not in RETRYABLE:
                    self._log.warning("resync_failed", code=exc.code, error=exc.message)
                    return
            except Exception:
                self._log.exception("resync_failed")
                return
            await self._sleep(delay)
            delay = min(delay * 2, RESYNC_MAX_RETRY_S)

    async def stop(self) -> None:
        """End a running resync and release what is held (the socket is gone)."""
        if self._resyncer is not None:
            await cancel_and_wait([self._resyncer])
        while self._held:
            self._take_held()

    def _take_held(self) -> tuple[str, int, bytes]:
        assert self._held is not None
        held = self._held.popleft()
        self._held_bytes -= len(held[2])
        _HELD.dec(len(held[2]))
        return held


class _LiveRef(msgspec.Struct):
    type: str = ""
    message_id: str = ""
    seq: int = -1


_live_ref_decoder = msgspec.json.Decoder(_LiveRef)


def _live_ref(frame: bytes) -> tuple[str, int]:
    """The ``message_id`` of a frame from NATS (empty for frames that have none) and, for a
    ``message``, its ``seq`` (-1 otherwise), read only for frames that arrive while a sync is
    due or running, where its backlog may carry them."""
    try:
        ref = _live_ref_decoder.decode(frame)
    except msgspec.DecodeError:
        return "", -1
    return ref.message_id, ref.seq if ref.type == "message" else -1
