"""The archiver and the read-through in process, on a real SQLite store and real local blob
files: retention expires chunks (the index first), ephemeral apps are never archived, a run
stopped between the index and the mark is adopted by the next (no second chunk), history
pages across the seam from every bound, a user sees in the archive only what was in their
inbox (group history from join), a corrupt chunk is refused, the chunk cache is bounded."""

import gzip
import hashlib
import secrets
from collections.abc import AsyncIterator
from pathlib import Path

import msgspec
import pytest

from archive_worker.archiver import DAY_MS, Archiver
from archive_worker.chunks import (
    CorruptChunk,
    decode_chunk,
    decode_index,
    encode_chunk,
    index_key,
)
from archive_worker.reader import ArchiveReader, history_page
from blobs.local import LocalBlobStore
from runtime.config import ArchiveConfig
from schemas.envelopes import MessageEnvelope
from schemas.errors import ErrorCode, ProtocolError
from schemas.frames import Destination, Sender
from schemas.ids import direct_conversation
from storage_worker.store.base import (
    ArchivedMessage,
    ArchiveMark,
    RetentionPolicy,
    StoredMessage,
)
from storage_worker.store.sqlite import SqliteStore

APP = "app"
NOW = 1_800_000_000_000
AB = direct_conversation("alice", "bob")
GROUP = "g:team"
RETENTION = RetentionPolicy(default_days=30, days={}, ephemeral_apps=frozenset({"eph"}))


def message(seq: int, ts: int, *, app: str = APP, conversation: str = AB,
            recipients: tuple[str, ...] = ("alice", "bob")) -> StoredMessage:
    to = (Destination(kind="group", id="team") if conversation == GROUP
          else Destination(kind="user", id="bob"))
    return StoredMessage(seq=seq, recipients=list(recipients), envelope=MessageEnvelope(
        id=f"{app}-{conversation}-{seq}", kind="chat", app=app, module="chat",
        sender=Sender(user="alice", device="a1"), to=to, conversation=conversation, ts=ts,
        receipt=True, body=f"b{seq}".encode()))


@pytest.fixture
async def parts(tmp_path: Path) -> AsyncIterator[tuple[SqliteStore, LocalBlobStore]]:
    store = SqliteStore(tmp_path / "store.db")
    blobs = LocalBlobStore(tmp_path / "blobs", secrets.token_bytes(32))
    await store.open()
    await blobs.open()
    try:
        yield store, blobs
    finally:
        await store.close()


def archiver(store: SqliteStore, blobs: LocalBlobStore, chunk: int = 10) -> Archiver:
    return Archiver(store, blobs, ArchiveConfig(default_age_days=7, chunk_messages=chunk),
                    RETENTION)


async def page(store: SqliteStore, reader: ArchiveReader, user: str, *,
               before: int | None = None, after: int | None = None,
               limit: int = 1000, conversation: str = AB) -> list[int]:
    items = await history_page(store, reader, APP, user, "d1", conversation, before, after,
                               limit, NOW)
    return [item.message.seq for item in items]


async def test_pages_across_the_seam_from_every_bound(
        parts: tuple[SqliteStore, LocalBlobStore]) -> None:
    store, blobs = parts
    await store.append([message(seq, NOW - 10 * DAY_MS) for seq in range(1, 31)]
                       + [message(seq, NOW) for seq in range(31, 46)])
    report = await archiver(store, blobs).run(NOW)
    assert (report.messages, report.chunks, report.purged) == (30, 3, 30)
    assert await store.archive_mark(APP, AB) == ArchiveMark(archived=30, purged=30)
    reader = ArchiveReader(blobs, 2)
    everything = list(range(1, 46))
    assert await page(store, reader, "bob") == everything
    for bound in range(0, 47):
        for limit in (1, 4, 11):
            below = [seq for seq in everything if seq < bound][-limit:]
            above = [seq for seq in everything if seq > bound][:limit]
            assert await page(store, reader, "bob", before=bound, limit=limit) == below
            assert await page(store, reader, "bob", after=bound, limit=limit) == above
    assert await page(store, reader, "carol") == []
    assert len(reader._chunks) == 2  # bounded: the least recently used chunk went


async def test_group_history_from_join_holds_in_the_archive(
        parts: tuple[SqliteStore, LocalBlobStore]) -> None:
    store, blobs = parts
    early = [message(seq, NOW - 10 * DAY_MS, conversation=GROUP) for seq in range(1, 6)]
    late = [message(seq, NOW - 10 * DAY_MS, conversation=GROUP,
                    recipients=("alice", "bob", "dave")) for seq in range(6, 11)]
    await store.append(early + late)
    await archiver(store, blobs).run(NOW)
    reader = ArchiveReader(blobs, 4)
    assert await page(store, reader, "bob", conversation=GROUP) == list(range(1, 11))
    assert await page(store, reader, "dave", conversation=GROUP) == list(range(6, 11))
    assert await page(store, reader, "dave", conversation=GROUP, after=0, limit=3) == [6, 7, 8]


async def test_chunks_expire_with_the_apps_retention(
        parts: tuple[SqliteStore, LocalBlobStore]) -> None:
    store, blobs = parts
    await store.append([message(seq, NOW - 40 * DAY_MS) for seq in range(1, 11)]
                       + [message(seq, NOW - 20 * DAY_MS) for seq in range(11, 21)])
    first = await archiver(store, blobs).run(NOW - 15 * DAY_MS)  # archived 15 days ago
    assert first.messages == 10 and first.expired_chunks == 0  # 25 days old then
    second = await archiver(store, blobs).run(NOW)  # now past 30 days: the first chunk goes
    assert second.messages == 10 and second.expired_chunks == 1
    index = decode_index(await blobs.get_object(index_key(APP, AB)), APP, AB)
    assert [(ref.first, ref.last) for ref in index.chunks] == [(11, 20)]
    assert index.through == 20
    reader = ArchiveReader(blobs, 4)
    assert await page(store, reader, "bob") == list(range(11, 21))
    assert sorted(p.name for p in (blobs.root / APP).rglob("*.mpk.gz")) == [
        f"{11:020d}.mpk.gz"]


async def test_ephemeral_apps_are_never_archived(
        parts: tuple[SqliteStore, LocalBlobStore]) -> None:
    store, blobs = parts
    await store.append([message(1, NOW - 10 * DAY_MS, app="eph"),
                        message(2, NOW - 10 * DAY_MS)])
    report = await archiver(store, blobs).run(NOW)
    assert report.messages == 1
    assert len(await store.archive_rows("eph", AB, 0, NOW, 10)) == 1
    assert await store.archive_mark("eph", AB) == ArchiveMark()
    with pytest.raises(ProtocolError) as refused:
        await archiver(store, blobs).run(NOW, app="eph")
    assert refused.value.code == ErrorCode.INVALID


async def test_a_run_stopped_after_its_index_is_adopted(
        parts: tuple[SqliteStore, LocalBlobStore]) -> None:
    store, blobs = parts
    await store.append([message(seq, NOW - 10 * DAY_MS) for seq in range(1, 16)])
    stopped = archiver(store, blobs)
    rows = await store.archive_rows(APP, AB, 0, NOW, 10)
    ref = await stopped._write_chunk(APP, AB, rows)  # steps 2 and 3 of a run, then a kill
    index = decode_index(None, APP, AB)
    index.chunks.append(ref)
    index.through = ref.last
    await stopped._write_index(index)
    reader = ArchiveReader(blobs, 4)
    assert await page(store, reader, "bob") == list(range(1, 16))
    await store.set_archive_mark(APP, AB, ArchiveMark(archived=ref.last))  # step 4, not 5
    assert len(await store.archive_rows(APP, AB, 0, NOW, 100)) == 15  # in both places
    for before in (None, 16, 12, 11, 5):  # each position from one side: nothing twice
        assert await page(store, reader, "bob", before=before) == list(range(1, before or 16))
    assert await page(store, reader, "bob", after=3, limit=10) == list(range(4, 14))
    report = await archiver(store, blobs).run(NOW)
    assert (report.messages, report.chunks, report.purged) == (5, 1, 15)  # one new chunk
    index = decode_index(await blobs.get_object(index_key(APP, AB)), APP, AB)
    assert [(r.first, r.last) for r in index.chunks] == [(1, 10), (11, 15)]
    assert await page(store, reader, "bob") == list(range(1, 16))
    assert await store.archive_rows(APP, AB, 0, NOW, 100) == []


def test_a_corrupt_chunk_is_refused() -> None:
    archived = [ArchivedMessage(seq=1, envelope=message(1, NOW).envelope, recipients=["bob"])]
    data, ref = encode_chunk(APP, AB, archived)
    assert decode_chunk(data, ref) == archived
    for bad in (bytes([data[0] ^ 1]) + data[1:], data[:-1], b""):
        with pytest.raises(CorruptChunk):
            decode_chunk(bad, ref)
    other = gzip.compress(msgspec.msgpack.encode({"format": 1}), mtime=0)  # not a chunk
    with pytest.raises(CorruptChunk):
        decode_chunk(other, msgspec.structs.replace(ref, size=len(other),
                                                    sha256=hashlib.sha256(other).hexdigest()))
