"""Contacts, blocks and presence visibility: REST and RPC bodies.

A contact is symmetric and needs a request accepted by the other user. A block is one-way:
the blocked user cannot message the blocker, send it contact requests or see its presence.
The storage worker owns this state; gateways cache ``Relation``s and drop them when the storage
worker announces a change on ``contacts.changed`` (a ``RelationChanged``).
"""

from typing import Annotated, Final, Literal

import msgspec

from schemas.frames import ContactState, PresenceState
from schemas.ids import UserId

ContactAction = Literal["request", "accept", "decline", "cancel", "remove", "block", "unblock"]

#: Upper bound of users in one relation look-up (a presence subscription).
MAX_RELATIONS: Final = 1000


class ContactEntry(msgspec.Struct, omit_defaults=True):
    """``user`` as the caller sees it: ``contact``, a request ``incoming`` (from ``user``) or
    ``outgoing`` (to ``user``), or ``none``; ``blocked``: the caller blocks ``user``."""

    user: str
    state: ContactState
    blocked: bool = False
    since: int = 0


class ContactList(msgspec.Struct):
    """``GET /v1/contacts``: contacts, pending requests both ways, and blocked users."""

    contacts: list[ContactEntry]


class ContactRequestBody(msgspec.Struct, forbid_unknown_fields=True):
    """``POST /v1/contacts/requests``: ask ``user`` to become a contact."""

    user: UserId


class PresenceList(msgspec.Struct):
    """``GET /v1/presence``: the state of the users the caller may see; the others in
    ``denied`` (not contacts, or they blocked the caller)."""

    users: list[PresenceState]
    denied: list[str] = []


# ---------------------------------------------------------------- storage RPC


class ContactWrite(msgspec.Struct):
    """``user`` does ``action`` towards ``other`` (both of ``app``)."""

    app: str
    user: str
    other: str
    action: ContactAction


class ContactWriteResult(msgspec.Struct):
    """The relation after the write, as each side sees it."""

    mine: ContactEntry
    theirs: ContactEntry


class ContactsOf(msgspec.Struct):
    """Everything in ``user``'s contact list."""

    app: str
    user: str


class RelationsRequest(msgspec.Struct):
    """How ``user`` relates to each of ``others`` (all of ``app``)."""

    app: str
    user: str
    others: Annotated[list[str], msgspec.Meta(max_length=MAX_RELATIONS)]


def mirror(state: ContactState) -> ContactState:
    """The state the other user of a relation sees."""
    if state == "incoming":
        return "outgoing"
    if state == "outgoing":
        return "incoming"
    return state


class Relation(msgspec.Struct, frozen=True):
    """Two users' relation: ``state`` as ``a`` sees it, and who blocks whom."""

    a: str
    b: str
    state: ContactState = "none"
    a_blocks_b: bool = False
    b_blocks_a: bool = False

    def seen_by(self, user: str) -> "Relation":
        """The same relation with ``user`` as ``a``."""
        if user == self.a:
            return self
        return Relation(a=self.b, b=self.a, state=mirror(self.state),
                        a_blocks_b=self.b_blocks_a, b_blocks_a=self.a_blocks_b)


class Relations(msgspec.Struct):
    """Reply to ``RelationsRequest``, in the order asked."""

    relations: list[Relation]


class RelationChanged(msgspec.Struct):
    """Payload of ``contacts.changed`` (MessagePack): the relation of ``a`` and ``b`` (users of
    ``app``) changed."""

    app: str
    a: str
    b: str
