"""The seam between the WebSocket transport and the handlers: what a handler needs of an open
socket (``Peer``, implemented by ``gateway.ws.connection.Connection``), and what a socket needs
of groups, contacts and presence (``SocialFrames``, ``gateway.handlers.social_frames``).
Protocols, so that handlers never import the transport."""

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
    """Per-socket side of groups, contacts and presence (``gateway.handlers.social_frames``)."""

    async def attach(self, peer: Peer) -> None:
        """The socket is open: route its user's ephemeral frames to it."""

    async def detach(self, peer: Peer) -> None:
        """The socket closed: drop its subscriptions."""

    async def handle(self, peer: Peer, frame: SocialFrame) -> None:
        """Serve one ``presence_subscribe``, ``presence_unsubscribe`` or ``typing`` frame."""
