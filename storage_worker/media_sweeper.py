"""The media sweeper: deletes blobs whose record expired (uploaded but never referenced within
``media.unreferenced_ttl_s``, or past the retention of the newest message that referenced
them), then their record, then gives the bytes back to the owner's quota. A multipart upload
never completed (or given up) is aborted first, so its parts go too.

It runs in the storage worker (the process that applies message retention) as an owned task,
every ``media.sweep_interval_s``. A send refuses an expired blob (``gateway.handlers.media``), so
nothing new references a blob the sweeper may delete (up to clock skew between gateways and
workers). Several storage workers may sweep at once: deleting an object twice succeeds, and a
record is removed only at the revision the sweeper read. Order matters for crashes: object
first, record second, so a crash leaves a record that the next sweep finishes, never an
object nobody knows (the quota given back last may be lost to a crash: usage then stays a
little high, never low).
"""

import time

import structlog
from prometheus_client import Counter

from blobs.base import BlobStore
from blobs.records import BlobRecords
from schemas.media import object_key

log = structlog.get_logger(__name__)

SWEPT = Counter("courier_media_swept_total", "Blobs the sweeper deleted, by why",
                ["reason"])
SWEPT_BYTES = Counter("courier_media_swept_bytes_total", "Bytes the sweeper deleted")


class MediaSweeper:
    def __init__(self, store: BlobStore, records: BlobRecords) -> None:
        self._store = store
        self._records = records

    async def sweep(self, now_ms: int | None = None) -> int:
        """Delete every blob expired at ``now_ms``; how many were deleted."""
        now = int(time.time() * 1000) if now_ms is None else now_ms
        deleted = 0
        async for record, revision in self._records.all():
            if record.expires_at > now:
                continue
            key = object_key(record.app, record.id)
            if record.multipart:  # never completed: its parts; completed: nothing
                await self._store.abort_multipart(key, record.upload_id)
            await self._store.delete(key)
            if not await self._records.remove(record, revision):
                continue  # referenced meanwhile: the next sweep sees its new expiry
            await self._records.add_usage(record.app, record.owner, -record.size)
            reason = "retention" if record.referenced else "unreferenced"
            SWEPT.labels(reason).inc()
            SWEPT_BYTES.inc(record.size)
            log.info("media_swept", app=record.app, blob=record.id, owner=record.owner,
                     size=record.size, reason=reason)
            deleted += 1
        return deleted
