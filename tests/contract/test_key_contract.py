"""The key directory contract: every ``KeyStore`` backend passes every test."""

import asyncio

import pytest

from schemas.keys import DeviceKeys, OneTimeKey
from storage_worker.store.keys import IdentityConflict, KeyStore

APP = "app"
SIG = "s" * 86


def identity(device: str = "d1", user: str = "alice", curve: str = "c") -> DeviceKeys:
    return DeviceKeys(user=user, device=device, curve25519=curve * 43, ed25519="e" * 43,
                      signature=SIG)


def otk(n: int) -> OneTimeKey:
    return OneTimeKey(key_id=f"k{n:03d}", key=f"{n:043d}", signature=SIG)


async def test_identity_is_stored_and_immutable(keys: KeyStore) -> None:
    assert await keys.identity(APP, "alice", "d1") is None
    await keys.put_identity(APP, identity())
    await keys.put_identity(APP, identity())  # the same keys again: fine (uploads replay)
    with pytest.raises(IdentityConflict):
        await keys.put_identity(APP, identity(curve="x"))
    assert await keys.identity(APP, "alice", "d1") == identity()
    await keys.put_identity(APP, identity("d0"))
    assert [d.device for d in await keys.devices(APP, "alice")] == ["d0", "d1"]
    assert await keys.devices(APP, "bob") == []
    assert await keys.devices("other", "alice") == []  # the app is part of every key


async def test_one_time_keys_are_claimed_once_then_fallback(keys: KeyStore) -> None:
    await keys.put_identity(APP, identity())
    assert await keys.add_one_time_keys(APP, "alice", "d1", [otk(1), otk(2)]) == 2
    assert await keys.add_one_time_keys(APP, "alice", "d1", [otk(2)]) == 2  # replay: no dup
    first = await keys.claim(APP, "alice", "d1")
    second = await keys.claim(APP, "alice", "d1")
    assert first is not None and second is not None
    assert {first.key_id, second.key_id} == {"k001", "k002"}
    assert not first.fallback and not second.fallback
    assert await keys.count(APP, "alice", "d1") == 0
    assert await keys.claim(APP, "alice", "d1") is None  # no fallback yet
    await keys.set_fallback(APP, "alice", "d1", otk(9))
    for _ in range(2):  # the fallback key stays
        claimed = await keys.claim(APP, "alice", "d1")
        assert claimed is not None and claimed.fallback and claimed.key_id == "k009"
    assert await keys.claim(APP, "alice", "nope") is None
    assert await keys.claim("other", "alice", "d1") is None


async def test_concurrent_claims_never_share_a_key(keys: KeyStore) -> None:
    await keys.put_identity(APP, identity())
    await keys.add_one_time_keys(APP, "alice", "d1", [otk(n) for n in range(20)])
    claims = await asyncio.gather(*(keys.claim(APP, "alice", "d1") for _ in range(30)))
    ids = [c.key_id for c in claims if c is not None]
    assert len(ids) == 20 and len(set(ids)) == 20  # every key once, ten claims got none
    assert await keys.count(APP, "alice", "d1") == 0


async def test_remove_device_drops_its_keys(keys: KeyStore) -> None:
    await keys.put_identity(APP, identity())
    await keys.add_one_time_keys(APP, "alice", "d1", [otk(1)])
    await keys.set_fallback(APP, "alice", "d1", otk(9))
    await keys.remove_device(APP, "alice", "d1")
    assert await keys.identity(APP, "alice", "d1") is None
    assert await keys.count(APP, "alice", "d1") == 0
    assert await keys.claim(APP, "alice", "d1") is None
    await keys.put_identity(APP, identity(curve="x"))  # the id may be reused after removal
