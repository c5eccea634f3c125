"""Ephemeral frames for users (``user_typing``, ``contact``, ``keys_low``,
``device_list_changed``): core NATS, never stored.

The gateway where such a frame arises hands it at once to the recipients' sockets it holds,
and publishes it once to each other gateway that holds a socket of a recipient (the presence
view says which), as one ``UserFrames`` (``schemas.edge``) on ``usr.<gateway id>`` listing
the users there. Each gateway subscribes its own subject, once, and forwards what arrives to
the sockets of the listed users it holds: a socket costs one dictionary entry here, not a
subscription. A user with no socket anywhere costs nothing and misses nothing that matters:
these frames are only worth something live. A device that connected a moment ago, before
the presence view of the sending gateway saw it, can miss one.
"""

from collections import defaultdict
from typing import Protocol

import msgspec
import structlog
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from prometheus_client import Counter

from gateway.handlers.peer import Peer
from schemas.codec import encode_frame
from schemas.edge import MAX_FRAME_USERS, UserFrames, decode_user_frames, encode_user_frames
from schemas.subjects import user_frames_subject

log = structlog.get_logger(__name__)

FORWARDED = Counter("courier_gateway_user_frames_total",
                    "Ephemeral user frames handed to local sockets")
USER_FRAME_PUBLISHES = Counter("courier_gateway_user_frame_publishes_total",
                               "UserFrames messages published to other gateways")
MALFORMED = Counter("courier_gateway_user_frames_malformed_total",
                    "UserFrames messages from other gateways that could not be decoded")


class UserGateways(Protocol):
    """Which gateways hold a socket of a user (``presence.registry.PresenceView``)."""

    def gateways_of_user(self, app: str, user: str) -> set[str]: ...


class UserChannel:
    """(app, user) -> its sockets here; the subscription of this gateway's subject."""

    def __init__(self, nc: Client, presence: UserGateways, gateway_id: str) -> None:
        self._nc = nc
        self._presence = presence
        self._gateway_id = gateway_id
        self._peers: dict[tuple[str, str], set[Peer]] = {}
        self._subscription: Subscription | None = None

    async def start(self) -> None:
        self._subscription = await self._nc.subscribe(user_frames_subject(self._gateway_id),
                                                      cb=self._on_frames)

    async def stop(self) -> None:
        if self._subscription is not None:
            await self._subscription.unsubscribe()
            self._subscription = None

    def attach(self, peer: Peer) -> None:
        self._peers.setdefault((peer.identity.app, peer.identity.user), set()).add(peer)

    def detach(self, peer: Peer) -> None:
        user = (peer.identity.app, peer.identity.user)
        peers = self._peers.get(user)
        if peers is not None:
            peers.discard(peer)
            if not peers:
                del self._peers[user]

    async def publish(self, app: str, users: list[str], frame: msgspec.Struct) -> None:
        """Send ``frame`` to every connected device of each of ``users`` (of ``app``)."""
        data = encode_frame(frame)
        elsewhere: dict[str, list[str]] = defaultdict(list)
        for user in users:
            self._hand(app, user, data)
            for gateway in self._presence.gateways_of_user(app, user):
                if gateway != self._gateway_id:
                    elsewhere[gateway].append(user)
        for gateway, held in elsewhere.items():
            for start in range(0, len(held), MAX_FRAME_USERS):
                await self._nc.publish(user_frames_subject(gateway), encode_user_frames(
                    UserFrames(app, held[start:start + MAX_FRAME_USERS], data)))
                USER_FRAME_PUBLISHES.inc()

    async def _on_frames(self, msg: Msg) -> None:
        try:
            frames = decode_user_frames(msg.data)
            frames.frame.decode()  # sockets write text frames
        except (msgspec.DecodeError, msgspec.ValidationError, UnicodeDecodeError) as exc:
            MALFORMED.inc()
            log.warning("user_frames_malformed", size=len(msg.data), error=str(exc))
            return
        for user in frames.users:
            self._hand(frames.app, user, frames.frame)

    def _hand(self, app: str, user: str, data: bytes) -> None:
        for peer in list(self._peers.get((app, user), ())):
            peer.send_raw(data)
            FORWARDED.inc()
