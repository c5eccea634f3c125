"""Contact writes racing each other end in one consistent state.

On Cassandra the two writers are two store instances on one keyspace, each with its own
cluster connection, as two storage workers would be: nothing in the process serializes them,
only the database's compare-and-set. On SQLite (one file, one writer process) they are two
tasks on the same store.
"""

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from schemas.errors import ErrorCode, ProtocolError
from storage_worker.contacts import CONTACT_RACES, apply_contact_action
from storage_worker.store.social import SocialStore
from storage_worker.store.social_factory import create_social_store
from tests.contract.conftest import BACKENDS, message_store
from tests.harness import fresh_keyspace

APP = "app"
NOW = 1_800_000_000_000
PAIRS = 12


@pytest.fixture(params=BACKENDS)
async def writers(request: pytest.FixtureRequest,
                  tmp_path: Path) -> AsyncIterator[tuple[SocialStore, SocialStore]]:
    keyspace = fresh_keyspace()
    stores = [message_store(request, tmp_path / "social.db", keyspace)]
    if request.param == "cassandra":
        stores.append(message_store(request, tmp_path / "social.db", keyspace))
    socials: list[SocialStore] = []
    try:
        for store in stores:
            await store.open()
            social = create_social_store(store)
            await social.open()
            socials.append(social)
        yield socials[0], socials[-1]
    finally:
        for social in socials:
            await social.close()
        for store in stores:
            await store.close()


def races() -> float:
    return CONTACT_RACES._value.get()


async def assert_consistent(social: SocialStore, a: str, b: str, state: str) -> None:
    """Both users see the same relation, in ``relation`` and in their contact lists."""
    mine, theirs = await social.relation(APP, a, b), await social.relation(APP, b, a)
    assert mine.seen_by(b) == theirs and mine.state == state
    listed = {(e.user, e.state) for e in await social.contacts(APP, a)}
    assert listed == (set() if state == "none" else {(b, state)})


async def test_crossed_requests_become_one_contact(
        writers: tuple[SocialStore, SocialStore]) -> None:
    """Alice asks bob while bob asks alice, on two writers: one request lands first, the
    other writer meets it, decides again and accepts. Without the compare-and-set both
    would write "outgoing" over each other's request."""
    first, second = writers
    before = races()
    await asyncio.gather(*(
        write for index in range(PAIRS) for write in (
            apply_contact_action(first, APP, f"a{index}", f"b{index}", "request", NOW),
            apply_contact_action(second, APP, f"b{index}", f"a{index}", "request", NOW))))
    for index in range(PAIRS):
        for social in writers:
            await assert_consistent(social, f"a{index}", f"b{index}", "contact")
    assert races() > before  # the race did happen and was decided again


async def test_accept_racing_cancel_has_one_winner(
        writers: tuple[SocialStore, SocialStore]) -> None:
    """Bob accepts alice's request while alice cancels it: exactly one succeeds, the other
    gets ``not_found``, and both sides agree on the winner's result."""
    first, second = writers
    for index in range(PAIRS):
        await apply_contact_action(first, APP, f"a{index}", f"b{index}", "request", NOW)
    before = races()
    results = await asyncio.gather(*(
        write for index in range(PAIRS) for write in (
            apply_contact_action(first, APP, f"b{index}", f"a{index}", "accept", NOW + 1),
            apply_contact_action(second, APP, f"a{index}", f"b{index}", "cancel", NOW + 1))),
        return_exceptions=True)
    for index in range(PAIRS):
        accepted, cancelled = results[2 * index], results[2 * index + 1]
        failed = [r for r in (accepted, cancelled) if isinstance(r, BaseException)]
        assert len(failed) == 1, (accepted, cancelled)
        assert isinstance(failed[0], ProtocolError) and failed[0].code == ErrorCode.NOT_FOUND
        state = "none" if failed[0] is accepted else "contact"
        for social in writers:
            await assert_consistent(social, f"a{index}", f"b{index}", state)
    assert races() > before
