"""Contacts and blocks: the rules of each action and the storage worker's contact RPC.

Contact writes are not ordered with messages, so they are plain RPC writes, serialized in this
process (two users accepting and cancelling at once see one order). After each write the worker
announces the pair on ``contacts.changed``; gateways drop their cached relation and re-check
presence subscriptions.
"""

import asyncio
import time
from typing import NamedTuple

import msgspec
import structlog
from nats.aio.client import Client
from prometheus_client import Counter

from runtime.rpc import Handler
from schemas.contacts import (
    ContactAction,
    ContactEntry,
    ContactList,
    ContactsOf,
    ContactWrite,
    ContactWriteResult,
    Relation,
    RelationChanged,
    Relations,
    RelationsRequest,
    mirror,
)
from schemas.errors import ErrorCode, ProtocolError
from schemas.frames import ContactState
from schemas.subjects import CONTACTS_CHANGED
from storage_worker.store.base import MessageStore
from storage_worker.store.social import ContactStore, SocialStore

log = structlog.get_logger(__name__)

CONTACT_WRITES = Counter("courier_storage_contact_writes_total", "Contact writes applied",
                         ["action"])
_encoder = msgspec.msgpack.Encoder()


class ContactDecision(NamedTuple):
    """The relation after an action: each side's state, and the actor's block (None: as is)."""

    mine: ContactState
    theirs: ContactState
    block: bool | None = None


def decide_contact(relation: Relation, action: ContactAction) -> ContactDecision:
    """What ``action`` by ``relation.a`` towards ``relation.b`` leads to; ``ProtocolError``
    when it makes no sense in the current relation."""
    state, other = relation.state, relation.b
    if action == "block":
        return ContactDecision("none", "none", block=True)
    if action == "unblock":
        if not relation.a_blocks_b:
            raise ProtocolError(ErrorCode.NOT_FOUND, f"{other} is not blocked")
        return ContactDecision(state, mirror(state), block=False)
    if action == "request":
        if relation.b_blocks_a:
            raise ProtocolError(ErrorCode.FORBIDDEN, f"{other} does not accept your requests")
        if relation.a_blocks_b:
            raise ProtocolError(ErrorCode.CONFLICT, f"you block {other}; unblock first")
        if state == "contact":
            raise ProtocolError(ErrorCode.CONFLICT, f"{other} is already a contact")
        if state == "incoming":  # both asked: that is an agreement
            return ContactDecision("contact", "contact")
        return ContactDecision("outgoing", "incoming")
    expected: dict[ContactAction, tuple[ContactState, str]] = {
        "accept": ("incoming", f"no contact request from {other}"),
        "decline": ("incoming", f"no contact request from {other}"),
        "cancel": ("outgoing", f"no contact request to {other}"),
        "remove": ("contact", f"{other} is not a contact"),
    }
    needed, missing = expected[action]
    if state != needed:
        raise ProtocolError(ErrorCode.NOT_FOUND, missing)
    return ContactDecision("contact", "contact") if action == "accept" else \
        ContactDecision("none", "none")


async def group_blockers(contacts: ContactStore, app: str, actor: str,
                         users: list[str]) -> frozenset[str]:
    """Which of ``users`` (of ``app``) block ``actor``: a group create or add by ``actor`` may
    not name them (``group_rules.decide``)."""
    relations = await asyncio.gather(*(contacts.relation(app, actor, user)
                                       for user in dict.fromkeys(users) if user != actor))
    return frozenset(relation.b for relation in relations if relation.b_blocks_a)


def _entry(relation: Relation) -> ContactEntry:
    return ContactEntry(user=relation.b, state=relation.state, blocked=relation.a_blocks_b)


class ContactService:
    """Handlers of the ``contact_write``, ``contacts`` and ``relations`` storage operations."""

    def __init__(self, social: SocialStore, messages: MessageStore, nc: Client) -> None:
        self._social = social
        self._messages = messages
        self._nc = nc
        self._lock = asyncio.Lock()

    def handlers(self) -> dict[str, Handler]:
        return {"contact_write": self._write, "contacts": self._contacts,
                "relations": self._relations}

    async def _write(self, request: ContactWrite) -> ContactWriteResult:
        app, user, other = request.app, request.user, request.other
        if user == other:
            raise ProtocolError(ErrorCode.INVALID, "that is you")
        exists, _ = await self._messages.user_devices(app, other)
        if not exists:
            raise ProtocolError(ErrorCode.NOT_FOUND, f"no user {other!r}")
        async with self._lock:
            before = await self._social.relation(app, user, other)
            decision = decide_contact(before, request.action)
            now = int(time.time() * 1000)
            if (decision.mine, decision.theirs) != (before.state, mirror(before.state)):
                await self._social.set_contact(app, user, other, decision.mine,
                                               decision.theirs, now)
            if decision.block is not None and decision.block != before.a_blocks_b:
                await self._social.set_block(app, user, other, decision.block, now)
            after = await self._social.relation(app, user, other)
        CONTACT_WRITES.labels(request.action).inc()
        if after != before:
            log.info("relation_changed", app=app, user=user, other=other,
                     action=request.action, state=after.state)
            await self._nc.publish(CONTACTS_CHANGED, _encoder.encode(
                RelationChanged(app=app, a=user, b=other)))
        return ContactWriteResult(mine=_entry(after), theirs=_entry(after.seen_by(other)))

    async def _contacts(self, request: ContactsOf) -> ContactList:
        return ContactList(contacts=await self._social.contacts(request.app, request.user))

    async def _relations(self, request: RelationsRequest) -> Relations:
        return Relations(relations=[await self._social.relation(request.app, request.user,
                                                                other)
                                    for other in request.others])
