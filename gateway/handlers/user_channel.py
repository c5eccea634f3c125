"""Ephemeral frames for users: ``usr.<app>.<user>`` (core NATS, never stored).

The gateway subscribes a user's subject while it holds at least one socket of that user and
forwards what arrives (``user_typing``, ``contact``) to each of them; any gateway publishes. A
user with no socket anywhere costs nothing and misses nothing that matters: these frames are
only worth something live.
"""

import msgspec
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from prometheus_client import Counter

from gateway.handlers.peer import Peer
from schemas.codec import encode_frame
from schemas.subjects import user_subject

FORWARDED = Counter("courier_gateway_user_frames_total", "Ephemeral user frames forwarded")


class UserChannel:
    """(app, user) -> its local sockets, and the subscription of its subject."""

    def __init__(self, nc: Client) -> None:
        self._nc = nc
        self._peers: dict[tuple[str, str], set[Peer]] = {}
        self._subscriptions: dict[tuple[str, str], Subscription] = {}

    async def attach(self, peer: Peer) -> None:
        user = (peer.identity.app, peer.identity.user)
        peers = self._peers.setdefault(user, set())
        peers.add(peer)
        if len(peers) > 1 or user in self._subscriptions:
            return

        async def forward(msg: Msg) -> None:
            for target in list(self._peers.get(user, ())):
                target.send_raw(msg.data)
                FORWARDED.inc()

        subscription = await self._nc.subscribe(user_subject(*user), cb=forward)
        if self._peers.get(user) and user not in self._subscriptions:
            self._subscriptions[user] = subscription
        else:  # its sockets closed, or another attach subscribed, while this one subscribed
            await subscription.unsubscribe()

    async def detach(self, peer: Peer) -> None:
        user = (peer.identity.app, peer.identity.user)
        peers = self._peers.get(user)
        if peers is None:
            return
        peers.discard(peer)
        if peers:
            return
        del self._peers[user]
        subscription = self._subscriptions.pop(user, None)
        if subscription is not None:
            await subscription.unsubscribe()

    async def publish(self, app: str, users: list[str], frame: msgspec.Struct) -> None:
        """Send ``frame`` to every connected device of each of ``users`` (of ``app``)."""
        data = encode_frame(frame)
        for user in users:
            await self._nc.publish(user_subject(app, user), data)
