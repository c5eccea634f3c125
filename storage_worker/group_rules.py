"""Who may change a group, and what each operation changes.

One pure function, used twice by the storage worker: before a write is published (a quick typed
error for the caller) and, authoritatively, when the write is applied in stream order, so two
writes checked at the same time can neither push a group past its size nor act on rights that
changed in between.

Rights: the owner may do everything; admins may rename, add members and remove plain members;
every member may leave. Ownership moves by ``set_role`` to ``owner`` (the previous owner
becomes an admin) or, when the owner leaves, to the longest-standing admin, else member.

Blocks: nobody may put a user who blocks them into a group, by creating it or by adding them
(``forbidden``). Groups already shared are not affected by a block: the group is everyone's,
so messages in it still flow both ways, and the blocker may leave (see
docs/groups-contacts-presence.md).
"""

from collections.abc import Collection

from schemas.errors import ErrorCode, ProtocolError
from schemas.groups import (
    AddMembers,
    CreateGroup,
    GroupEnvelope,
    GroupEvent,
    GroupOp,
    LeaveGroup,
    RemoveMember,
    RenameGroup,
    Role,
    SetRole,
)
from storage_worker.store.social import GroupChange, GroupState

MANAGERS: frozenset[Role] = frozenset({"owner", "admin"})


def decide(state: GroupState | None, envelope: GroupEnvelope, seq: int, max_members: int,
           blockers: Collection[str] = ()) -> tuple[GroupChange, GroupEvent]:
    """The change ``envelope`` makes to ``state`` at ``seq`` and the system event members
    see; raises ``ProtocolError`` when the actor may not do it. ``blockers``: the users the
    operation names who block the actor (``group_blockers``)."""
    op, actor, group = envelope.op, envelope.actor, envelope.group
    change = GroupChange(seq=seq, group=group, app=envelope.app, ts=envelope.ts)
    if isinstance(op, CreateGroup):
        if state is not None:
            raise ProtocolError(ErrorCode.CONFLICT, f"group {group!r} already exists")
        others = [user for user in dict.fromkeys(op.members) if user != actor]
        if len(others) + 1 > max_members:
            raise ProtocolError(ErrorCode.INVALID, f"a group has at most {max_members} members")
        _refuse_blockers(others, blockers)
        change.created, change.name, change.owner = True, op.name, actor
        change.added = {actor: "owner", **dict.fromkeys(others, "member")}
        return change, GroupEvent(event="create", group=group, actor=actor, name=op.name,
                                  users=others)
    if state is None:
        raise ProtocolError(ErrorCode.NOT_FOUND, f"no group {group!r}")
    role = state.role_of(actor)
    if role is None:
        raise ProtocolError(ErrorCode.NOT_MEMBER, f"not a member of group {group!r}")
    if isinstance(op, RenameGroup):
        _require(role in MANAGERS, "only the owner and admins may rename the group")
        change.name = op.name
        return change, GroupEvent(event="rename", group=group, actor=actor, name=op.name)
    if isinstance(op, AddMembers):
        _require(role in MANAGERS, "only the owner and admins may add members")
        new = [user for user in dict.fromkeys(op.users) if state.role_of(user) is None]
        if not new:
            raise ProtocolError(ErrorCode.CONFLICT, "already members of the group")
        if len(state.members) + len(new) > max_members:
            raise ProtocolError(ErrorCode.CONFLICT,
                                f"the group is full (at most {max_members} members)")
        _refuse_blockers(new, blockers)
        change.added = dict.fromkeys(new, "member")
        return change, GroupEvent(event="add", group=group, actor=actor, users=new)
    if isinstance(op, RemoveMember):
        _require(role in MANAGERS, "only the owner and admins may remove members")
        if op.user == actor:
            raise ProtocolError(ErrorCode.INVALID, "to remove yourself, leave the group")
        target = _member_role(state, op.user)
        _require(target != "owner", "the owner cannot be removed")
        _require(target != "admin" or role == "owner", "only the owner may remove admins")
        change.removed = [op.user]
        return change, GroupEvent(event="remove", group=group, actor=actor, users=[op.user])
    if isinstance(op, LeaveGroup):
        change.removed = [actor]
        if role == "owner":
            change.owner = _successor(state, actor)
            if change.owner is not None:
                change.roles = {change.owner: "owner"}
        return change, GroupEvent(event="leave", group=group, actor=actor, users=[actor],
                                  owner=change.owner)
    assert isinstance(op, SetRole)
    _require(role == "owner", "only the owner may change roles")
    if op.user == actor:
        raise ProtocolError(ErrorCode.INVALID, "the owner's role changes by making another "
                            "member owner")
    if _member_role(state, op.user) == op.role:
        raise ProtocolError(ErrorCode.CONFLICT, f"{op.user} is already {op.role}")
    change.roles = {op.user: op.role}
    if op.role == "owner":
        change.owner = op.user
        change.roles[actor] = "admin"
    return change, GroupEvent(event="set_role", group=group, actor=actor, users=[op.user],
                              role=op.role, owner=change.owner)


def named_users(op: GroupOp) -> list[str]:
    """The users a create or an add would put into the group (none for other operations)."""
    if isinstance(op, CreateGroup):
        return op.members
    if isinstance(op, AddMembers):
        return op.users
    return []


def _refuse_blockers(users: list[str], blockers: Collection[str]) -> None:
    barred = [user for user in users if user in blockers]
    if barred:
        raise ProtocolError(ErrorCode.FORBIDDEN, f"{', '.join(barred[:10])} cannot be put in a "
                            "group by you (blocked)")


def _require(allowed: bool, message: str) -> None:
    if not allowed:
        raise ProtocolError(ErrorCode.FORBIDDEN, message)


def _member_role(state: GroupState, user: str) -> Role:
    role = state.role_of(user)
    if role is None:
        raise ProtocolError(ErrorCode.NOT_FOUND, f"{user} is not a member of the group")
    return role


def _successor(state: GroupState, leaving: str) -> str | None:
    """The longest-standing admin, else member, other than ``leaving`` (members are ordered
    by the seq they joined at)."""
    others = [m for m in state.members if m.user != leaving]
    admins = [m for m in others if m.role == "admin"]
    candidates = admins or others
    return candidates[0].user if candidates else None
