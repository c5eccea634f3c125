"""Groups: roles, the operations that change a group, the envelope that orders them with the
group's messages, the system event members see in the history, and the REST and RPC bodies.

A group write is a ``group_write`` RPC to the storage worker: it checks the operation, publishes
a ``GroupEnvelope`` on ``msgs.group`` and answers once it has applied it. The envelope's stream
sequence is the seq of the group's system message, so membership changes sit in the group's
order with its messages: whoever is a member at a message's seq gets that message.
"""

from typing import Annotated, Final, Literal

import msgspec

from schemas.bounds import Count
from schemas.frames import Message
from schemas.ids import GroupId, UserId
from schemas.version import PROTOCOL_VERSION

Role = Literal["owner", "admin", "member"]
GroupName = Annotated[str, msgspec.Meta(min_length=1, max_length=128)]

#: Upper bound of users named in one request (the configured group size is the real limit).
MAX_USERS_PER_REQUEST: Final = 10_000
#: ``module`` of a group's system messages; their ``body`` is a JSON ``GroupEvent``.
GROUP_EVENT_MODULE: Final = "groups"

UserList = Annotated[list[UserId], msgspec.Meta(max_length=MAX_USERS_PER_REQUEST)]


# ---------------------------------------------------------------- operations


class _Op(msgspec.Struct, tag_field="op", forbid_unknown_fields=True, omit_defaults=True):
    """Base of every group operation: tagged by ``op``."""


class CreateGroup(_Op, tag="create"):
    """Create the group; the actor becomes its owner, ``members`` its members."""

    name: GroupName | None = None
    members: UserList = []


class RenameGroup(_Op, tag="rename"):
    """Rename the group (owner, admins)."""

    name: GroupName


class AddMembers(_Op, tag="add"):
    """Add users as members (owner, admins), up to the configured group size."""

    users: Annotated[list[UserId], msgspec.Meta(min_length=1, max_length=MAX_USERS_PER_REQUEST)]


class RemoveMember(_Op, tag="remove"):
    """Remove a member (the owner: anyone but itself; admins: plain members)."""

    user: UserId


class LeaveGroup(_Op, tag="leave"):
    """The actor leaves; an owner hands ownership to the longest-standing admin, else member."""


class SetRole(_Op, tag="set_role"):
    """Change a member's role (owner only). Making someone ``owner`` hands ownership over and
    makes the previous owner an admin."""

    user: UserId
    role: Role


GroupOp = CreateGroup | RenameGroup | AddMembers | RemoveMember | LeaveGroup | SetRole


class GroupEnvelope(msgspec.Struct, tag="grp", tag_field="t", omit_defaults=True):
    """A group write in its group's partition (subject ``msgs.<p>.group``). ``id`` is the JetStream
    de-duplication key and the id of the system message the write produces."""

    id: str
    app: str
    group: str
    actor: str
    op: GroupOp
    ts: Count
    v: Count = PROTOCOL_VERSION


class GroupEvent(msgspec.Struct, omit_defaults=True):
    """Body of a group's system message (``kind`` "system", ``module`` "groups"): JSON written
    by the server, not ciphertext. ``event`` is the operation; ``users`` the members it added,
    removed or changed; ``owner`` is set when ownership moved."""

    event: Literal["create", "rename", "add", "remove", "leave", "set_role"]
    group: str
    actor: str
    name: str | None = None
    users: list[str] = []
    role: Role | None = None
    owner: str | None = None


# ---------------------------------------------------------------- REST bodies


class CreateGroupRequest(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    """``POST /v1/groups``. Without ``id`` the server picks one."""

    id: GroupId | None = None
    name: GroupName | None = None
    members: UserList = []


class RenameGroupRequest(msgspec.Struct, forbid_unknown_fields=True):
    """``PATCH /v1/groups/{group}``."""

    name: GroupName


class AddMembersRequest(msgspec.Struct, forbid_unknown_fields=True):
    """``POST /v1/groups/{group}/members``."""

    users: Annotated[list[UserId], msgspec.Meta(min_length=1, max_length=MAX_USERS_PER_REQUEST)]


class SetRoleRequest(msgspec.Struct, forbid_unknown_fields=True):
    """``PUT /v1/groups/{group}/members/{user}/role``."""

    role: Role


class GroupMember(msgspec.Struct):
    """A current member: its role and the seq of the system message that added it (it sees
    the group's messages after that seq)."""

    user: str
    role: Role
    joined_seq: int


class GroupInfo(msgspec.Struct, omit_defaults=True):
    """A group as its members see it. ``version`` is the seq of its latest change."""

    id: str
    conversation: str
    created_at: int
    version: int
    max_members: int
    members: list[GroupMember]
    name: str | None = None
    owner: str | None = None


class GroupSummary(msgspec.Struct, omit_defaults=True):
    """One of the caller's groups."""

    id: str
    conversation: str
    role: Role
    members: int
    version: int
    name: str | None = None


class GroupList(msgspec.Struct):
    """``GET /v1/groups``: the caller's groups."""

    groups: list[GroupSummary]


class GroupReceipts(msgspec.Struct):
    """Receipt counters of one group message. ``recipients``: members at its seq other than
    the sender; ``delivered``/``read``: how many of them a device received it / read up to it."""

    conversation: str
    message_id: str
    seq: int
    recipients: int
    delivered: int
    read: int
    delivered_to_all: bool
    read_by_all: bool


# ---------------------------------------------------------------- storage RPC


class GroupWrite(msgspec.Struct):
    """Apply ``op`` to ``group`` as ``actor``; answered with the group after the change."""

    app: str
    actor: str
    group: str
    op: GroupOp


class GroupGet(msgspec.Struct):
    """The group as ``user`` (a current member) sees it."""

    app: str
    group: str
    user: str


class UserGroups(msgspec.Struct):
    """The groups ``user`` is a member of."""

    app: str
    user: str


class GroupRosterRequest(msgspec.Struct):
    """Who may use the group now (gateways cache the answer)."""

    app: str
    group: str


class GroupRoster(msgspec.Struct, omit_defaults=True):
    """Current members with their roles, and former members (they still read their history)."""

    exists: bool
    members: dict[str, Role] = {}
    former: list[str] = []


class GroupMembersAt(msgspec.Struct):
    """Members of ``group`` at stream sequence ``seq`` (the router's membership cache)."""

    app: str
    group: str
    seq: int


class GroupMembers(msgspec.Struct):
    """Reply to ``GroupMembersAt``, sorted."""

    members: list[str]


class GroupEventRequest(msgspec.Struct):
    """The outcome of the group write at stream sequence ``seq`` (answered once it is applied)."""

    seq: int


class GroupEventOutcome(msgspec.Struct, omit_defaults=True):
    """Whether the write was applied; if so, its system message, who gets it (members before
    and after) and the members after it; if not, the error it was refused with."""

    applied: bool
    group: str
    code: str = ""
    detail: str = ""
    recipients: list[str] = []
    members: list[str] = []
    message: Message | None = None


class GroupReceiptsRequest(msgspec.Struct):
    """Receipt counters of a message of a group conversation, for a member who received it."""

    app: str
    user: str
    conversation: str
    message_id: str
    barrier: list[int] = []
