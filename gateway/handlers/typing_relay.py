"""Typing indicators: checked, rate-limited per socket, relayed live, never stored.

A ``typing`` frame names a conversation the sender may write to now (a member of the group,
or a direct conversation not blocked either way and allowed by the stranger policy); the other
members' connected devices get ``user_typing`` (``gateway.handlers.user_channel``). Each socket
has its own small token bucket (``presence.typing_per_s``/``typing_burst``), apart from the
general frame budget.
"""

from prometheus_client import Counter

from gateway.handlers.peer import Peer
from gateway.handlers.permissions import Permissions
from gateway.handlers.ratelimit import TokenBucket
from gateway.handlers.user_channel import UserChannel
from runtime.config import PresenceConfig
from schemas.errors import ErrorCode, ProtocolError
from schemas.frames import Typing, UserTyping

RELAYED = Counter("courier_gateway_typing_total", "typing frames relayed")


class TypingRelay:
    """Checks and relays ``typing`` frames."""

    def __init__(self, permissions: Permissions, channel: UserChannel,
                 config: PresenceConfig) -> None:
        self._permissions = permissions
        self._channel = channel
        self._config = config
        self._buckets: dict[Peer, TokenBucket] = {}

    async def relay(self, peer: Peer, frame: Typing) -> None:
        bucket = self._buckets.get(peer)
        if bucket is None:
            bucket = self._buckets[peer] = TokenBucket(self._config.typing_per_s,
                                                       self._config.typing_burst)
        if not bucket.take():
            raise ProtocolError(ErrorCode.RATE_LIMITED, "too many typing frames; slow down")
        identity = peer.identity
        others = await self._permissions.check_conversation(identity, frame.conversation)
        await self._channel.publish(identity.app, others, UserTyping(
            conversation=frame.conversation, user=identity.user, active=frame.active))
        RELAYED.inc()

    def forget(self, peer: Peer) -> None:
        self._buckets.pop(peer, None)
