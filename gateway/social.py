"""Composition of groups, contacts and presence at the gateway. Built once by
``gateway.service.Gateway``; gives the route table its handlers and each socket its frames
(``presence_subscribe``, ``presence_unsubscribe``, ``typing``) and its user channel."""

from nats.aio.client import Client

from gateway.handlers.messaging import Messaging
from gateway.handlers.peer import Peer, SocialFrame
from gateway.handlers.permissions import Permissions
from gateway.handlers.presence_hub import PresenceHub
from gateway.handlers.typing_relay import TypingRelay
from gateway.handlers.user_channel import UserChannel
from gateway.http.social_rest import SocialRest
from presence.registry import PresenceView
from runtime.config import Config
from runtime.rpc import RpcClient
from schemas.frames import PresenceSubscribe, PresenceUnsubscribe


class GatewaySocial:
    """What groups, contacts and presence hold for the gateway's lifetime."""

    def __init__(self, view: PresenceView, hub: PresenceHub, channel: UserChannel,
                 typing: TypingRelay, handlers: list[object]) -> None:
        self.handlers = handlers
        self._view = view
        self._hub = hub
        self._channel = channel
        self._typing = typing

    @classmethod
    async def start(cls, config: Config, nc: Client, rpc_client: RpcClient,
                    messaging: Messaging, permissions: Permissions) -> "GatewaySocial":
        view = PresenceView(nc, gateway_ttl_s=config.gateway.presence_ttl_s,
                            replicas=config.nats.replicas)
        hub = PresenceHub(view, permissions, config.presence.max_watched)  # listens first
        await view.start()
        hub.start()
        channel = UserChannel(nc)
        handlers: list[object] = [SocialRest(rpc_client, messaging, permissions, channel, hub)]
        return cls(view, hub, channel, TypingRelay(permissions, channel, config.presence),
                   handlers)

    async def attach(self, peer: Peer) -> None:
        await self._channel.attach(peer)

    async def detach(self, peer: Peer) -> None:
        self._hub.detach(peer)
        self._typing.forget(peer)
        await self._channel.detach(peer)

    async def handle(self, peer: Peer, frame: SocialFrame) -> None:
        if isinstance(frame, PresenceSubscribe):
            reply = await self._hub.subscribe(peer, frame.users)
            reply.id = frame.id
            peer.send(reply)
        elif isinstance(frame, PresenceUnsubscribe):
            self._hub.unsubscribe(peer, frame.users)
        else:
            await self._typing.relay(peer, frame)

    async def stop(self) -> None:
        await self._hub.stop()
        await self._view.stop()
