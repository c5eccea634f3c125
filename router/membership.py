"""Cached group membership for fan-out: (app, group) -> members, exact at each message's seq.

The router handles a partition in stream order, and a group's membership only changes at its group
writes, which are in the same stream. So an entry stays right until the router meets the next
write of that group: there it asks the storage worker for the write's outcome, fans out the
system message to the members before and after, and replaces the entry with the members after.
On a miss (start, eviction) it asks for the members *at* the message's seq, which the storage
worker answers from membership intervals once it has applied everything before that seq, so an
answer never reflects a later write. No store read per message.

With several router replicas, a write handled by one replica reaches the others' caches through
``grp.changed`` (published by the storage worker when it applied it); until that arrives, another
replica may fan out a message of that group with the previous membership. The inboxes (history,
sync) are always exact: the storage worker places them itself.
"""

from typing import Final

from nats.aio.client import Client
from nats.aio.msg import Msg
from prometheus_client import Counter

from runtime.cache import LruCache
from runtime.rpc import RpcClient
from schemas.groups import (
    GroupEnvelope,
    GroupEventOutcome,
    GroupEventRequest,
    GroupMembers,
    GroupMembersAt,
)
from schemas.ids import unscoped
from schemas.subjects import GROUPS_CHANGED

LOOKUPS = Counter("courier_router_group_lookups_total", "Group membership lookups", ["result"])
_HITS: Final = LOOKUPS.labels("hit")  # bound once: labels() per message costs
_MISSES: Final = LOOKUPS.labels("miss")
#: Groups whose members one router keeps (least recently used go first).
CACHE_SIZE: Final = 10_000


class GroupMembership:
    """(app, group) -> members, replaced in stream order and dropped on ``grp.changed``
    (payload ``<app>.<group>``)."""

    def __init__(self, nc: Client, rpc: RpcClient, max_entries: int = CACHE_SIZE) -> None:
        self._nc = nc
        self._rpc = rpc
        self._cache: LruCache[tuple[str, str], tuple[str, ...]] = LruCache(max_entries)

    async def start(self) -> None:
        await self._nc.subscribe(GROUPS_CHANGED, cb=self._on_change)

    async def _on_change(self, msg: Msg) -> None:
        self._cache.drop(unscoped(msg.data.decode()))

    async def members_at(self, app: str, group: str, seq: int) -> tuple[str, ...]:
        """The members of ``app``'s ``group`` when the message at ``seq`` was accepted."""
        members = self._cache.get((app, group))
        if members is not None:
            _HITS.inc()
            return members
        _MISSES.inc()
        reply = await self._rpc.call("group_members",
                                     GroupMembersAt(app=app, group=group, seq=seq), GroupMembers)
        return self._put(app, group, tuple(reply.members))

    async def apply(self, envelope: GroupEnvelope, seq: int) -> GroupEventOutcome:
        """The outcome of the group write at ``seq``; the entry follows it."""
        outcome = await self._rpc.call("group_event", GroupEventRequest(seq=seq),
                                       GroupEventOutcome)
        if outcome.applied:
            self._put(envelope.app, envelope.group, tuple(outcome.members))
        return outcome

    def _put(self, app: str, group: str, members: tuple[str, ...]) -> tuple[str, ...]:
        self._cache.put((app, group), members)
        return members
