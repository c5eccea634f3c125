"""Presence subscriptions of this gateway's sockets.

A user is online while any of its devices has a socket on a live gateway. Device state comes
from the gateway's ``PresenceView``, a copy of the NATS KV buckets every gateway writes; a
gateway that dies (SIGKILL, partition) stops refreshing its beat, the beat expires after
``gateway.presence_ttl_s`` and the view reports every device it held offline. Here those device
changes become user transitions, and each transition a ``presence`` frame for the local sockets
watching that user, if they may see it (accepted contacts it does not block, checked when the
frame is sent; a relation change re-checks). Frames are sent by one task fed by a queue, so
KV watcher callbacks never wait on the storage worker.
"""

import asyncio
import time
from collections.abc import Collection

import structlog
from prometheus_client import Counter, Gauge

from gateway.handlers.peer import Peer
from gateway.handlers.permissions import Permissions
from presence.registry import PresenceView
from runtime.tasks import TaskGroup
from schemas.codec import encode_frame
from schemas.errors import ErrorCode, ProtocolError
from schemas.frames import Presence, PresenceState, PresenceSubscribed

log = structlog.get_logger(__name__)

FRAMES = Counter("courier_gateway_presence_frames_total", "presence frames sent")
WATCHED = Gauge("courier_gateway_presence_watches", "(socket, user) presence subscriptions")


def now_ms() -> int:
    return int(time.time() * 1000)


#: A user with its app: user ids are per app.
Who = tuple[str, str]


class PresenceHub:
    """(app, user) -> the local sockets watching it, and the transitions they hear of. A socket
    watches users of its own app only."""

    def __init__(self, view: PresenceView, permissions: Permissions, max_watched: int) -> None:
        self._view = view
        self._permissions = permissions
        self._max_watched = max_watched
        self._online: dict[Who, set[str]] = {}
        self._offline_since: dict[Who, int] = {}
        self._watchers: dict[Who, set[Peer]] = {}
        self._watching: dict[Peer, set[str]] = {}
        #: (user, viewer): announce ``user`` to its watchers (all of them if viewer is None).
        self._queue: asyncio.Queue[tuple[Who, str | None]] = asyncio.Queue()
        self._queued: set[tuple[Who, str | None]] = set()
        self._tasks = TaskGroup("presence-hub")
        view.add_listener(self._on_device)
        permissions.add_relation_listener(self._on_relation)

    def start(self) -> None:
        self._tasks.watch(self._announce_forever, name="announce")

    async def stop(self) -> None:
        await self._tasks.stop()

    # ------------------------------------------------------------------ sockets

    async def subscribe(self, peer: Peer, users: list[str]) -> PresenceSubscribed:
        """Watch ``users``; the current state of those ``peer`` may see, the others denied."""
        app = peer.identity.app
        asked = list(dict.fromkeys(users))
        watching = self._watching.setdefault(peer, set())
        new = [user for user in asked if user not in watching]
        if len(watching) + len(new) > self._max_watched:
            raise ProtocolError(ErrorCode.INVALID, f"at most {self._max_watched} watched users "
                                "per connection")
        for user in new:
            watching.add(user)
            self._watchers.setdefault((app, user), set()).add(peer)
        WATCHED.inc(len(new))
        states, denied = await self.lookup(app, peer.identity.user, asked)
        return PresenceSubscribed(users=states, denied=denied)

    async def lookup(self, app: str, viewer: str,
                     users: list[str]) -> tuple[list[PresenceState], list[str]]:
        """The state of each of ``users`` (repeats dropped) ``viewer`` may see, and the others
        (denied), both in the order asked."""
        asked = list(dict.fromkeys(users))
        shown, denied = split_visible(asked, await self._permissions.visible(app, viewer, asked))
        return list(await asyncio.gather(*(self.state(app, user) for user in shown))), denied

    def unsubscribe(self, peer: Peer, users: list[str]) -> None:
        watching = self._watching.get(peer, set())
        for user in users:
            if user in watching:
                watching.discard(user)
                self._unwatch(peer, user)

    def detach(self, peer: Peer) -> None:
        for user in self._watching.pop(peer, set()):
            self._unwatch(peer, user)

    def _unwatch(self, peer: Peer, user: str) -> None:
        WATCHED.dec()
        who = (peer.identity.app, user)
        watchers = self._watchers.get(who)
        if watchers is not None:
            watchers.discard(peer)
            if not watchers:
                del self._watchers[who]
                self._offline_since.pop(who, None)

    async def state(self, app: str, user: str) -> PresenceState:
        """Online, or offline with the last time it was (KV last-seen, or the transition seen
        here if later: a socket's last-seen write can trail its removal)."""
        who = (app, user)
        if who in self._online:
            return PresenceState(user=user, online=True)
        last = max(await self._view.last_seen(app, user) or 0, self._offline_since.get(who, 0))
        return PresenceState(user=user, online=False, last_active=last or None)

    # ------------------------------------------------------------------ changes

    def _on_device(self, app: str, user: str, device: str, online: bool) -> None:
        who = (app, user)
        devices = self._online.get(who, set())
        was_online = bool(devices)
        if online:
            devices.add(device)
            self._online[who] = devices
        else:
            devices.discard(device)
            if not devices:
                self._online.pop(who, None)
        if was_online == bool(devices) or who not in self._watchers:
            return
        if not devices:
            self._offline_since[who] = now_ms()
        self._enqueue(who, None)

    def _on_relation(self, app: str, a: str, b: str) -> None:
        for viewer, user in ((a, b), (b, a)):
            if any(peer.identity.user == viewer for peer in self._watchers.get((app, user), ())):
                self._enqueue((app, user), viewer)

    def _enqueue(self, who: Who, viewer: str | None) -> None:
        if (who, viewer) not in self._queued:
            self._queued.add((who, viewer))
            self._queue.put_nowait((who, viewer))

    async def _announce_forever(self) -> None:
        while True:
            who, viewer = await self._queue.get()
            self._queued.discard((who, viewer))
            try:
                await self._announce(who, viewer)
            except ProtocolError as exc:  # storage unavailable: the next change retries
                log.warning("presence_announce_failed", app=who[0], user=who[1],
                            error=exc.message)
            except Exception:
                log.exception("presence_announce_failed", app=who[0], user=who[1])

    async def _announce(self, who: Who, viewer: str | None) -> None:
        app, user = who
        peers = [peer for peer in self._watchers.get(who, ())
                 if viewer is None or peer.identity.user == viewer]
        allowed = set()
        for watcher in {peer.identity.user for peer in peers}:
            if user in await self._permissions.visible(app, watcher, [user]):
                allowed.add(watcher)
        if not allowed:
            return
        state = await self.state(app, user)
        data = encode_frame(Presence(user=user, online=state.online,
                                     last_active=state.last_active))
        for peer in peers:
            if peer.identity.user in allowed:
                peer.send_raw(data)
                FRAMES.inc()


def split_visible(users: list[str], visible: Collection[str]) -> tuple[list[str], list[str]]:
    """``users`` without repeats, split into those in ``visible`` and the others, in order."""
    asked = list(dict.fromkeys(users))
    return [user for user in asked if user in visible], [user for user in asked
                                                         if user not in visible]
