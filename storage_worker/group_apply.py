"""The storage side of groups: applies group writes and places group messages in stream order.

The storage worker applies a partition in stream order (a group's writes and messages share
its conversation's partition), so the group state it holds when it meets
a message is the membership at that message's seq: a group message enters the inboxes of
exactly the members at its seq. New members therefore see the history from their join on, and
removed members get nothing after their removal (what they received before stays in their
history). Group state is cached here; this process is the only writer, so the cache is exact,
and each applied write drops its entry and is announced on ``grp.changed`` for other caches.

A write is decided again here (``group_rules.decide``), against the state at its seq; its
outcome, applied or refused, is recorded under its seq, which is how the RPC that published it
and the router learn what happened. An applied write also becomes the group's system message
(kind ``system``, module ``groups``, body a JSON ``GroupEvent``) for the members before and after.
"""

from collections import OrderedDict
from collections.abc import Sequence
from typing import Final

import msgspec
import structlog
from nats.aio.client import Client
from prometheus_client import Counter

from schemas.envelopes import MessageEnvelope, ReceiptEnvelope
from schemas.errors import ProtocolError
from schemas.frames import AckItem, Destination, Sender
from schemas.groups import GROUP_EVENT_MODULE, GroupEnvelope
from schemas.ids import group_conversation, group_of, scoped
from schemas.subjects import GROUPS_CHANGED
from storage_worker.contacts import group_blockers
from storage_worker.group_rules import decide, named_users
from storage_worker.store.base import MessageStore, StoredMessage
from storage_worker.store.social import (
    GroupEventRecord,
    GroupMessageMeta,
    GroupState,
    SocialStore,
)

log = structlog.get_logger(__name__)

GROUP_WRITES = Counter("courier_storage_group_writes_total", "Group writes applied or refused",
                       ["result"])
GROUP_DROPPED = Counter("courier_storage_group_dropped_total",
                        "Group messages not stored: the sender was not a member at their seq")
CACHE_SIZE: Final = 10_000

_json = msgspec.json.Encoder()


def system_envelope(record: GroupEventRecord) -> MessageEnvelope:
    """The system message of an applied group write, as history and devices see it."""
    return MessageEnvelope(
        id=record.id, kind="system", app=record.app, module=GROUP_EVENT_MODULE,
        sender=Sender(user=record.actor), to=Destination(kind="group", id=record.group),
        conversation=group_conversation(record.group), ts=record.ts, receipt=False,
        body=record.body)


class GroupApplier:
    """Group state for the envelope applier: writes, message recipients, receipt counters."""

    def __init__(self, social: SocialStore, messages: MessageStore, nc: Client,
                 max_members: int) -> None:
        self._social = social
        self._messages = messages
        self._nc = nc
        self._max_members = max_members
        self._cache: OrderedDict[tuple[str, str], GroupState | None] = OrderedDict()

    async def state(self, app: str, group: str) -> GroupState | None:
        """The group of ``app`` as applied so far (None: never created)."""
        key = (app, group)
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        state = self._cache[key] = await self._social.group(app, group)
        if len(self._cache) > CACHE_SIZE:
            self._cache.popitem(last=False)
        return state

    async def recipients(self, envelope: MessageEnvelope) -> list[str] | None:
        """The members at this point of the stream, or None when the message must be dropped
        (no such group, or its user sender was not a member any more)."""
        group = group_of(envelope.conversation)
        state = None if group is None else await self.state(envelope.app, group)
        members = [] if state is None else [m.user for m in state.members]
        sender = envelope.sender.user
        if not members or (sender is not None and sender not in members):
            GROUP_DROPPED.inc()
            log.info("group_message_dropped", conversation=envelope.conversation, sender=sender)
            return None
        return members

    async def record_messages(self, stored: Sequence[StoredMessage]) -> None:
        """Receipt counters need each group chat message's recipient count at its seq."""
        metas = []
        for item in stored:
            env = item.envelope
            group = group_of(env.conversation)
            if group is None or env.kind == "system":
                continue
            sender = env.sender.user
            metas.append(GroupMessageMeta(
                app=env.app, group=group, id=env.id, seq=item.seq, sender=sender,
                recipients=len([u for u in item.recipients if u != sender])))
        await self._social.record_group_messages(metas)

    async def apply(self, envelope: GroupEnvelope, seq: int) -> None:
        if await self._social.group_event(seq) is not None:
            return  # redelivered: already applied or refused
        state = await self.state(envelope.app, envelope.group)
        record = GroupEventRecord(seq=seq, id=envelope.id, group=envelope.group,
                                  app=envelope.app, actor=envelope.actor, ts=envelope.ts)
        try:
            change, event = decide(state, envelope, seq, self._max_members, await group_blockers(
                self._social, envelope.app, envelope.actor, named_users(envelope.op)))
        except ProtocolError as exc:
            record.code, record.detail = exc.code, exc.message
            await self._social.apply_group_event(record, None)
            GROUP_WRITES.labels("refused").inc()
            log.info("group_write_refused", group=envelope.group, seq=seq, code=exc.code,
                     detail=exc.message)
            return
        record.body = _json.encode(event)
        before = [] if state is None else [m.user for m in state.members]
        recipients = sorted({*before, *change.added})
        await self._messages.append([StoredMessage(seq, system_envelope(record), recipients)])
        await self._social.apply_group_event(record, change)
        self._cache.pop((envelope.app, envelope.group), None)
        GROUP_WRITES.labels("applied").inc()
        await self._nc.publish(GROUPS_CHANGED, scoped(envelope.app, envelope.group).encode())

    async def on_delivered(self, app: str, user: str, items: list[AckItem]) -> None:
        """Move the group delivery markers of ``user`` to the highest acknowledged seq."""
        highest: dict[str, int] = {}
        for item in items:
            group = group_of(item.conversation)
            if group is not None:
                highest[group] = max(highest.get(group, 0), item.seq)
        for group, seq in highest.items():
            await self._social.advance_markers(app, group, user, seq, 0)

    async def on_receipt(self, receipt: ReceiptEnvelope) -> None:
        """Move the group receipt markers: highest acknowledged seq, read marker."""
        if receipt.status == "delivered":
            await self.on_delivered(receipt.app, receipt.by_user, receipt.items)
        elif receipt.conversation is not None and receipt.seq is not None:
            group = group_of(receipt.conversation)
            if group is not None:
                await self._social.advance_markers(receipt.app, group, receipt.by_user, 0,
                                                   receipt.seq)
