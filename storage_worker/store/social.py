"""The groups and contacts storage interface. Every backend implements ``SocialStore``; the
contract suite in ``tests/contract/test_social_contract.py`` runs the same tests against each.

Model. A group has a row of current state (name, owner, ``version``: the seq of its latest
applied write) and membership intervals: a user is a member at seq ``s`` when one of its
intervals has ``joined_seq <= s`` and no ``left_seq`` or ``left_seq > s``; intervals are never
deleted, so membership can be asked "as of" any seq (the router needs it, see
``router/membership.py``). Every group write at a stream sequence gets one event record, applied
or refused, so a redelivered write is recognised and its outcome can be read back. Group
receipts are counters, not rows per recipient: one metadata row per group message and, per
(group, user), the highest seq its devices acknowledged and the user's read marker.

Contacts: each user of a pair has a state, what that user sees (``outgoing``/``incoming``/
``contact``), and may block the other. A contact write is a compare-and-set of the whole pair
(``change_relation``): serialized by the database, so any number of storage workers may
serve contact writes at once.

Decisions (who may do what, what a write changes) are not made here: the storage worker
decides (``storage_worker/group_rules.py``, ``storage_worker/contacts.py``) and the store
records. Every write is idempotent, so a replayed call (JetStream redelivery) changes nothing.
Times are milliseconds since the epoch, passed in.

Tenancy: groups, memberships, markers, contacts and blocks are keyed by ``(app, ...)``; every
method takes the app first (a ``GroupEventRecord``/``GroupChange``/``GroupMessageMeta``
carries its own), so the same group or user id in two apps never shares a row. Group write
outcomes are keyed by their stream sequence alone: it is unique in the deployment.
"""

from collections.abc import Sequence
from typing import Protocol

import msgspec

from schemas.contacts import ContactEntry, Relation
from schemas.frames import ContactState
from schemas.groups import GroupReceipts, GroupSummary, Role


class MemberState(msgspec.Struct, frozen=True):
    """A current member of a group."""

    user: str
    role: Role
    joined_seq: int


class GroupState(msgspec.Struct):
    """A group now: current members (by ``joined_seq``, then user) and former members."""

    id: str
    app: str
    created_at: int
    version: int
    members: list[MemberState]
    name: str | None = None
    owner: str | None = None
    former: list[str] = []

    def role_of(self, user: str) -> Role | None:
        for member in self.members:
            if member.user == user:
                return member.role
        return None


class GroupChange(msgspec.Struct):
    """The effect of one applied group write at ``seq``. ``name``/``owner`` None: unchanged;
    ``added``: user -> role; ``removed``: users whose membership ends at ``seq``; ``roles``:
    new roles of existing members."""

    seq: int
    group: str
    app: str
    ts: int
    created: bool = False
    name: str | None = None
    owner: str | None = None
    added: dict[str, Role] = {}
    removed: list[str] = []
    roles: dict[str, Role] = {}


class GroupEventRecord(msgspec.Struct):
    """The outcome of the group write at ``seq``: ``code`` empty when applied, with the
    system message's ``body``; otherwise the error code and ``detail`` it was refused with."""

    seq: int
    id: str
    group: str
    app: str
    actor: str
    ts: int
    code: str = ""
    detail: str = ""
    body: bytes | None = None


class GroupMessageMeta(msgspec.Struct, frozen=True):
    """One group message, for its receipt counters: ``recipients`` is the number of members
    at its seq other than its sender."""

    app: str
    group: str
    id: str
    seq: int
    sender: str | None
    recipients: int


class GroupStore(Protocol):
    """Groups, membership intervals, group write outcomes and receipt counters."""

    async def group(self, app: str, group: str) -> GroupState | None:
        """The group now, or None if it was never created."""

    async def members_at(self, app: str, group: str, seq: int) -> list[str]:
        """The users who were members at ``seq``, sorted."""

    async def user_groups(self, app: str, user: str) -> list[GroupSummary]:
        """The groups ``user`` is a member of now, most recently changed first."""

    async def group_event(self, seq: int) -> GroupEventRecord | None:
        """The recorded outcome of the group write at ``seq``, or None if not applied yet."""

    async def apply_group_event(self, record: GroupEventRecord,
                                change: GroupChange | None) -> None:
        """Record the outcome of a group write and, when ``change`` is given, apply it. A seq
        already recorded is skipped; a partially applied change is completed. A change at a
        seq below the group's version raises ``GroupWriteOutOfOrder``: a group's writes apply
        in seq order only."""

    async def record_group_messages(self, messages: Sequence[GroupMessageMeta]) -> None:
        """Remember group messages for their receipt counters (a known id is skipped)."""

    async def advance_markers(self, app: str, group: str, user: str, delivered: int,
                              read: int) -> None:
        """Move ``user``'s delivered and read markers in the group forward (never back; 0
        leaves a marker as it is)."""

    async def receipts(self, app: str, group: str, message_id: str) -> GroupReceipts | None:
        """Receipt counters of a group message, None for an unknown id. A recipient counts as
        delivered when its delivered or read marker reaches the message's seq."""


class ContactStore(Protocol):
    """Contacts, pending requests and blocks."""

    async def relation(self, app: str, a: str, b: str) -> Relation:
        """How ``a`` and ``b`` relate (``state`` as ``a`` sees it)."""

    async def contacts(self, app: str, user: str) -> list[ContactEntry]:
        """Every user ``user`` has a contact state with or blocks, by user id."""

    async def change_relation(self, app: str, before: Relation, mine: ContactState,
                              theirs: ContactState, block: bool | None, now: int) -> bool:
        """Move the pair ``before.a``/``before.b`` from ``before`` (as ``relation`` read it) to
        ``mine`` (as ``a`` sees it) and ``theirs``, and set ``a``'s block of ``b`` unless
        ``block`` is None. A compare-and-set: False, and nothing written, when the pair is no
        longer ``before`` (another writer, maybe another storage worker, got there first:
        read it again and decide again). A state that stays keeps its ``since``."""


class GroupWriteOutOfOrder(RuntimeError):
    """A group write reached the store after a later write of the same group was applied:
    two writers applied one group's stream out of order. Nothing of it is applied."""

    def __init__(self, app: str, group: str, seq: int, version: int) -> None:
        super().__init__(f"group {app}/{group}: write at seq {seq} after version {version}")
        self.seq = seq
        self.version = version


class SocialStore(GroupStore, ContactStore, Protocol):
    """Everything groups and contacts persist; ``open`` before use, ``close`` after."""

    async def open(self) -> None:
        """Connect and make sure the schema exists."""

    async def close(self) -> None:
        """Release what ``open`` acquired."""
