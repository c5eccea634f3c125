"""The contact write loop against a store whose pair changes under every write: it decides
again each time, then gives up with a typed, retryable error instead of looping forever."""

import pytest

from schemas.contacts import ContactEntry, Relation
from schemas.errors import ErrorCode, ProtocolError
from schemas.frames import ContactState
from storage_worker.contacts import CONTACT_RACES, MAX_ATTEMPTS, apply_contact_action


class AlwaysRaced:
    """A ``ContactStore`` where another writer wins every compare-and-set."""

    def __init__(self, blocks: bool = False) -> None:
        self.attempts = 0
        self.blocks = blocks

    async def relation(self, app: str, a: str, b: str) -> Relation:
        return Relation(a=a, b=b, a_blocks_b=self.blocks)

    async def contacts(self, app: str, user: str) -> list[ContactEntry]:
        return []

    async def change_relation(self, app: str, before: Relation, mine: ContactState,
                              theirs: ContactState, block: bool | None, now: int) -> bool:
        self.attempts += 1
        return False


async def test_a_write_that_keeps_losing_gives_up_as_unavailable() -> None:
    store = AlwaysRaced()
    before = CONTACT_RACES._value.get()
    with pytest.raises(ProtocolError) as raised:
        await apply_contact_action(store, "app", "alice", "bob", "request", 1)
    assert raised.value.code == ErrorCode.UNAVAILABLE
    assert store.attempts == MAX_ATTEMPTS
    assert CONTACT_RACES._value.get() - before == MAX_ATTEMPTS


async def test_refused_and_unchanging_actions_write_nothing() -> None:
    store = AlwaysRaced()
    with pytest.raises(ProtocolError) as raised:  # nothing to accept: refused, not written
        await apply_contact_action(store, "app", "alice", "bob", "accept", 1)
    assert raised.value.code == ErrorCode.NOT_FOUND and store.attempts == 0
    blocked = AlwaysRaced(blocks=True)
    before, after = await apply_contact_action(blocked, "app", "alice", "bob", "block", 1)
    assert before == after and after.a_blocks_b and blocked.attempts == 0
