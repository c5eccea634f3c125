"""The audience of a device-list change (``storage_worker.key_audience.key_audience``)."""

from schemas.contacts import ContactEntry
from schemas.keys import MAX_KEY_AUDIENCE
from storage_worker.key_audience import key_audience


def test_the_user_then_direct_peers_then_contacts_then_group_members_once_each() -> None:
    found = key_audience(
        "alice", ["d:alice:bob", "g:club", "n:alice", "d:alice:carol", "d:alice:bob"],
        [ContactEntry(user="dave", state="contact"), ContactEntry(user="bob", state="contact"),
         ContactEntry(user="erin", state="outgoing"), ContactEntry(user="frank", state="incoming"),
         ContactEntry(user="gus", state="contact", blocked=True)],
        [["alice", "carol", "hank"], ["ivy"]])
    assert found.users == ["alice", "bob", "carol", "dave", "hank", "ivy"]
    assert not found.truncated


def test_a_user_alone_is_told_alone() -> None:
    assert key_audience("alice", [], [], []).users == ["alice"]


def test_the_audience_is_capped_in_priority_order() -> None:
    roster = [f"u{n}" for n in range(MAX_KEY_AUDIENCE)]
    exact = key_audience("alice", ["d:alice:bob"], [], [roster[:MAX_KEY_AUDIENCE - 2]])
    assert len(exact.users) == MAX_KEY_AUDIENCE and not exact.truncated  # at the bound
    past = key_audience("alice", ["d:alice:bob"], [], [roster])  # one past it
    assert len(past.users) == MAX_KEY_AUDIENCE and past.truncated
    assert past.users[:2] == ["alice", "bob"] and "u998" not in past.users
    assert key_audience("alice", ["d:alice:bob"], [], [roster], cap=2).users == ["alice", "bob"]
