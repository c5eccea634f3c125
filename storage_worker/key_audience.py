"""``store.rpc.key_audience``: who is told that a user's device list changed
(``device_list_changed``, docs/e2ee.md).

The audience of ``user``: the user itself (its other devices), then the peers of its direct
conversations (most recent first), then its contacts (state ``contact``, not blocked by it),
then the current members of its groups (most recently changed first). Bounded: at most
``MAX_KEY_AUDIENCE_SOURCES`` conversations and groups are read and at most
``MAX_KEY_AUDIENCE`` users returned (``truncated`` then); whoever is left out learns of the
change at its next key query, which senders make before every send.
"""

from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import structlog
from prometheus_client import Counter

from schemas.contacts import ContactEntry
from schemas.ids import direct_members
from schemas.keys import MAX_KEY_AUDIENCE, MAX_KEY_AUDIENCE_SOURCES, KeyAudience, KeyAudienceRequest
from storage_worker.store.base import MessageStore
from storage_worker.store.social import SocialStore

log = structlog.get_logger(__name__)

TRUNCATED = Counter("courier_key_audience_truncated_total",
                    "Device-list change audiences cut at MAX_KEY_AUDIENCE users")


def key_audience(user: str, conversations: Iterable[str], contacts: Iterable[ContactEntry],
                 rosters: Iterable[Iterable[str]], cap: int = MAX_KEY_AUDIENCE) -> KeyAudience:
    """The audience of a change of ``user``'s devices, in priority order, at most ``cap``
    users: ``user``, its direct peers (of ``conversations``, other ids ignored), its
    contacts, then the members of ``rosters``."""
    peers = (member for conversation in conversations
             for member in direct_members(conversation) or ())
    friends = (entry.user for entry in contacts if entry.state == "contact" and not entry.blocked)
    members = (member for roster in rosters for member in roster)
    audience: dict[str, None] = {}
    for candidate in (user, *peers, *friends, *members):
        if candidate in audience:
            continue
        if len(audience) == cap:
            return KeyAudience(users=list(audience), truncated=True)
        audience[candidate] = None
    return KeyAudience(users=list(audience))


class KeyAudienceService:
    """The ``key_audience`` handler, over the message store (conversations) and the social
    store (contacts, groups)."""

    def __init__(self, messages: MessageStore, social: SocialStore) -> None:
        self._messages = messages
        self._social = social

    def handlers(self) -> dict[str, Callable[[Any], Awaitable[Any]]]:
        return {"key_audience": self.audience}

    async def audience(self, request: KeyAudienceRequest) -> KeyAudience:
        app, user = request.app, request.user
        conversations = await self._messages.conversations(app, user, request.device,
                                                           MAX_KEY_AUDIENCE_SOURCES)
        contacts = await self._social.contacts(app, user)
        rosters: list[list[str]] = []
        for summary in (await self._social.user_groups(app, user))[:MAX_KEY_AUDIENCE_SOURCES]:
            state = await self._social.group(app, summary.id)
            if state is not None:
                rosters.append([member.user for member in state.members])
        found = key_audience(user, (c.conversation for c in conversations), contacts, rosters)
        if found.truncated:
            TRUNCATED.inc()
            log.info("key_audience_truncated", app=app, user=user, cap=MAX_KEY_AUDIENCE)
        return found
