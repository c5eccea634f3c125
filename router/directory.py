"""Cached view of the device registry: (app, user) -> devices.

Filled from the storage worker's ``get_user`` RPC on first use; an entry is dropped when the
storage worker announces a change of that user's devices on ``dir.changed`` (payload
``<app>.<user>``), and after a TTL
as a safety net, so the router does not read the store per message.
"""

from typing import Final

from nats.aio.client import Client
from nats.aio.msg import Msg
from prometheus_client import Counter

from runtime.cache import LruCache
from runtime.rpc import RpcClient
from schemas.ids import unscoped
from schemas.rpc import DeviceInfo, GetUser, UserDevices
from schemas.subjects import DIRECTORY_CHANGED

LOOKUPS = Counter("courier_directory_lookups_total", "Device lookups", ["result"])
_HITS: Final = LOOKUPS.labels("hit")  # bound once: labels() per message costs
_MISSES: Final = LOOKUPS.labels("miss")
#: Users whose devices one router keeps (least recently used go first).
MAX_USERS: Final = 100_000


class DeviceDirectory:
    """(app, user) -> devices, cached with invalidation."""

    def __init__(self, nc: Client, rpc: RpcClient, ttl_s: float = 60.0,
                 max_users: int = MAX_USERS) -> None:
        self._nc = nc
        self._rpc = rpc
        self._cache: LruCache[tuple[str, str], list[DeviceInfo]] = LruCache(max_users, ttl_s)

    async def start(self) -> None:
        await self._nc.subscribe(DIRECTORY_CHANGED, cb=self._on_change)

    async def _on_change(self, msg: Msg) -> None:
        self._cache.drop(unscoped(msg.data.decode()))

    async def devices(self, app: str, user: str) -> list[DeviceInfo]:
        """The enabled devices of ``app``'s user (empty for an unknown user)."""
        devices = self._cache.get((app, user))
        if devices is not None:
            _HITS.inc()
            return devices
        _MISSES.inc()
        reply = await self._rpc.call("get_user", GetUser(app=app, user=user), UserDevices)
        devices = [d for d in reply.devices if not d.disabled]
        self._cache.put((app, user), devices)
        return devices
