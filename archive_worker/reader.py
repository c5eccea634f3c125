"""History across store and archive (the storage worker's ``history`` RPC): one cursor, the
seq (position), on both sides of the seam.

Each position is read from one side only: at or below the conversation's ``archived`` mark
from the archive, above it from the store. Rows the archive holds but the store did not purge
yet (a run killed between its mark and its purge) are never shown twice, and rows a purge
removed are never missed. The mark is read before and after the store's page: when an archive
run moved it in between (and may have purged what the page expected), the page is read again.

Chunks are immutable, so decoded chunks are cached (least recently used, ``cache_chunks``);
indexes are cached too and read again when the mark is past what a cached one covers, or when
a chunk it names is gone (expired).
"""

from typing import Final

import structlog
from prometheus_client import Counter

from archive_worker.chunks import ArchiveIndex, ChunkRef, decode_chunk, decode_index, index_key
from blobs.base import BlobStore
from runtime.cache import LruCache
from schemas.envelopes import message_frame
from schemas.errors import ErrorCode, ProtocolError
from schemas.ids import direct_members
from schemas.rpc import HistoryItem
from storage_worker.store.base import ArchivedMessage, ArchivingStore

log = structlog.get_logger(__name__)

READS = Counter("courier_archive_history_pages_total",
                "History pages by where they were read", ["source"])
CACHE = Counter("courier_archive_chunk_cache_total", "Chunk reads by cache outcome", ["result"])
#: Tries of a page while archive runs keep moving the mark under it.
_TRIES: Final = 5
#: Indexes cached per chunk cached (an index is small).
_INDEXES_PER_CHUNK: Final = 16


class ArchiveReader:
    """Reads archived history of the blob store, caching chunks and indexes."""

    def __init__(self, blobs: BlobStore, cache_chunks: int) -> None:
        self._blobs = blobs
        self._chunks: LruCache[str, list[ArchivedMessage]] = LruCache(cache_chunks)
        self._indexes: LruCache[tuple[str, str], ArchiveIndex] = LruCache(
            cache_chunks * _INDEXES_PER_CHUNK)

    async def _index(self, app: str, conversation: str, through: int,
                     fresh: bool = False) -> ArchiveIndex:
        cached = None if fresh else self._indexes.get((app, conversation))
        if cached is not None and cached.through >= through:
            return cached
        index = decode_index(await self._blobs.get_object(index_key(app, conversation)),
                             app, conversation)
        self._indexes.put((app, conversation), index)
        return index

    async def _chunk(self, ref: ChunkRef) -> list[ArchivedMessage] | None:
        """The chunk's messages; None when its object is gone (expired since the index was
        read)."""
        messages = self._chunks.get(ref.key)
        if messages is not None:
            CACHE.labels("hit").inc()
            return messages
        CACHE.labels("miss").inc()
        data = await self._blobs.get_object(ref.key)
        if data is None:
            return None
        messages = decode_chunk(data, ref)
        self._chunks.put(ref.key, messages)
        return messages

    async def history(self, app: str, user: str, device: str, conversation: str,
                      before: int | None, after: int | None, limit: int, through: int,
                      others_read: int, now: int) -> list[HistoryItem]:
        """As ``MessageStore.history``, over the archived positions up to ``through``."""
        for fresh in (False, True):
            index = await self._index(app, conversation, through, fresh)
            found = await self._walk(index, user, device, before, after, limit, through,
                                     others_read, now)
            if found is not None:
                return found
        raise ProtocolError(ErrorCode.UNAVAILABLE, "the archive index names a missing chunk")

    async def _walk(self, index: ArchiveIndex, user: str, device: str, before: int | None,
                    after: int | None, limit: int, through: int, others_read: int,
                    now: int) -> list[HistoryItem] | None:
        forward = after is not None
        low = after if after is not None else 0
        high = min(through + 1, before) if before is not None else through + 1
        refs = [ref for ref in index.chunks if ref.last > low and ref.first < high]
        items: list[HistoryItem] = []
        for ref in refs if forward else reversed(refs):
            messages = await self._chunk(ref)
            if messages is None:
                return None
            for message in messages if forward else reversed(messages):
                if not low < message.seq < high:
                    continue
                item = _view(message, user, device, others_read, now)
                if item is not None:
                    items.append(item)
                    if len(items) == limit:
                        return _ascending(items)
        return _ascending(items)


def _ascending(items: list[HistoryItem]) -> list[HistoryItem]:
    return sorted(items, key=lambda item: item.message.seq)


def _view(message: ArchivedMessage, user: str, device: str, others_read: int,
          now: int) -> HistoryItem | None:
    """The message as ``user``'s ``device`` sees it in history (as the stores show it), or
    None when it is not in the user's view or has no body for the device."""
    envelope = message.envelope
    if user not in message.recipients:
        return None
    body = envelope.body_for(device)
    if body is None:
        return None
    if (envelope.sender.user == user and direct_members(envelope.conversation) is not None
            and others_read >= message.seq):
        status = "read"
    elif message.delivered_at is not None:
        status = "delivered"
    elif envelope.expires_at is not None and envelope.expires_at <= now:
        status = "expired"
    else:
        status = "sent"
    return HistoryItem(message=message_frame(envelope, message.seq, body), status=status)


async def history_page(store: ArchivingStore, archive: ArchiveReader, app: str, user: str,
                       device: str, conversation: str, before: int | None, after: int | None,
                       limit: int, now: int) -> list[HistoryItem]:
    """A page of the user's view of a conversation across store and archive, as
    ``MessageStore.history`` (ascending; the newest ``limit`` below ``before`` or the oldest
    above ``after``)."""
    for _ in range(_TRIES):
        mark = await store.archive_mark(app, conversation)
        items = await _page(store, archive, app, user, device, conversation, before, after,
                            limit, mark.archived, now)
        if await store.archive_mark(app, conversation) == mark:
            return items
    raise ProtocolError(ErrorCode.UNAVAILABLE, "the conversation is being archived; retry")


async def _page(store: ArchivingStore, archive: ArchiveReader, app: str, user: str,
                device: str, conversation: str, before: int | None, after: int | None,
                limit: int, through: int, now: int) -> list[HistoryItem]:
    if through == 0:
        READS.labels("store").inc()
        return await store.history(app, user, device, conversation, before, after, limit, now)

    async def archived(before: int | None, after: int | None, count: int) -> list[HistoryItem]:
        others_read = await store.others_read(app, user, conversation)
        return await archive.history(app, user, device, conversation, before, after, count,
                                     through, others_read, now)

    if after is not None:  # forward: the archive's part first, then the store's
        items = await archived(None, after, limit) if after < through else []
        if len(items) < limit:
            hot = await store.history(app, user, device, conversation, None,
                                      max(after, through), limit - len(items), now)
            items += hot
        READS.labels(_source(items, through)).inc()
        return items
    items = []
    if before is None or before > through + 1:
        hot = await store.history(app, user, device, conversation, before, None, limit, now)
        items = [item for item in hot if item.message.seq > through]
    if len(items) < limit:
        bound = through + 1 if before is None else min(before, through + 1)
        items = await archived(bound, None, limit - len(items)) + items
    READS.labels(_source(items, through)).inc()
    return items


def _source(items: list[HistoryItem], through: int) -> str:
    archived = sum(1 for item in items if item.message.seq <= through)
    if archived == 0:
        return "store"
    return "archive" if archived == len(items) else "both"
