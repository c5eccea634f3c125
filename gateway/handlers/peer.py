"""The seam between sockets and the groups, contacts and presence features (``gateway.social``):
what the features need of an open socket, and what a socket needs of them. Protocols, so that
``gateway.ws.connection`` and ``gateway.ws.sockets`` do not import the features' REST side."""

from typing import Protocol

import msgspec

from gateway.auth import Identity
from schemas.frames import PresenceSubscribe, PresenceUnsubscribe, Typing

SocialFrame = PresenceSubscribe | PresenceUnsubscribe | Typing


class Peer(Protocol):
    """An authenticated connection frames can be queued on (``gateway.ws.connection``)."""

    identity: Identity

    def send(self, frame: msgspec.Struct) -> None: ...

    def send_raw(self, data: bytes) -> None: ...


class SocialFrames(Protocol):
    """Per-socket side of groups, contacts and presence (``gateway.social.GatewaySocial``)."""

    async def attach(self, peer: Peer) -> None:
        """The socket is open: route its user's ephemeral frames to it."""

    async def detach(self, peer: Peer) -> None:
        """The socket closed: drop its subscriptions."""

    async def handle(self, peer: Peer, frame: SocialFrame) -> None:
        """Serve one ``presence_subscribe``, ``presence_unsubscribe`` or ``typing`` frame."""
