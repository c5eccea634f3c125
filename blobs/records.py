"""Blob records and per-user usage in NATS KV (``schemas.media.MEDIA_BLOBS``, ``MEDIA_USAGE``),
shared by every gateway (which creates and references blobs) and the storage worker's sweeper
(which deletes expired ones). Every change is compare-and-set on the key's revision, so two
gateways referencing one blob, or a reference racing the sweeper, never lose a write.

Keys carry the app first (``<app>.<blob>``, ``<app>.<user>``): one app never reads another's.
"""

from collections.abc import AsyncIterator
from typing import Final

import msgspec
from nats.errors import Error as NatsError
from nats.js import JetStreamContext
from nats.js.errors import (
    KeyDeletedError,
    KeyNotFoundError,
    KeyWrongLastSequenceError,
    NoKeysError,
)
from nats.js.kv import KeyValue

from runtime.kv import ensure_bucket
from schemas.errors import ErrorCode, ProtocolError
from schemas.media import MEDIA_BLOBS, MEDIA_USAGE, BlobRecord, blob_key, usage_key

_encoder: Final = msgspec.json.Encoder()
_record: Final = msgspec.json.Decoder(BlobRecord)
_int: Final = msgspec.json.Decoder(int)
#: Compare-and-set attempts before a write gives up with ``unavailable``.
CAS_ATTEMPTS: Final = 20


class QuotaExceeded(ProtocolError):
    def __init__(self, message: str) -> None:
        super().__init__(ErrorCode.CONFLICT, message)


class BlobRecords:
    """The two buckets, opened (created if missing) by ``open``."""

    def __init__(self, blobs: KeyValue, usage: KeyValue) -> None:
        self._blobs = blobs
        self._usage = usage

    @classmethod
    async def open(cls, js: JetStreamContext, replicas: int) -> "BlobRecords":
        return cls(await ensure_bucket(js, MEDIA_BLOBS, replicas),
                   await ensure_bucket(js, MEDIA_USAGE, replicas))

    async def create(self, record: BlobRecord) -> None:
        try:
            await self._blobs.create(blob_key(record.app, record.id), _encoder.encode(record))
        except NatsError as exc:
            raise ProtocolError(ErrorCode.UNAVAILABLE, f"blob not recorded: {exc!r}") from None

    async def get(self, app: str, blob: str) -> tuple[BlobRecord, int] | None:
        """The record and its revision, or None."""
        try:
            entry = await self._blobs.get(blob_key(app, blob))
        except (KeyNotFoundError, KeyDeletedError):
            return None
        except NatsError as exc:
            raise ProtocolError(ErrorCode.UNAVAILABLE, f"blobs unavailable: {exc!r}") from None
        if not entry.value or entry.revision is None:
            return None
        return _record.decode(entry.value), entry.revision

    async def replace(self, record: BlobRecord, revision: int) -> bool:
        """Write ``record`` if the key is still at ``revision``; False if it moved."""
        try:
            await self._blobs.update(blob_key(record.app, record.id), _encoder.encode(record),
                                     last=revision)
        except KeyWrongLastSequenceError:
            return False
        except NatsError as exc:
            raise ProtocolError(ErrorCode.UNAVAILABLE, f"blob not updated: {exc!r}") from None
        return True

    async def remove(self, record: BlobRecord, revision: int) -> bool:
        """Delete the record if it is still at ``revision``; False if it moved."""
        try:
            await self._blobs.delete(blob_key(record.app, record.id), last=revision)
        except KeyWrongLastSequenceError:
            return False
        return True

    async def all(self) -> AsyncIterator[tuple[BlobRecord, int]]:
        """Every record with its revision (the sweeper's walk)."""
        try:
            keys = await self._blobs.keys()
        except NoKeysError:
            return
        for key in keys:
            app, _, blob = key.partition(".")
            found = await self.get(app, blob)
            if found is not None:
                yield found

    async def usage(self, app: str, user: str) -> int:
        try:
            entry = await self._usage.get(usage_key(app, user))
        except (KeyNotFoundError, KeyDeletedError):
            return 0
        return _int.decode(entry.value) if entry.value else 0

    async def add_usage(self, app: str, user: str, delta: int, quota: int | None = None) -> int:
        """Add ``delta`` bytes to the user's usage (compare-and-set) and return the new total;
        ``QuotaExceeded`` when it would pass ``quota``. Never below zero."""
        key = usage_key(app, user)
        for _ in range(CAS_ATTEMPTS):
            try:
                try:
                    entry = await self._usage.get(key)
                    revision, current = entry.revision, _int.decode(entry.value or b"0")
                except (KeyNotFoundError, KeyDeletedError):
                    revision, current = None, 0
                total = max(current + delta, 0)
                if quota is not None and delta > 0 and total > quota:
                    raise QuotaExceeded(f"quota of {quota} bytes exceeded: {current} in use, "
                                        f"{delta} asked")
                value = _encoder.encode(total)
                if revision is None:
                    await self._usage.create(key, value)
                else:
                    await self._usage.update(key, value, last=revision)
                return total
            except KeyWrongLastSequenceError:
                continue
            except QuotaExceeded:
                raise
            except NatsError as exc:
                if "wrong last sequence" in str(exc):  # create lost the race
                    continue
                raise ProtocolError(ErrorCode.UNAVAILABLE,
                                    f"usage not updated: {exc!r}") from None
        raise ProtocolError(ErrorCode.UNAVAILABLE, "usage is contended; retry")
