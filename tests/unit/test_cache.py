"""Bounded caches: the LRU map, and the registry caches of the gateway and the router built on
it (fed by a scripted RPC client, so thousands of users cost nothing)."""

from typing import Any, cast

import pytest

from gateway.handlers.messaging import Messaging
from router.directory import DeviceDirectory
from runtime.cache import LruCache
from runtime.rpc import RpcClient
from schemas import rpc


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_the_least_recently_used_entry_goes_first() -> None:
    cache: LruCache[str, int] = LruCache(2)
    cache.put("a", 1)
    cache.put("b", 2)
    assert cache.get("a") == 1  # a is now the most recent
    cache.put("c", 3)
    assert (cache.get("a"), cache.get("b"), cache.get("c")) == (1, None, 3)
    assert len(cache) == 2


def test_entries_expire_after_the_ttl() -> None:
    clock = Clock()
    cache: LruCache[str, int] = LruCache(10, ttl_s=5.0, clock=clock)
    cache.put("a", 1)
    clock.now = 4.9
    assert cache.get("a") == 1
    clock.now = 5.0
    assert cache.get("a") is None and len(cache) == 0
    cache.put("a", 2)  # put renews
    cache.drop("a")
    assert cache.get("a") is None


def test_a_cache_holds_at_least_one_entry() -> None:
    with pytest.raises(ValueError):
        LruCache(0)


class ScriptedRpc:
    """Answers registry look-ups for any user or device."""

    def __init__(self) -> None:
        self.calls = 0

    async def call(self, op: str, request: Any, result: type, *,
                   timeout_s: float | None = None) -> Any:
        self.calls += 1
        if op == "device_owner":
            return rpc.Owner(user=f"owner-{request.device}")
        return rpc.UserDevices(exists=True, devices=[])


async def test_the_gateway_caches_of_users_and_device_owners_are_bounded() -> None:
    scripted = ScriptedRpc()
    messaging = Messaging(cast(Any, None), cast(RpcClient, scripted), "gw", cast(Any, None),
                          acks=cast(Any, None), max_cached=100)
    for i in range(1000):
        await messaging._device_owner("app", f"d{i}")
        await messaging._require_user("app", f"u{i}")
    assert len(messaging._device_owners) == 100 and len(messaging._known_users) == 100
    calls = scripted.calls
    assert await messaging._device_owner("app", "d999") == "owner-d999"  # recent: still cached
    assert scripted.calls == calls


async def test_the_router_directory_is_bounded() -> None:
    scripted = ScriptedRpc()
    directory = DeviceDirectory(cast(Any, None), cast(RpcClient, scripted), max_users=50)
    for i in range(500):
        await directory.devices("app", f"u{i}")
    assert len(directory._cache) == 50
