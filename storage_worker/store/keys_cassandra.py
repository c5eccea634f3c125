"""``KeyStore`` on Cassandra, in the keyspace and session of a ``CassandraStore`` (its own
tables, created in ``open``).

- ``device_keys``, partition ``(app, user)``: a row per device with its identity keys and its
  fallback key. The first upload is ``INSERT ... IF NOT EXISTS`` (a lightweight transaction),
  so two uploads of different identity keys for one device cannot both win.
- ``one_time_keys``, partition ``(app, user, device)``: a row per key. A claim reads the first
  key and removes it with ``DELETE ... IF EXISTS``: of concurrent claims of one key exactly one
  is applied, the others read the next key and try again. The partition is bounded (a device
  holds at most ``MAX_ONE_TIME_KEYS`` keys), so its tombstones stay few. Uploads are plain
  inserts in one unlogged batch (one partition): a lightweight transaction per key contends
  with itself (50 at once time out); a key id is never uploaded again once claimed (the
  device's account publishes each key once), so an insert cannot revive a claimed key.
"""

import asyncio
from typing import Any, Final

from cassandra.query import BatchStatement, BatchType

from schemas.keys import ClaimedKey, DeviceKeys, OneTimeKey
from storage_worker.store.base import unavailable_on
from storage_worker.store.cassandra import _OUTAGE, CassandraStore, _as_future
from storage_worker.store.keys import IdentityConflict

_TABLES: Final = (
    """CREATE TABLE IF NOT EXISTS {ks}.device_keys (
        app text, user text, device text, curve25519 text, ed25519 text, signature text,
        fallback_id text, fallback_key text, fallback_signature text,
        PRIMARY KEY ((app, user), device))""",
    """CREATE TABLE IF NOT EXISTS {ks}.one_time_keys (
        app text, user text, device text, key_id text, key text, signature text,
        PRIMARY KEY ((app, user, device), key_id))""",
)
_QUERIES: Final = {
    "put_identity": "INSERT INTO {ks}.device_keys (app, user, device, curve25519, ed25519, "
                    "signature) VALUES (?, ?, ?, ?, ?, ?) IF NOT EXISTS",
    "identity": "SELECT user, device, curve25519, ed25519, signature FROM {ks}.device_keys "
                "WHERE app = ? AND user = ? AND device = ?",
    "devices": "SELECT user, device, curve25519, ed25519, signature FROM {ks}.device_keys "
               "WHERE app = ? AND user = ?",
    "add_key": "INSERT INTO {ks}.one_time_keys (app, user, device, key_id, key, signature) "
               "VALUES (?, ?, ?, ?, ?, ?)",
    "set_fallback": "UPDATE {ks}.device_keys SET fallback_id = ?, fallback_key = ?, "
                    "fallback_signature = ? WHERE app = ? AND user = ? AND device = ? IF EXISTS",
    "fallback": "SELECT fallback_id, fallback_key, fallback_signature FROM {ks}.device_keys "
                "WHERE app = ? AND user = ? AND device = ?",
    "count": "SELECT COUNT(*) FROM {ks}.one_time_keys WHERE app = ? AND user = ? AND device = ?",
    "first_key": "SELECT key_id, key, signature FROM {ks}.one_time_keys "
                 "WHERE app = ? AND user = ? AND device = ? LIMIT 1",
    "take_key": "DELETE FROM {ks}.one_time_keys WHERE app = ? AND user = ? AND device = ? "
                "AND key_id = ? IF EXISTS",
    "drop_identity": "DELETE FROM {ks}.device_keys WHERE app = ? AND user = ? AND device = ? "
                     "IF EXISTS",
    "drop_keys": "DELETE FROM {ks}.one_time_keys WHERE app = ? AND user = ? AND device = ?",
}
#: Statements that are lightweight transactions (not idempotent: never retried blindly).
_LWT: Final = frozenset({"put_identity", "set_fallback", "take_key",
                         "drop_identity"})


@unavailable_on(*_OUTAGE)
class CassandraKeyStore:
    """The key directory in ``cassandra``'s keyspace (``cassandra`` must be open first)."""

    def __init__(self, cassandra: CassandraStore) -> None:
        self._cassandra = cassandra
        self._queries: dict[str, Any] = {}

    async def open(self) -> None:
        session, ks = self._cassandra.session, self._cassandra.keyspace
        for table in _TABLES:
            await asyncio.to_thread(session.execute, table.format(ks=ks), timeout=60)
        for name, query in _QUERIES.items():
            statement = await asyncio.to_thread(session.prepare, query.format(ks=ks))
            statement.is_idempotent = name not in _LWT
            self._queries[name] = statement

    async def close(self) -> None:
        self._queries.clear()

    async def _run(self, name: str, *params: Any) -> list[Any]:
        loop = asyncio.get_running_loop()
        response = self._cassandra.session.execute_async(self._queries[name], params)
        return await _as_future(response, loop)

    async def put_identity(self, app: str, keys: DeviceKeys) -> None:
        rows = await self._run("put_identity", app, keys.user, keys.device, keys.curve25519,
                               keys.ed25519, keys.signature)
        if rows[0][0]:
            return
        held = await self.identity(app, keys.user, keys.device)
        if held is None or (held.curve25519, held.ed25519) != (keys.curve25519, keys.ed25519):
            raise IdentityConflict(f"device {keys.device!r} has other identity keys")

    async def identity(self, app: str, user: str, device: str) -> DeviceKeys | None:
        rows = await self._run("identity", app, user, device)
        return DeviceKeys(*rows[0]) if rows else None

    async def devices(self, app: str, user: str) -> list[DeviceKeys]:
        return [DeviceKeys(*row) for row in await self._run("devices", app, user)]

    async def add_one_time_keys(self, app: str, user: str, device: str,
                                keys: list[OneTimeKey]) -> int:
        if keys:  # one partition: one unlogged batch, one request
            batch = BatchStatement(batch_type=BatchType.UNLOGGED)
            for k in keys:
                batch.add(self._queries["add_key"], (app, user, device, k.key_id, k.key,
                                                     k.signature))
            batch.is_idempotent = True
            await _as_future(self._cassandra.session.execute_async(batch),
                             asyncio.get_running_loop())
        return await self.count(app, user, device)

    async def set_fallback(self, app: str, user: str, device: str, key: OneTimeKey) -> None:
        await self._run("set_fallback", key.key_id, key.key, key.signature, app, user, device)

    async def count(self, app: str, user: str, device: str) -> int:
        rows = await self._run("count", app, user, device)
        return int(rows[0][0])

    async def claim(self, app: str, user: str, device: str) -> ClaimedKey | None:
        while rows := await self._run("first_key", app, user, device):
            key_id, key, signature = rows[0]
            taken = await self._run("take_key", app, user, device, key_id)
            if taken[0][0]:
                return ClaimedKey(user, device, key_id, key, signature)
            # Lost the race for this key to another claim: read the next one.
        rows = await self._run("fallback", app, user, device)
        if not rows or rows[0][0] is None:
            return None
        return ClaimedKey(user, device, rows[0][0], rows[0][1], rows[0][2], fallback=True)

    async def remove_device(self, app: str, user: str, device: str) -> None:
        await self._run("drop_identity", app, user, device)
        await self._run("drop_keys", app, user, device)
