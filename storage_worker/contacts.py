"""Contacts and blocks: the rules of each action and the storage worker's contact RPC.

Contact writes are not ordered with messages, so they are plain RPC writes, serialized by the
store: each is decided against the relation it read and written as a compare-and-set of the
pair (``SocialStore.change_relation``); a writer that lost a race, in this storage worker or
another, reads the pair again and decides again, so two users accepting and cancelling at once
see one order. After each write the worker announces the pair on ``contacts.changed``;
gateways drop their cached relation and re-check presence subscriptions.
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
CONTACT_RACES = Counter("courier_storage_contact_races_total",
                        "Contact writes decided again: another writer changed the pair first")
#: Decisions per contact write before it gives up (each lost race means the pair changed).
MAX_ATTEMPTS = 8
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


async def apply_contact_action(social: ContactStore, app: str, user: str, other: str,
                               action: ContactAction, now: int) -> tuple[Relation, Relation]:
    """Decide ``action`` of ``user`` towards ``other`` and write it; the relation before and
    after. ``ProtocolError`` when the action makes no sense in the relation it meets."""
    for attempt in range(MAX_ATTEMPTS):
        before = await social.relation(app, user, other)
        decision = decide_contact(before, action)
        block = None if decision.block == before.a_blocks_b else decision.block
        if (decision.mine, decision.theirs) == (before.state, mirror(before.state)) \
                and block is None:
            return before, before
        if await social.change_relation(app, before, decision.mine, decision.theirs, block,
                                        now):
            return before, await social.relation(app, user, other)
        CONTACT_RACES.inc()
        log.info("contact_write_race", app=app, user=user, other=other, action=action,
                 attempt=attempt)
    raise ProtocolError(ErrorCode.UNAVAILABLE,
                        f"the relation with {other} keeps changing; try again")


def _entry(relation: Relation) -> ContactEntry:
    return ContactEntry(user=relation.b, state=relation.state, blocked=relation.a_blocks_b)


class ContactService:
    """Handlers of the ``contact_write``, ``contacts`` and ``relations`` storage operations."""

    def __init__(self, social: SocialStore, messages: MessageStore, nc: Client) -> None:
        self._social = social
        self._messages = messages
        self._nc = nc

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
        before, after = await apply_contact_action(self._social, app, user, other,
                                                   request.action, int(time.time() * 1000))
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
