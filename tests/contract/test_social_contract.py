"""The groups and contacts storage contract: every ``SocialStore`` backend passes every test."""

import pytest

from schemas.contacts import Relation
from schemas.frames import ContactState
from schemas.groups import Role
from storage_worker.store.social import (
    GroupChange,
    GroupEventRecord,
    GroupMessageMeta,
    GroupWriteOutOfOrder,
    SocialStore,
)

APP = "app"
NOW = 1_800_000_000_000


def record(seq: int, group: str = "team", actor: str = "alice", code: str = "",
           app: str = APP) -> GroupEventRecord:
    return GroupEventRecord(seq=seq, id=f"e{seq}", group=group, app=app, actor=actor, ts=NOW,
                            code=code, detail="refused" if code else "",
                            body=None if code else b'{"event":"x"}')


async def apply(social: SocialStore, seq: int, *, group: str = "team", created: bool = False,
                name: str | None = None, owner: str | None = None,
                added: dict[str, Role] | None = None, removed: list[str] | None = None,
                roles: dict[str, Role] | None = None, app: str = APP) -> None:
    change = GroupChange(seq=seq, group=group, app=app, ts=NOW + seq, created=created,
                         name=name, owner=owner, added=added or {}, removed=removed or [],
                         roles=roles or {})
    await social.apply_group_event(record(seq, group, app=app), change)


async def create_team(social: SocialStore, seq: int = 10) -> None:
    await apply(social, seq, created=True, name="Team", owner="alice",
                added={"alice": "owner", "bob": "member", "carol": "member"})


async def test_group_state_and_membership_intervals(social: SocialStore) -> None:
    assert await social.group(APP, "team") is None
    await create_team(social)
    await apply(social, 20, removed=["carol"])
    await apply(social, 30, added={"dave": "member"})
    state = await social.group(APP, "team")
    assert state is not None
    assert (state.name, state.owner, state.version, state.app) == ("Team", "alice", 30, "app")
    assert state.created_at == NOW + 10
    assert [(m.user, m.role, m.joined_seq) for m in state.members] == [
        ("alice", "owner", 10), ("bob", "member", 10), ("dave", "member", 30)]
    assert state.former == ["carol"]
    assert await social.members_at(APP, "team", 9) == []
    assert await social.members_at(APP, "team", 10) == ["alice", "bob", "carol"]
    assert await social.members_at(APP, "team", 20) == ["alice", "bob"]  # removed at its seq
    assert await social.members_at(APP, "team", 29) == ["alice", "bob"]
    assert await social.members_at(APP, "team", 30) == ["alice", "bob", "dave"]
    await apply(social, 40, added={"carol": "member"})  # back again: a second interval
    assert await social.members_at(APP, "team", 25) == ["alice", "bob"]
    assert await social.members_at(APP, "team", 40) == ["alice", "bob", "carol", "dave"]
    state = await social.group(APP, "team")
    assert state is not None and state.former == []
    assert state.role_of("carol") == "member" and state.role_of("zed") is None


async def test_group_events_are_recorded_once(social: SocialStore) -> None:
    await create_team(social)
    await apply(social, 20, added={"dave": "member"})
    await apply(social, 20, added={"erin": "member"})  # redelivered seq: skipped
    refused = record(25, code="forbidden")
    await social.apply_group_event(refused, None)
    assert await social.members_at(APP, "team", 30) == ["alice", "bob", "carol", "dave"]
    applied = await social.group_event(20)
    assert applied is not None and applied.code == "" and applied.body == b'{"event":"x"}'
    assert applied.id == "e20" and applied.group == "team"
    got = await social.group_event(25)
    assert got is not None and (got.code, got.detail, got.body) == ("forbidden", "refused", None)
    assert await social.group_event(99) is None
    state = await social.group(APP, "team")
    assert state is not None and state.version == 20  # refusals change nothing


async def test_roles_and_ownership(social: SocialStore) -> None:
    await create_team(social)
    await apply(social, 20, roles={"bob": "admin"}, name="Renamed")
    await apply(social, 30, owner="bob", roles={"bob": "owner", "alice": "admin"})
    state = await social.group(APP, "team")
    assert state is not None
    assert (state.owner, state.name) == ("bob", "Renamed")
    assert {m.user: m.role for m in state.members} == {
        "alice": "admin", "bob": "owner", "carol": "member"}


async def test_user_groups(social: SocialStore) -> None:
    await create_team(social)
    await apply(social, 15, group="other", created=True, owner="bob",
                added={"bob": "owner", "alice": "member"})
    await apply(social, 20, group="team", removed=["bob"])
    alice = await social.user_groups(APP, "alice")
    assert [(g.id, g.role, g.members, g.version) for g in alice] == [
        ("team", "owner", 2, 20), ("other", "member", 2, 15)]
    assert alice[0].conversation == "g:team" and alice[0].name == "Team"
    assert [g.id for g in await social.user_groups(APP, "bob")] == ["other"]
    assert await social.user_groups(APP, "nobody") == []


async def test_receipt_counters(social: SocialStore) -> None:
    await create_team(social)
    await apply(social, 12, added={"dave": "member"})
    meta = GroupMessageMeta(app=APP, group="team", id="m11", seq=11, sender="alice", recipients=2)
    await social.record_group_messages([meta, meta])
    assert await social.receipts(APP, "team", "nope") is None
    counts = await social.receipts(APP, "team", "m11")
    assert counts is not None
    assert (counts.seq, counts.recipients, counts.delivered, counts.read) == (11, 2, 0, 0)
    assert not counts.delivered_to_all and not counts.read_by_all
    await social.advance_markers(APP, "team", "bob", 11, 0)
    await social.advance_markers(APP, "team", "dave", 50, 50)  # joined after: not a recipient
    await social.advance_markers(APP, "team", "alice", 50, 50)  # the sender does not count
    counts = await social.receipts(APP, "team", "m11")
    assert counts is not None and (counts.delivered, counts.read) == (1, 0)
    await social.advance_markers(APP, "team", "carol", 0, 11)  # read implies delivered
    await social.advance_markers(APP, "team", "bob", 5, 3)  # markers never move back
    counts = await social.receipts(APP, "team", "m11")
    assert counts is not None
    assert (counts.delivered, counts.read, counts.delivered_to_all, counts.read_by_all) == (
        2, 1, True, False)
    assert counts.conversation == "g:team" and counts.message_id == "m11"


async def change(social: SocialStore, a: str, b: str, mine: ContactState,
                 theirs: ContactState, block: bool | None, now: int, app: str = APP) -> None:
    """Move the pair from what it is now; the compare-and-set must succeed."""
    before = await social.relation(app, a, b)
    assert await social.change_relation(app, before, mine, theirs, block, now)


async def test_contacts_and_blocks(social: SocialStore) -> None:
    empty = await social.relation(APP, "alice", "bob")
    assert (empty.state, empty.a_blocks_b, empty.b_blocks_a) == ("none", False, False)
    await change(social, "alice", "bob", "outgoing", "incoming", None, NOW)
    assert (await social.relation(APP, "alice", "bob")).state == "outgoing"
    assert (await social.relation(APP, "bob", "alice")).state == "incoming"
    await change(social, "bob", "alice", "contact", "contact", None, NOW + 1)
    assert (await social.relation(APP, "alice", "bob")).state == "contact"
    await change(social, "carol", "alice", "none", "none", True, NOW + 2)
    await change(social, "carol", "alice", "none", "none", True, NOW + 3)  # idempotent
    relation = await social.relation(APP, "alice", "carol")
    assert (relation.state, relation.a_blocks_b, relation.b_blocks_a) == ("none", False, True)
    assert [(e.user, e.state, e.blocked, e.since) for e in await social.contacts(APP, "carol")] == [
        ("alice", "none", True, NOW + 2)]
    assert [(e.user, e.state, e.blocked, e.since) for e in await social.contacts(APP, "alice")] == [
        ("bob", "contact", False, NOW + 1)]
    await change(social, "bob", "alice", "contact", "contact", True, NOW + 4)  # state kept
    assert [(e.user, e.state, e.blocked, e.since) for e in await social.contacts(APP, "bob")] == [
        ("alice", "contact", True, NOW + 1)]
    assert (await social.relation(APP, "alice", "bob")).b_blocks_a
    await change(social, "alice", "bob", "none", "none", None, NOW + 5)
    await change(social, "bob", "alice", "none", "none", False, NOW + 6)
    await change(social, "carol", "alice", "none", "none", False, NOW + 7)
    assert await social.contacts(APP, "alice") == []
    assert await social.contacts(APP, "bob") == []
    assert await social.contacts(APP, "carol") == []
    assert await social.relation(APP, "alice", "carol") == Relation(a="alice", b="carol")


async def test_change_relation_is_a_compare_and_set(social: SocialStore) -> None:
    """A write decided against a relation that has changed since is refused, writing
    nothing: the writer that lost must read again and decide again."""
    stale = await social.relation(APP, "alice", "bob")
    await change(social, "alice", "bob", "outgoing", "incoming", None, NOW)
    # bob decided "request" against the empty relation alice's request replaced:
    assert not await social.change_relation(APP, stale.seen_by("bob"), "outgoing",
                                            "incoming", None, NOW + 1)
    assert (await social.relation(APP, "alice", "bob")).state == "outgoing"
    current = await social.relation(APP, "bob", "alice")
    assert current.state == "incoming"
    assert await social.change_relation(APP, current, "contact", "contact", None, NOW + 2)
    # a decision against the old request (alice cancelling it) now finds a contact:
    outdated = Relation(a="alice", b="bob", state="outgoing")
    assert not await social.change_relation(APP, outdated, "none", "none", None, NOW + 3)
    assert not await social.change_relation(APP, outdated.seen_by("bob"), "none", "none",
                                            True, NOW + 3)
    assert [(e.user, e.state, e.since) for e in await social.contacts(APP, "alice")] == [
        ("bob", "contact", NOW + 2)]
    assert not (await social.relation(APP, "alice", "bob")).b_blocks_a


async def test_group_writes_apply_in_seq_order(social: SocialStore) -> None:
    """A group write that arrives after a later one of the same group was applied (two
    writers out of order) is refused whole; other groups and replays are unaffected."""
    await create_team(social)
    await apply(social, 30, added={"dave": "member"})
    with pytest.raises(GroupWriteOutOfOrder) as raised:
        await apply(social, 20, removed=["bob"], name="Late")
    assert (raised.value.seq, raised.value.version) == (20, 30)
    state = await social.group(APP, "team")
    assert state is not None and (state.version, state.name) == (30, "Team")
    assert await social.members_at(APP, "team", 30) == ["alice", "bob", "carol", "dave"]
    assert await social.group_event(20) is None
    with pytest.raises(GroupWriteOutOfOrder):  # a second creation at an older seq
        await apply(social, 5, created=True, owner="zed", added={"zed": "owner"})
    assert await social.members_at(APP, "team", 40) == ["alice", "bob", "carol", "dave"]
    await apply(social, 20, group="other", created=True, owner="bob", added={"bob": "owner"})
    assert await social.members_at(APP, "other", 20) == ["bob"]


async def test_apps_are_isolated(social: SocialStore) -> None:
    """The same group and user ids in two apps never share a row: groups, memberships,
    receipt counters, contacts and blocks of one app are invisible to the other."""
    await apply(social, 10, created=True, name="One", owner="alice", app="one",
                added={"alice": "owner", "bob": "member"})
    await apply(social, 20, created=True, name="Two", owner="carol", app="two",
                added={"carol": "owner", "alice": "member"})
    one, two = await social.group("one", "team"), await social.group("two", "team")
    assert one is not None and two is not None
    assert [m.user for m in one.members] == ["alice", "bob"]
    assert [m.user for m in two.members] == ["alice", "carol"]
    assert await social.group("three", "team") is None
    assert await social.members_at("one", "team", 20) == ["alice", "bob"]
    assert await social.members_at("three", "team", 20) == []
    assert [g.name for g in await social.user_groups("one", "alice")] == ["One"]
    assert await social.user_groups("three", "alice") == []
    await social.record_group_messages([
        GroupMessageMeta(app="one", group="team", id="m1", seq=11, sender="alice", recipients=1)])
    assert await social.receipts("two", "team", "m1") is None
    await social.advance_markers("two", "team", "bob", 11, 11)  # bob of app two: nobody here
    counts = await social.receipts("one", "team", "m1")
    assert counts is not None and (counts.delivered, counts.read) == (0, 0)
    await change(social, "alice", "bob", "contact", "contact", None, NOW, app="one")
    await change(social, "carol", "alice", "none", "none", True, NOW, app="one")
    assert (await social.relation("two", "alice", "bob")).state == "none"
    assert not (await social.relation("two", "alice", "carol")).b_blocks_a
    assert await social.contacts("two", "alice") == []
    assert (await social.relation("one", "alice", "bob")).state == "contact"
    assert (await social.relation("one", "alice", "carol")).b_blocks_a
