"""The sync of one socket on its own (``gateway.handlers.sync.DeviceSync``), against a backlog
and a socket of plain Python: live frames held until the first sync, the backlog first, the
held frames released minus those the backlog carried, failed syncs, resyncs. The same
behaviour end to end: tests/e2e/test_gateway_lifecycle.py and tests/e2e/test_resync.py."""

import asyncio
from typing import Any

import msgspec
import pytest
import structlog
from prometheus_client import REGISTRY

from gateway.auth import Identity
from gateway.handlers.sync import RESYNC_MAX_RETRY_S, RESYNC_RETRY_S, DeviceSync
from schemas.codec import encode_frame
from schemas.errors import ErrorCode, ProtocolError
from schemas.frames import Destination, Message, Presence, Sender, Sync, Synced
from schemas.partitions import decode_cursor, encode_cursor
from schemas.rpc import SyncPage

ALICE = Identity(user="alice", device="phone", app="app", expires_at=2e9)


def message(seq: int) -> Message:
    return Message(message_id=f"m{seq}", seq=seq, conversation="d:alice:bob", kind="chat",
                   sender=Sender(user="bob"), to=Destination(kind="user", id="alice"),
                   app="app", module="chat", body=b"x", ts=0, receipt=False)


def live(seq: int) -> bytes:
    return encode_frame(message(seq))


class Backlog:
    """Messages stored up to ``stored`` in one partition; each read can be made to wait or
    to fail."""

    partitions = 1

    def __init__(self, stored: int = 0) -> None:
        self.stored = stored
        self.failures: list[ProtocolError] = []
        self.gate: asyncio.Event | None = None
        self.reading = asyncio.Event()
        self.reads: list[tuple[int, int]] = []  # (after, barrier)
        #: Messages past the barrier a read returns too (storage ahead of the routers).
        self.ahead = 0

    async def stream_position(self) -> list[int]:
        return [self.stored]

    async def sync_page(self, identity: Identity, cursor: list[int], limit: int,
                        barriers: list[int]) -> SyncPage:
        assert identity == ALICE
        after, barrier = cursor[0], barriers[0]
        self.reads.append((after, barrier))
        self.reading.set()
        if self.gate is not None:
            await self.gate.wait()
        if self.failures:
            raise self.failures.pop(0)
        seqs = list(range(after + 1, min(barrier + self.ahead, self.stored) + 1))
        page = seqs[:limit]
        return SyncPage(messages=[message(seq) for seq in page],
                        cursor=[page[-1] if page else after], more=len(seqs) > limit)


class Socket:
    """Records what the sync sends, in order: ``("live", id)`` sent at once, ``("paced", id)``
    through the send budget, ``("synced", cursor, count, id)``."""

    def __init__(self) -> None:
        self.closing = False
        self.out: list[tuple[object, ...]] = []
        self.slow_causes: list[str] = []
        #: Called before each paced send (to deliver live frames in the middle of a sync).
        self.before_paced: list[object] = []

    def send(self, frame: msgspec.Struct) -> None:
        assert isinstance(frame, Synced)
        self.out.append(("synced", decode_cursor(frame.cursor, 1)[0], frame.count, frame.id))

    def send_raw(self, data: bytes) -> None:
        self.out.append(("live", _id(data)))

    async def send_paced(self, data: bytes) -> None:
        if self.before_paced:
            hook = self.before_paced.pop(0)
            assert callable(hook)
            hook()
        self.out.append(("paced", _id(data)))

    def slow(self, cause: str, reason: str) -> None:
        self.slow_causes.append(cause)
        self.closing = True


def _id(data: bytes) -> str:
    frame = msgspec.json.decode(data)
    return str(frame.get("message_id", frame["type"]))


def device_sync(backlog: Backlog, socket: Socket, *, page: int = 2, frames: int = 10,
                held_bytes: int = 1 << 20, sleeps: list[float] | None = None) -> DeviceSync:
    async def sleep(delay: float) -> None:
        if sleeps is not None:
            sleeps.append(delay)
        await asyncio.sleep(0)

    return DeviceSync(ALICE, backlog, socket, page=page, max_held_frames=frames,
                      max_held_bytes=held_bytes, logger=structlog.get_logger("test"),
                      sleep=sleep)


async def reading(backlog: Backlog, sync: DeviceSync, frame: Sync) -> "asyncio.Task[None]":
    """``sync(frame)`` started and waiting in its first backlog read (until ``backlog.gate``
    is set)."""
    backlog.gate = asyncio.Event()
    backlog.reading.clear()
    task = asyncio.create_task(sync.sync(frame))
    await backlog.reading.wait()
    return task


async def live_sync(backlog: Backlog, socket: Socket, **options: Any) -> DeviceSync:
    """A sync past its first sync (live), with nothing recorded yet."""
    sync = device_sync(backlog, socket, **options)
    await sync.sync(Sync())
    socket.out.clear()
    return sync


def held_gauge() -> float:
    value = REGISTRY.get_sample_value("courier_gateway_buffered_bytes", {"buffer": "held"})
    assert value is not None
    return value


async def test_live_frames_wait_for_the_first_sync_then_follow_the_backlog() -> None:
    backlog, socket = Backlog(stored=3), Socket()
    sync = device_sync(backlog, socket)
    sync.deliver(live(4))
    sync.deliver(encode_frame(Presence(user="bob", online=True)))
    assert socket.out == [] and not sync.live
    await sync.sync(Sync(id="s1"))
    assert socket.out == [("paced", "m1"), ("paced", "m2"), ("paced", "m3"),
                          ("synced", 3, 3, "s1"), ("paced", "m4"), ("paced", "presence")]
    assert sync.live and backlog.reads == [(0, 3), (2, 3)]  # page by page, to the barrier
    sync.deliver(live(5))
    assert socket.out[-1] == ("live", "m5")


async def test_a_held_frame_the_backlog_carried_is_not_sent_twice() -> None:
    backlog, socket = Backlog(stored=2), Socket()
    sync = device_sync(backlog, socket)
    sync.deliver(live(2))  # stored and delivered live before the sync read it
    sync.deliver(live(3))
    await sync.sync(Sync(after=encode_cursor([1])))
    assert socket.out == [("paced", "m2"), ("synced", 2, 1, None), ("paced", "m3")]


async def test_frames_arriving_during_the_backlog_and_the_release_come_after_it() -> None:
    backlog, socket = Backlog(stored=2), Socket()
    sync = await live_sync(backlog, socket)
    backlog.stored = 4
    sync.deliver(live(5))  # live again: sent at once
    socket.before_paced = [lambda: sync.deliver(live(6)), lambda: None,
                           lambda: sync.deliver(live(7))]
    await sync.sync(Sync(after=encode_cursor([2]), id="s2"))
    # m6 arrived during the backlog, m7 while m6 was being released: both held, in order
    assert socket.out == [("live", "m5"), ("paced", "m3"), ("paced", "m4"),
                          ("synced", 4, 2, "s2"), ("paced", "m6"), ("paced", "m7")]
    assert sync.live


async def test_a_failed_sync_keeps_the_held_frames_for_the_retry() -> None:
    backlog, socket = Backlog(stored=1), Socket()
    sync = device_sync(backlog, socket)
    sync.deliver(live(2))
    backlog.failures.append(ProtocolError(ErrorCode.UNAVAILABLE, "storage down"))
    with pytest.raises(ProtocolError):
        await sync.sync(Sync(id="s1"))
    assert socket.out == [] and not sync.live
    backlog.stored = 2
    await sync.sync(Sync(id="s2"))
    assert socket.out == [("paced", "m1"), ("paced", "m2"), ("synced", 2, 2, "s2")]


async def test_a_second_sync_while_one_runs_is_a_conflict() -> None:
    backlog, socket = Backlog(stored=1), Socket()
    sync = device_sync(backlog, socket)
    first = await reading(backlog, sync, Sync(id="s1"))
    with pytest.raises(ProtocolError) as refused:
        await sync.sync(Sync(id="s2"))
    assert refused.value.code == ErrorCode.CONFLICT
    backlog.gate.set()
    await first
    assert socket.out == [("paced", "m1"), ("synced", 1, 1, "s1")]


async def test_held_frames_at_and_past_their_count_bound() -> None:
    socket = Socket()
    sync = device_sync(Backlog(), socket, frames=3)
    for seq in range(3):
        sync.deliver(live(seq + 1))
    assert socket.slow_causes == []
    sync.deliver(live(4))
    assert socket.slow_causes == ["held_frames"]


async def test_held_frames_at_and_past_their_byte_bound() -> None:
    size = len(live(1))
    socket = Socket()
    sync = device_sync(Backlog(), socket, held_bytes=2 * size)
    before = held_gauge()
    sync.deliver(live(1))
    sync.deliver(live(2))
    assert socket.slow_causes == [] and held_gauge() == before + 2 * size
    sync.deliver(live(3))
    assert socket.slow_causes == ["held_budget"]
    await sync.stop()  # the socket is gone: what it held is released
    assert held_gauge() == before


async def test_a_resync_before_the_first_sync_does_nothing() -> None:
    backlog, socket = Backlog(stored=1), Socket()
    sync = device_sync(backlog, socket)
    sync.resync()
    await sync.sync(Sync(id="s1"))  # the first sync reads everything anyway
    assert backlog.reads == [(0, 1)]
    assert socket.out == [("paced", "m1"), ("synced", 1, 1, "s1")]


async def test_a_resync_reads_the_backlog_again_and_holds_live_frames_behind_it() -> None:
    backlog, socket = Backlog(stored=1), Socket()
    sync = await live_sync(backlog, socket)
    backlog.gate = asyncio.Event()
    backlog.reading.clear()
    sync.resync()
    await backlog.reading.wait()
    sync.deliver(live(2))  # during the resync: held
    assert socket.out == []
    client = asyncio.create_task(sync.client_sync(Sync(id="c1")))  # waits for the resync
    backlog.gate.set()
    await client
    assert socket.out == [("paced", "m1"), ("synced", 1, 1, None), ("paced", "m2"),
                          ("paced", "m1"), ("synced", 1, 1, "c1")]
    assert sync.live


async def test_a_resync_asked_during_a_sync_runs_after_it() -> None:
    backlog, socket = Backlog(stored=1), Socket()
    sync = device_sync(backlog, socket)
    first = await reading(backlog, sync, Sync(id="s1"))
    sync.resync()  # a reconnect while the first sync runs: deferred to its end
    assert backlog.gate is not None and backlog.reads == [(0, 1)]
    backlog.gate.set()
    await first
    await sync.client_sync(Sync(id="after"))  # after the resync the first one started
    assert socket.out == [("paced", "m1"), ("synced", 1, 1, "s1"),
                          ("paced", "m1"), ("synced", 1, 1, None),
                          ("paced", "m1"), ("synced", 1, 1, "after")]


async def test_a_resync_retries_while_storage_is_unavailable_with_back_off() -> None:
    backlog, socket = Backlog(stored=1), Socket()
    sleeps: list[float] = []
    sync = await live_sync(backlog, socket, sleeps=sleeps)
    backlog.failures = [ProtocolError(ErrorCode.UNAVAILABLE, "down") for _ in range(7)]
    sync.resync()
    await sync.client_sync(Sync(id="after"))  # waits for the resync to be done
    assert sleeps == [RESYNC_RETRY_S * 2 ** n for n in range(5)] + [RESYNC_MAX_RETRY_S] * 2
    assert socket.out == [("paced", "m1"), ("synced", 1, 1, None),
                          ("paced", "m1"), ("synced", 1, 1, "after")]


async def test_a_resync_gives_up_on_an_error_retrying_cannot_fix() -> None:
    backlog, socket = Backlog(stored=1), Socket()
    sleeps: list[float] = []
    sync = await live_sync(backlog, socket, sleeps=sleeps)
    backlog.failures = [ProtocolError(ErrorCode.INVALID, "no")]
    sync.resync()
    await sync.client_sync(Sync(id="after"))
    assert sleeps == []
    assert socket.out == [("paced", "m1"), ("synced", 1, 1, "after")]


async def test_a_closing_socket_stops_the_sync_and_stays_held() -> None:
    backlog, socket = Backlog(stored=3), Socket()
    sync = device_sync(backlog, socket, page=1)
    sync.deliver(live(4))
    socket.before_paced = [lambda: setattr(socket, "closing", True)]
    await sync.sync(Sync())
    assert backlog.reads == [(0, 3)] and not sync.live
    sync.resync()  # nothing for a closing socket
    await sync.stop()
    assert backlog.reads == [(0, 3)]


@pytest.mark.parametrize("after", ["c1.", "c1.AAAA", encode_cursor([-1]), encode_cursor([0, 4])])
async def test_a_cursor_this_deployment_did_not_issue_is_invalid(after: str) -> None:
    backlog, socket = Backlog(stored=1), Socket()
    with pytest.raises(ProtocolError) as refused:
        await device_sync(backlog, socket).sync(Sync(after=after, id="s1"))
    assert refused.value.code == ErrorCode.INVALID and backlog.reads == []


async def test_the_first_sync_reads_up_to_the_attach_markers_and_a_later_one_to_the_end() -> None:
    """The first sync's barrier is the attach markers' sequences (not the stream's end, which
    may be past messages routers already send this socket live); later syncs read the end."""
    backlog, socket = Backlog(stored=9), Socket()
    sync = device_sync(backlog, socket, page=20)
    sync.attached([4])
    sync.deliver(live(5))  # after the marker: routed here live, held
    await sync.sync(Sync(id="s1"))
    assert backlog.reads == [(0, 4)]
    assert socket.out == [*(("paced", f"m{seq}") for seq in range(1, 5)), ("synced", 4, 4, "s1"),
                          ("paced", "m5")]
    socket.out.clear()
    await sync.sync(Sync(id="s2"))
    assert backlog.reads[1:] == [(0, 9)]


async def test_a_failed_first_sync_keeps_the_attach_barrier_for_its_retry() -> None:
    backlog, socket = Backlog(stored=9), Socket()
    sync = device_sync(backlog, socket, page=20)
    sync.attached([4])
    backlog.failures.append(ProtocolError(ErrorCode.UNAVAILABLE, "storage away"))
    with pytest.raises(ProtocolError):
        await sync.sync(Sync())
    await sync.sync(Sync())
    assert backlog.reads == [(0, 4), (0, 4)]


async def test_a_backlog_message_past_the_barrier_is_not_sent_again_when_it_arrives_live() -> None:
    """The store may hold messages past the barrier (storage ahead of the routers); routers
    send those to this socket live too, maybe after the sync ended: that copy is dropped once,
    and later live frames go out."""
    backlog, socket = Backlog(stored=9), Socket()
    backlog.ahead = 2
    sync = device_sync(backlog, socket, page=20)
    sync.attached([4])
    sync.deliver(live(5))  # live before the sync read it: held, then skipped
    await sync.sync(Sync(id="s1"))
    assert socket.out == [*(("paced", f"m{seq}") for seq in range(1, 7)), ("synced", 6, 6, "s1")]
    socket.out.clear()
    sync.deliver(live(6))  # live after the sync ended: the backlog carried it
    sync.deliver(live(7))
    sync.deliver(live(6))  # dropped once only: a second copy is not expected, so it is sent
    assert socket.out == [("live", "m7"), ("live", "m6")]


async def test_messages_the_first_sync_covers_are_not_held_past_the_byte_budget() -> None:
    """After a reconnect, routers send the device's messages to its socket here until they
    read the new socket's markers: those, at or before the markers, are in the first sync's
    backlog and are not held (they once filled the held budget and closed the socket 4008);
    a message past the markers, and a frame that is not a message, are held."""
    size = len(live(1))
    backlog, socket = Backlog(stored=6), Socket()
    sync = device_sync(backlog, socket, page=20, held_bytes=3 * size)
    before = held_gauge()
    sync.deliver(live(1))  # before the markers are stored: held until their barrier is known
    sync.deliver(live(2))
    sync.attached([5])
    assert held_gauge() == before  # both covered: dropped
    for seq in range(3, 6):
        sync.deliver(live(seq))
    sync.deliver(live(6))
    sync.deliver(encode_frame(Presence(user="bob", online=True)))
    assert socket.slow_causes == [] and held_gauge() == before + size + len(
        encode_frame(Presence(user="bob", online=True)))
    await sync.sync(Sync(id="s1"))
    assert socket.out == [*(("paced", f"m{seq}") for seq in range(1, 6)), ("synced", 5, 5, "s1"),
                          ("paced", "m6"), ("paced", "presence")]
    assert held_gauge() == before


async def test_a_later_sync_does_not_hold_the_messages_its_backlog_carries() -> None:
    backlog, socket = Backlog(stored=2), Socket()
    sync = await live_sync(backlog, socket, held_bytes=len(live(1)))
    backlog.stored = 5
    socket.before_paced = [lambda: [sync.deliver(live(seq)) for seq in (4, 5, 6)]]
    await sync.sync(Sync(after=encode_cursor([2]), id="s2"))
    assert socket.slow_causes == []
    assert socket.out == [("paced", "m3"), ("paced", "m4"), ("paced", "m5"),
                          ("synced", 5, 3, "s2"), ("paced", "m6")]
