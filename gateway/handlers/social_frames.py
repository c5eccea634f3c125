"""The per-socket side of groups, contacts and presence: each socket's user channel, its
presence subscriptions and its typing frames (``presence_subscribe``, ``presence_unsubscribe``,
``typing``). Implements ``gateway.handlers.peer.SocialFrames`` for the WebSocket transport."""

from gateway.handlers.peer import Peer, SocialFrame
from gateway.handlers.presence_hub import PresenceHub
from gateway.handlers.typing_relay import TypingRelay
from gateway.handlers.user_channel import UserChannel
from schemas.frames import PresenceSubscribe, PresenceUnsubscribe


class SocialSockets:
    """Routes a socket's social frames to the presence hub and the typing relay."""

    def __init__(self, hub: PresenceHub, channel: UserChannel, typing: TypingRelay) -> None:
        self._hub = hub
        self._channel = channel
        self._typing = typing

    async def attach(self, peer: Peer) -> None:
        self._channel.attach(peer)

    async def detach(self, peer: Peer) -> None:
        self._hub.detach(peer)
        self._typing.forget(peer)
        self._channel.detach(peer)

    async def handle(self, peer: Peer, frame: SocialFrame) -> None:
        if isinstance(frame, PresenceSubscribe):
            reply = await self._hub.subscribe(peer, frame.users)
            reply.id = frame.id
            peer.send(reply)
        elif isinstance(frame, PresenceUnsubscribe):
            self._hub.unsubscribe(peer, frame.users)
        else:
            await self._typing.relay(peer, frame)
