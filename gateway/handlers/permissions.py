"""Who may do what at the gateway: group membership, blocks, the stranger policy, presence
visibility. Checked before a frame or request is accepted, so the client gets a typed error.

The answers come from the storage worker (``group_roster``, ``relations``) and are cached here;
the storage worker announces every change (``grp.changed``, ``contacts.changed``) and the entry
is dropped, with a TTL as a safety net. A look-up that was in flight while any change arrived is
not cached, so a stale answer cannot outlive its invalidation. The storage worker and the router
check group membership again at the message's place in the stream, so a send racing a removal
is never fanned out to the group.
"""

from collections.abc import Callable
from typing import Final

import msgspec
from nats.aio.client import Client
from nats.aio.msg import Msg
from prometheus_client import Counter

from gateway.auth import Identity
from runtime.cache import LruCache
from runtime.config import ContactsConfig
from runtime.rpc import RpcClient
from schemas.contacts import Relation, RelationChanged, Relations, RelationsRequest
from schemas.errors import ErrorCode, ProtocolError
from schemas.groups import GroupRoster, GroupRosterRequest
from schemas.ids import (
    direct_members,
    group_conversation,
    group_of,
    notification_members,
    unscoped,
)
from schemas.subjects import CONTACTS_CHANGED, GROUPS_CHANGED

LOOKUPS = Counter("courier_gateway_permission_lookups_total", "Permission look-ups",
                  ["kind", "result"])
REFUSED = Counter("courier_gateway_permission_refusals_total", "Requests refused",
                  ["reason"])
_RELATION_HITS: Final = LOOKUPS.labels("relation", "hit")  # bound once: labels() per send costs
_RELATION_MISSES: Final = LOOKUPS.labels("relation", "miss")
_GROUP_HITS: Final = LOOKUPS.labels("group", "hit")
_GROUP_MISSES: Final = LOOKUPS.labels("group", "miss")
#: Group rosters and user relations each cached per gateway (least recently used go first).
MAX_ENTRIES: Final = 100_000

#: Called with (app, a, b) after users ``a`` and ``b`` of ``app`` changed their relation.
RelationListener = Callable[[str, str, str], None]

_relation_changed = msgspec.msgpack.Decoder(RelationChanged)


class Permissions:
    """Cached group rosters and user relations, and the checks built on them."""

    def __init__(self, nc: Client, rpc: RpcClient, contacts: ContactsConfig,
                 ttl_s: float = 60.0) -> None:
        self._nc = nc
        self._rpc = rpc
        self._contacts = contacts
        #: Keyed by app first: group and user ids are per app.
        self._rosters: LruCache[tuple[str, str], GroupRoster] = LruCache(MAX_ENTRIES, ttl_s)
        self._relations: LruCache[tuple[str, str, str], Relation] = LruCache(MAX_ENTRIES,
                                                                             ttl_s)
        self._listeners: list[RelationListener] = []
        #: Bumped on every invalidation: look-ups that overlapped one are not cached.
        self._epoch = 0

    async def start(self) -> None:
        await self._nc.subscribe(GROUPS_CHANGED, cb=self._on_group_changed)
        await self._nc.subscribe(CONTACTS_CHANGED, cb=self._on_relation_changed)

    def add_relation_listener(self, listener: RelationListener) -> None:
        """Called with both users after their relation changed (and was dropped here)."""
        self._listeners.append(listener)

    async def _on_group_changed(self, msg: Msg) -> None:
        self.forget_group(*unscoped(msg.data.decode()))

    async def _on_relation_changed(self, msg: Msg) -> None:
        change = _relation_changed.decode(msg.data)
        self.forget_relation(change.app, change.a, change.b)
        for listener in self._listeners:
            listener(change.app, change.a, change.b)

    def forget_group(self, app: str, group: str) -> None:
        self._epoch += 1
        self._rosters.drop((app, group))

    def forget_relation(self, app: str, a: str, b: str) -> None:
        self._epoch += 1
        self._relations.drop(_pair(app, a, b))

    # ------------------------------------------------------------------ groups

    async def roster(self, app: str, group: str) -> GroupRoster:
        roster = self._rosters.get((app, group))
        (_GROUP_MISSES if roster is None else _GROUP_HITS).inc()
        if roster is None:
            epoch = self._epoch
            roster = await self._rpc.call("group_roster",
                                          GroupRosterRequest(app=app, group=group), GroupRoster)
            if epoch == self._epoch:
                self._rosters.put((app, group), roster)
        return roster

    async def group_sender(self, app: str, user: str, group: str) -> str:
        """The conversation of a send to ``group``; the sender must be a member."""
        roster = await self.roster(app, group)
        if not roster.exists:
            raise ProtocolError(ErrorCode.UNKNOWN_RECIPIENT, f"no group {group!r}")
        if user not in roster.members:
            REFUSED.labels("not_member").inc()
            raise ProtocolError(ErrorCode.NOT_MEMBER, f"not a member of group {group!r}")
        return group_conversation(group)

    async def group_members(self, app: str, user: str, conversation: str) -> list[str]:
        """The current members of a group conversation ``user`` is a member of."""
        group = group_of(conversation)
        assert group is not None
        roster = await self.roster(app, group)
        if user not in roster.members:
            REFUSED.labels("not_member").inc()
            raise ProtocolError(ErrorCode.NOT_MEMBER, f"not a member of {conversation}")
        return list(roster.members)

    async def check_reader(self, app: str, user: str, conversation: str) -> None:
        """Acks and read markers: current members, and former members for what they got
        before they left."""
        group = group_of(conversation)
        if group is None:
            return
        roster = await self.roster(app, group)
        if user not in roster.members and user not in roster.former:
            REFUSED.labels("not_member").inc()
            raise ProtocolError(ErrorCode.NOT_MEMBER, f"not a member of {conversation}")

    # ------------------------------------------------------------------ relations

    async def check_member(self, app: str, user: str, conversation: str) -> None:
        """May ``user`` read what was sent in ``conversation``: one of its two users, its
        notification user, or a current or former member of its group."""
        if group_of(conversation) is not None:
            await self.check_reader(app, user, conversation)
            return
        members = direct_members(conversation) or notification_members(conversation)
        if members is None or user not in members:
            raise ProtocolError(ErrorCode.NOT_MEMBER, f"not a member of {conversation}")

    async def relations(self, app: str, user: str, others: list[str]) -> dict[str, Relation]:
        """How ``user`` relates to each of ``others`` (``a`` is ``user``), all of ``app``."""
        found: dict[str, Relation] = {}
        missing = []
        for other in dict.fromkeys(others):
            cached = self._relations.get(_pair(app, user, other))
            if cached is None:
                missing.append(other)
            else:
                found[other] = cached.seen_by(user)
        _RELATION_HITS.inc(len(found))
        if missing:
            _RELATION_MISSES.inc(len(missing))
            epoch = self._epoch
            reply = await self._rpc.call(
                "relations", RelationsRequest(app=app, user=user, others=missing), Relations)
            for relation in reply.relations:
                found[relation.b] = relation
                if epoch == self._epoch:
                    self._relations.put(_pair(app, user, relation.b), relation)
        return found

    async def check_direct(self, identity: Identity, other: str) -> None:
        """May ``identity`` message ``other`` directly? Blocks either way refuse; so does the
        app's stranger policy ``contacts_only`` when they are not contacts."""
        if other == identity.user:
            return
        relation = (await self.relations(identity.app, identity.user, [other]))[other]
        if relation.b_blocks_a:
            REFUSED.labels("blocked").inc()
            raise ProtocolError(ErrorCode.FORBIDDEN, f"{other} has blocked you")
        if relation.a_blocks_b:
            REFUSED.labels("blocking").inc()
            raise ProtocolError(ErrorCode.FORBIDDEN, f"you block {other}; unblock them first")
        if (relation.state != "contact"
                and self._contacts.strangers_for(identity.app) == "contacts_only"):
            REFUSED.labels("stranger").inc()
            raise ProtocolError(ErrorCode.FORBIDDEN, f"{other} is not your contact, and this "
                                "app lets only contacts message each other")

    async def check_conversation(self, identity: Identity, conversation: str) -> list[str]:
        """The other members of a conversation ``identity`` may write to now (typing)."""
        pair = direct_members(conversation)
        if pair is not None:
            if identity.user not in pair:
                raise ProtocolError(ErrorCode.NOT_MEMBER, f"not a member of {conversation}")
            other = pair[1] if pair[0] == identity.user else pair[0]
            await self.check_direct(identity, other)
            return [other] if other != identity.user else []
        if group_of(conversation) is None:
            raise ProtocolError(ErrorCode.NOT_MEMBER, f"not a member of {conversation}")
        members = await self.group_members(identity.app, identity.user, conversation)
        return [member for member in members if member != identity.user]

    async def visible(self, app: str, viewer: str, users: list[str]) -> set[str]:
        """Which of ``users`` ``viewer`` may see the presence of: accepted contacts who do not
        block it (users of another app are never contacts)."""
        relations = await self.relations(app, viewer, users)
        return {user for user, relation in relations.items()
                if relation.state == "contact" and not relation.b_blocks_a}


def _pair(app: str, a: str, b: str) -> tuple[str, str, str]:
    return (app, a, b) if a <= b else (app, b, a)
