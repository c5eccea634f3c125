"""One archive run: per conversation, old messages to verified chunks, then purged from the
store; expired chunks out of the archive (docs/archive.md).

The order of the steps is what makes a run safe to kill at any point and to run again:

1. read the oldest messages above the conversation's mark (``ArchiveStore.archive_rows``);
2. write them as a chunk, read it back and check it (size, SHA-256, decoding, range);
3. write the index with the chunk added, read it back and compare;
4. move the mark's ``archived`` to the chunk's last position (history reads it from the
   archive from now on);
5. purge the store up to the mark, then move ``purged``.

A run killed after 2 leaves an unreferenced chunk (the next writes the same range again);
after 3, an index ahead of the mark, which the next run adopts (the chunk was verified
before the index named it); after 4, rows both in the store and in the archive (history
reads each position from one side only, so nothing shows twice), purged by the next run.
"""

import asyncio
import time
from typing import Final

import msgspec
import structlog
from prometheus_client import Counter, Histogram

from archive_worker.chunks import (
    CHUNK_TYPE,
    INDEX_TYPE,
    ArchiveIndex,
    ChunkRef,
    CorruptChunk,
    decode_chunk,
    decode_index,
    encode_chunk,
    encode_index,
    index_key,
)
from blobs.base import BlobStore
from runtime.config import ArchiveConfig
from schemas.archive import ArchiveReport
from schemas.errors import ErrorCode, ProtocolError
from storage_worker.store.base import (
    ArchivedMessage,
    ArchiveMark,
    ArchivingStore,
    RetentionPolicy,
)

log = structlog.get_logger(__name__)

DAY_MS: Final = 86_400_000

ARCHIVED = Counter("courier_archive_messages_total", "Messages moved to the archive", ["app"])
CHUNKS = Counter("courier_archive_chunks_total", "Chunks written and verified")
CHUNK_BYTES = Counter("courier_archive_bytes_total", "Compressed bytes of verified chunks")
PURGED = Counter("courier_archive_purged_total", "Archived messages purged from the store")
EXPIRED = Counter("courier_archive_expired_chunks_total",
                  "Chunks deleted because their messages passed the app's retention")
VERIFY_FAILURES = Counter("courier_archive_verify_failures_total",
                          "Chunks or indexes whose read-back did not match what was written")
RUNS = Counter("courier_archive_runs_total", "Archive runs", ["trigger", "outcome"])
RUN_SECONDS = Histogram("courier_archive_run_seconds", "Duration of archive runs",
                        buckets=(0.1, 0.5, 1, 5, 15, 60, 300, 1800, 3600))


class Archiver:
    """Runs archive passes over a store into a blob store, one at a time."""

    def __init__(self, store: ArchivingStore, blobs: BlobStore, config: ArchiveConfig,
                 retention: RetentionPolicy) -> None:
        self._store = store
        self._blobs = blobs
        self._config = config
        self._retention = retention
        self._running = asyncio.Lock()

    def age_ms(self, app: str) -> int:
        return self._config.age_days.get(app, self._config.default_age_days) * DAY_MS

    async def run(self, now: int, *, app: str | None = None, before_ts: int | None = None,
                  trigger: str = "interval") -> ArchiveReport:
        """Archive every app (or ``app``) up to its age (or ``before_ts``), then expire
        chunks past retention. Runs wait for one another."""
        if app is not None and app in self._retention.ephemeral_apps:
            raise ProtocolError(ErrorCode.INVALID, f"app {app!r} is ephemeral: never archived")
        async with self._running:
            started = time.monotonic()
            report = ArchiveReport()
            try:
                apps = [app] if app is not None else await self._store.message_apps()
                for name in apps:
                    if name in self._retention.ephemeral_apps:
                        continue
                    cutoff = before_ts if before_ts is not None else now - self.age_ms(name)
                    for conversation in await self._store.archive_candidates(name, cutoff):
                        await self._conversation(name, conversation, cutoff, report)
                await self._expire(now, app, report)
            except BaseException:
                RUNS.labels(trigger, "failed").inc()
                raise
            RUNS.labels(trigger, "ok").inc()
            RUN_SECONDS.observe(time.monotonic() - started)
            log.info("archive_run", trigger=trigger, **msgspec.structs.asdict(report))
            return report

    async def _conversation(self, app: str, conversation: str, cutoff: int,
                            report: ArchiveReport) -> None:
        store = self._store
        mark = await store.archive_mark(app, conversation)
        rows = await self._rows(app, conversation, mark.archived, cutoff)
        if not rows and mark.purged >= mark.archived:
            return
        index = decode_index(await self._blobs.get_object(index_key(app, conversation)),
                             app, conversation)
        if index.through > mark.archived:  # a run stopped between the index and the mark
            mark = ArchiveMark(archived=index.through, purged=mark.purged)
            await store.set_archive_mark(app, conversation, mark)
            rows = await self._rows(app, conversation, mark.archived, cutoff)
        report.conversations += 1
        mark = await self._purge(app, conversation, mark, report)
        while rows:
            ref = await self._write_chunk(app, conversation, rows)
            index.chunks.append(ref)
            index.through = ref.last
            await self._write_index(index)
            mark = ArchiveMark(archived=ref.last, purged=mark.purged)
            await store.set_archive_mark(app, conversation, mark)
            ARCHIVED.labels(app).inc(ref.count)
            CHUNKS.inc()
            CHUNK_BYTES.inc(ref.size)
            report.messages += ref.count
            report.chunks += 1
            report.bytes += ref.size
            log.info("archive_chunk", app=app, conversation=conversation, first=ref.first,
                     last=ref.last, count=ref.count, bytes=ref.size)
            mark = await self._purge(app, conversation, mark, report)
            rows = await self._rows(app, conversation, mark.archived, cutoff)

    async def _rows(self, app: str, conversation: str, after: int,
                    cutoff: int) -> list[ArchivedMessage]:
        """The next chunk's messages: at most ``chunk_messages``, and ``chunk_bytes`` of
        bodies unless the first alone is larger."""
        rows = await self._store.archive_rows(app, conversation, after, cutoff,
                                              self._config.chunk_messages)
        size = 0
        for count, row in enumerate(rows):
            envelope = row.envelope
            size += len(envelope.body or b"") + sum(map(len, (envelope.payloads or {}).values()))
            if size > self._config.chunk_bytes and count > 0:
                return rows[:count]
        return rows

    async def _write_chunk(self, app: str, conversation: str,
                           rows: list[ArchivedMessage]) -> ChunkRef:
        data, ref = encode_chunk(app, conversation, rows)
        await self._blobs.put_object(ref.key, data, CHUNK_TYPE)
        back = await self._blobs.get_object(ref.key)
        try:
            decode_chunk(back or b"", ref)
        except CorruptChunk:
            VERIFY_FAILURES.inc()
            raise
        return ref

    async def _write_index(self, index: ArchiveIndex) -> None:
        key = index_key(index.app, index.conversation)
        data = encode_index(index)
        await self._blobs.put_object(key, data, INDEX_TYPE)
        if await self._blobs.get_object(key) != data:
            VERIFY_FAILURES.inc()
            raise CorruptChunk(f"{key}: the index read back is not what was written")

    async def _purge(self, app: str, conversation: str, mark: ArchiveMark,
                     report: ArchiveReport) -> ArchiveMark:
        if mark.purged >= mark.archived:
            return mark
        removed = await self._store.purge_archived(app, conversation, mark.archived)
        mark = ArchiveMark(archived=mark.archived, purged=mark.archived)
        await self._store.set_archive_mark(app, conversation, mark)
        PURGED.inc(removed)
        report.purged += removed
        return mark

    async def _expire(self, now: int, app: str | None, report: ArchiveReport) -> None:
        """Drop chunks whose newest message is past its app's retention: the index first
        (from its oldest end), then the objects (a run killed between leaves objects that
        nothing references; the index never names a deleted one)."""
        for name, conversation in await self._store.archived_conversations():
            if app is not None and name != app:
                continue
            cutoff = now - self._retention.days_for(name) * DAY_MS
            key = index_key(name, conversation)
            index = decode_index(await self._blobs.get_object(key), name, conversation)
            expired = 0
            while expired < len(index.chunks) and index.chunks[expired].newest_ts < cutoff:
                expired += 1
            if not expired:
                continue
            gone, index.chunks = index.chunks[:expired], index.chunks[expired:]
            await self._write_index(index)
            for ref in gone:
                await self._blobs.delete(ref.key)
            EXPIRED.inc(expired)
            report.expired_chunks += expired
            log.info("archive_expired", app=name, conversation=conversation, chunks=expired)
