"""``KeyStore`` on SQLite, in the database of a ``SqliteStore`` (its own tables, created in
``open``). Writes go through ``SqliteStore.atomic`` (one transaction at a time), so a claim's
``DELETE ... RETURNING`` is atomic against every other claim."""

import sqlite3
from typing import Final

from schemas.keys import ClaimedKey, DeviceKeys, OneTimeKey
from storage_worker.store.base import unavailable_on
from storage_worker.store.keys import IdentityConflict
from storage_worker.store.sqlite import SqliteStore

_TABLES: Final = """
CREATE TABLE IF NOT EXISTS device_keys (
    app TEXT NOT NULL, user TEXT NOT NULL, device TEXT NOT NULL,
    curve25519 TEXT NOT NULL, ed25519 TEXT NOT NULL, signature TEXT NOT NULL,
    fallback_id TEXT, fallback_key TEXT, fallback_signature TEXT,
    PRIMARY KEY (app, user, device));
CREATE TABLE IF NOT EXISTS one_time_keys (
    app TEXT NOT NULL, user TEXT NOT NULL, device TEXT NOT NULL, key_id TEXT NOT NULL,
    key TEXT NOT NULL, signature TEXT NOT NULL,
    PRIMARY KEY (app, user, device, key_id));
"""


@unavailable_on(sqlite3.OperationalError)
class SqliteKeyStore:
    """The key directory in the file of ``sqlite`` (opened and closed by its owner)."""

    def __init__(self, sqlite: SqliteStore) -> None:
        self._sqlite = sqlite

    async def open(self) -> None:
        async with self._sqlite.atomic() as db:
            await db.executescript(_TABLES)

    async def close(self) -> None:
        """Nothing of its own to close."""

    async def put_identity(self, app: str, keys: DeviceKeys) -> None:
        async with self._sqlite.atomic() as db:
            await db.execute(
                "INSERT INTO device_keys (app, user, device, curve25519, ed25519, signature) "
                "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                (app, keys.user, keys.device, keys.curve25519, keys.ed25519, keys.signature))
            async with db.execute(
                    "SELECT curve25519, ed25519 FROM device_keys "
                    "WHERE app = ? AND user = ? AND device = ?",
                    (app, keys.user, keys.device)) as cur:
                row = await cur.fetchone()
        if row is None or tuple(row) != (keys.curve25519, keys.ed25519):
            raise IdentityConflict(f"device {keys.device!r} has other identity keys")

    async def identity(self, app: str, user: str, device: str) -> DeviceKeys | None:
        async with self._sqlite.db.execute(
                "SELECT user, device, curve25519, ed25519, signature FROM device_keys "
                "WHERE app = ? AND user = ? AND device = ?", (app, user, device)) as cur:
            row = await cur.fetchone()
        return None if row is None else DeviceKeys(*row)

    async def devices(self, app: str, user: str) -> list[DeviceKeys]:
        async with self._sqlite.db.execute(
                "SELECT user, device, curve25519, ed25519, signature FROM device_keys "
                "WHERE app = ? AND user = ? ORDER BY device", (app, user)) as cur:
            return [DeviceKeys(*row) for row in await cur.fetchall()]

    async def add_one_time_keys(self, app: str, user: str, device: str,
                                keys: list[OneTimeKey]) -> int:
        async with self._sqlite.atomic() as db:
            await db.executemany(
                "INSERT INTO one_time_keys (app, user, device, key_id, key, signature) "
                "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                [(app, user, device, k.key_id, k.key, k.signature) for k in keys])
        return await self.count(app, user, device)

    async def set_fallback(self, app: str, user: str, device: str, key: OneTimeKey) -> None:
        async with self._sqlite.atomic() as db:
            await db.execute(
                "UPDATE device_keys SET fallback_id = ?, fallback_key = ?, "
                "fallback_signature = ? WHERE app = ? AND user = ? AND device = ?",
                (key.key_id, key.key, key.signature, app, user, device))

    async def count(self, app: str, user: str, device: str) -> int:
        async with self._sqlite.db.execute(
                "SELECT COUNT(*) FROM one_time_keys WHERE app = ? AND user = ? AND device = ?",
                (app, user, device)) as cur:
            row = await cur.fetchone()
        return int(row[0]) if row else 0

    async def claim(self, app: str, user: str, device: str) -> ClaimedKey | None:
        async with self._sqlite.atomic() as db:
            async with db.execute(
                    "DELETE FROM one_time_keys WHERE rowid = (SELECT rowid FROM one_time_keys "
                    "WHERE app = ? AND user = ? AND device = ? ORDER BY key_id LIMIT 1) "
                    "RETURNING key_id, key, signature", (app, user, device)) as cur:
                row = await cur.fetchone()
            if row is not None:
                return ClaimedKey(user, device, row[0], row[1], row[2])
            async with db.execute(
                    "SELECT fallback_id, fallback_key, fallback_signature FROM device_keys "
                    "WHERE app = ? AND user = ? AND device = ? AND fallback_id IS NOT NULL",
                    (app, user, device)) as cur:
                row = await cur.fetchone()
        return None if row is None else ClaimedKey(user, device, row[0], row[1], row[2],
                                                   fallback=True)

    async def remove_device(self, app: str, user: str, device: str) -> None:
        async with self._sqlite.atomic() as db:
            for table in ("device_keys", "one_time_keys"):
                await db.execute(f"DELETE FROM {table} WHERE app = ? AND user = ? AND device = ?",
                                 (app, user, device))
