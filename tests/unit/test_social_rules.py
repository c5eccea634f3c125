"""Pure rules of groups (rights, sizes, ownership) and contacts (request life cycle, blocks)."""

import pytest

from schemas.contacts import ContactAction, Relation
from schemas.errors import ErrorCode, ProtocolError
from schemas.frames import ContactState
from schemas.groups import (
    AddMembers,
    CreateGroup,
    GroupEnvelope,
    GroupOp,
    LeaveGroup,
    RemoveMember,
    RenameGroup,
    SetRole,
)
from storage_worker.contacts import decide_contact
from storage_worker.group_rules import decide
from storage_worker.store.social import GroupState, MemberState

TEAM = GroupState(id="team", app="app", created_at=1, version=10, owner="olga", members=[
    MemberState("olga", "owner", 10), MemberState("adam", "admin", 10),
    MemberState("mia", "member", 10), MemberState("max", "member", 12)])


def envelope(actor: str, op: GroupOp) -> GroupEnvelope:
    return GroupEnvelope(id="e1", app="app", group="team", actor=actor, op=op, ts=5)


def refused(state: GroupState | None, actor: str, op: GroupOp, max_members: int = 10) -> str:
    with pytest.raises(ProtocolError) as info:
        decide(state, envelope(actor, op), 20, max_members)
    return info.value.code


def test_create() -> None:
    change, event = decide(None, envelope("olga", CreateGroup(name="T", members=["mia", "olga",
                                                                                 "mia"])), 7, 3)
    assert change.created and change.owner == "olga" and change.name == "T"
    assert change.added == {"olga": "owner", "mia": "member"}
    assert (event.event, event.users) == ("create", ["mia"])
    assert refused(TEAM, "olga", CreateGroup()) == ErrorCode.CONFLICT
    assert refused(None, "olga", CreateGroup(members=["a", "b", "c"]), 3) == ErrorCode.INVALID


@pytest.mark.parametrize(("actor", "op", "code"), [
    ("mia", RenameGroup(name="x"), ErrorCode.FORBIDDEN),
    ("mia", AddMembers(users=["new"]), ErrorCode.FORBIDDEN),
    ("mia", RemoveMember(user="max"), ErrorCode.FORBIDDEN),
    ("adam", RemoveMember(user="olga"), ErrorCode.FORBIDDEN),
    ("olga", RemoveMember(user="olga"), ErrorCode.INVALID),
    ("adam", SetRole(user="mia", role="admin"), ErrorCode.FORBIDDEN),
    ("olga", SetRole(user="olga", role="member"), ErrorCode.INVALID),
    ("olga", SetRole(user="adam", role="admin"), ErrorCode.CONFLICT),
    ("olga", SetRole(user="ghost", role="admin"), ErrorCode.NOT_FOUND),
    ("olga", RemoveMember(user="ghost"), ErrorCode.NOT_FOUND),
    ("olga", AddMembers(users=["mia"]), ErrorCode.CONFLICT),
    ("stranger", LeaveGroup(), ErrorCode.NOT_MEMBER),
    ("stranger", RenameGroup(name="x"), ErrorCode.NOT_MEMBER),
])
def test_rights(actor: str, op: GroupOp, code: ErrorCode) -> None:
    assert refused(TEAM, actor, op) == code


def test_admin_may_manage_plain_members_only() -> None:
    change, event = decide(TEAM, envelope("adam", RemoveMember(user="mia")), 20, 10)
    assert change.removed == ["mia"] and event.event == "remove"
    second_admin = GroupState(id="team", app="app", created_at=1, version=10, owner="olga",
                              members=[*TEAM.members, MemberState("ada", "admin", 13)])
    assert refused(second_admin, "adam", RemoveMember(user="ada")) == ErrorCode.FORBIDDEN
    change, _ = decide(second_admin, envelope("olga", RemoveMember(user="ada")), 20, 10)
    assert change.removed == ["ada"]


def test_group_size_is_enforced() -> None:
    assert refused(TEAM, "adam", AddMembers(users=["a", "b"]), 5) == ErrorCode.CONFLICT
    change, event = decide(TEAM, envelope("adam", AddMembers(users=["mia", "a"])), 20, 5)
    assert change.added == {"a": "member"} and event.users == ["a"]


def test_ownership_moves() -> None:
    change, event = decide(TEAM, envelope("olga", SetRole(user="mia", role="owner")), 20, 10)
    assert change.owner == "mia" and change.roles == {"mia": "owner", "olga": "admin"}
    assert event.owner == "mia"
    change, event = decide(TEAM, envelope("olga", LeaveGroup()), 20, 10)
    assert change.removed == ["olga"] and change.owner == "adam"  # the admin first
    no_admin = GroupState(id="team", app="app", created_at=1, version=10, owner="olga",
                          members=[MemberState("olga", "owner", 10), MemberState("max", "member",
                                                                                 12)])
    change, _ = decide(no_admin, envelope("olga", LeaveGroup()), 20, 10)
    assert change.owner == "max"
    alone = GroupState(id="team", app="app", created_at=1, version=10, owner="olga",
                       members=[MemberState("olga", "owner", 10)])
    change, _ = decide(alone, envelope("olga", LeaveGroup()), 20, 10)
    assert change.owner is None and change.removed == ["olga"]
    change, _ = decide(TEAM, envelope("mia", LeaveGroup()), 20, 10)
    assert change.owner is None and change.roles == {}


def relation(state: ContactState = "none", mine: bool = False,
             theirs: bool = False) -> Relation:
    return Relation(a="me", b="you", state=state, a_blocks_b=mine, b_blocks_a=theirs)


@pytest.mark.parametrize(("before", "action", "after"), [
    (relation(), "request", ("outgoing", "incoming", None)),
    (relation("outgoing"), "request", ("outgoing", "incoming", None)),
    (relation("incoming"), "request", ("contact", "contact", None)),
    (relation("incoming"), "accept", ("contact", "contact", None)),
    (relation("incoming"), "decline", ("none", "none", None)),
    (relation("outgoing"), "cancel", ("none", "none", None)),
    (relation("contact"), "remove", ("none", "none", None)),
    (relation("contact"), "block", ("none", "none", True)),
    (relation(mine=True), "unblock", ("none", "none", False)),
])
def test_contact_transitions(before: Relation, action: ContactAction,
                             after: tuple[str, str, bool | None]) -> None:
    assert tuple(decide_contact(before, action)) == after


@pytest.mark.parametrize(("before", "action", "code"), [
    (relation(theirs=True), "request", ErrorCode.FORBIDDEN),
    (relation(mine=True), "request", ErrorCode.CONFLICT),
    (relation("contact"), "request", ErrorCode.CONFLICT),
    (relation(), "accept", ErrorCode.NOT_FOUND),
    (relation("outgoing"), "accept", ErrorCode.NOT_FOUND),
    (relation("outgoing"), "decline", ErrorCode.NOT_FOUND),
    (relation("incoming"), "cancel", ErrorCode.NOT_FOUND),
    (relation("incoming"), "remove", ErrorCode.NOT_FOUND),
    (relation(), "unblock", ErrorCode.NOT_FOUND),
])
def test_contact_refusals(before: Relation, action: ContactAction, code: ErrorCode) -> None:
    with pytest.raises(ProtocolError) as info:
        decide_contact(before, action)
    assert info.value.code == code


def test_relation_seen_from_the_other_side() -> None:
    seen = Relation(a="me", b="you", state="outgoing", a_blocks_b=True).seen_by("you")
    assert (seen.a, seen.b, seen.state, seen.a_blocks_b, seen.b_blocks_a) == (
        "you", "me", "incoming", False, True)


def test_nobody_puts_a_user_who_blocks_them_into_a_group() -> None:
    """Issue 10, finding 5: a block was bypassed by creating a group with the blocker."""
    with pytest.raises(ProtocolError) as info:
        decide(None, envelope("mallory", CreateGroup(members=["mia", "olga"])), 7, 10,
               blockers={"olga"})
    assert info.value.code == ErrorCode.FORBIDDEN and "olga" in info.value.message
    with pytest.raises(ProtocolError) as info:
        decide(TEAM, envelope("adam", AddMembers(users=["new", "blocker"])), 20, 10,
               blockers={"blocker"})
    assert info.value.code == ErrorCode.FORBIDDEN
    change, _ = decide(None, envelope("mallory", CreateGroup(members=["mia"])), 7, 10,
                       blockers={"olga"})  # those who block the actor but are not named
    assert change.added == {"mallory": "owner", "mia": "member"}
    change, _ = decide(TEAM, envelope("olga", RenameGroup(name="x")), 20, 10,
                       blockers={"mia"})  # only creates and adds name new members
    assert change.name == "x"
