"""What the archive holds in the blob store, per conversation (docs/archive.md):

- chunks ``<app>/archive/<conversation digest>/<first position>.mpk.gz``: the messages of
  one position range, MessagePack in gzip; never changed once the index names them (a run
  killed before its index named a chunk leaves an object that the next run, starting from
  the same mark, overwrites: its first position is the same);
- the index ``.../index.json``: the chunks, in position order, each with its range, count,
  byte size, SHA-256 and newest timestamp (retention drops a chunk once its newest message is
  past the app's retention).

The digest of the conversation keeps a tenant's ids out of object paths and bounds their
length; the app leads every key, as media keys (``<app>/<blob>``).
"""

import gzip
import hashlib
from typing import Final

import msgspec

from storage_worker.store.base import ArchivedMessage

#: Version of the chunk and index encodings.
FORMAT: Final = 1
CHUNK_TYPE: Final = "application/gzip"
INDEX_TYPE: Final = "application/json"


class CorruptChunk(Exception):
    """A chunk's bytes do not match its index entry (checksum, encoding or range)."""


class Chunk(msgspec.Struct):
    """The content of a chunk object (before compression)."""

    format: int
    app: str
    conversation: str
    messages: list[ArchivedMessage]


class ChunkRef(msgspec.Struct, frozen=True):
    """An index entry: a verified chunk covering positions ``first`` to ``last``."""

    key: str
    first: int
    last: int
    count: int
    size: int
    sha256: str
    newest_ts: int


class ArchiveIndex(msgspec.Struct):
    """The archive of one conversation: its chunks in position order, not overlapping."""

    app: str
    conversation: str
    chunks: list[ChunkRef] = []
    #: The last position ever archived (0: none): expired chunks leave ``chunks`` from its
    #: oldest end, and this stays.
    through: int = 0
    format: int = FORMAT


def conversation_prefix(app: str, conversation: str) -> str:
    digest = hashlib.blake2b(conversation.encode(), digest_size=16).hexdigest()
    return f"{app}/archive/{digest}"


def index_key(app: str, conversation: str) -> str:
    return f"{conversation_prefix(app, conversation)}/index.json"


def encode_chunk(app: str, conversation: str,
                 messages: list[ArchivedMessage]) -> tuple[bytes, ChunkRef]:
    """The chunk object's bytes and its index entry. Deterministic (gzip without a name or
    time), so the same messages give the same bytes."""
    raw = msgspec.msgpack.encode(Chunk(format=FORMAT, app=app, conversation=conversation,
                                       messages=messages))
    data = gzip.compress(raw, compresslevel=6, mtime=0)
    digest = hashlib.sha256(data).hexdigest()
    first, last = messages[0].seq, messages[-1].seq
    key = f"{conversation_prefix(app, conversation)}/{first:020d}.mpk.gz"
    return data, ChunkRef(key=key, first=first, last=last, count=len(messages),
                          size=len(data), sha256=digest,
                          newest_ts=max(message.envelope.ts for message in messages))


def decode_chunk(data: bytes, ref: ChunkRef) -> list[ArchivedMessage]:
    """The messages of a chunk read back; ``CorruptChunk`` unless its bytes are exactly what
    ``ref`` describes."""
    if len(data) != ref.size or hashlib.sha256(data).hexdigest() != ref.sha256:
        raise CorruptChunk(f"{ref.key}: checksum mismatch")
    try:
        chunk = msgspec.msgpack.decode(gzip.decompress(data), type=Chunk)
    except (OSError, EOFError, msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise CorruptChunk(f"{ref.key}: {exc}") from exc
    seqs = [message.seq for message in chunk.messages]
    if (chunk.format != FORMAT or len(seqs) != ref.count or not seqs
            or seqs[0] != ref.first or seqs[-1] != ref.last or seqs != sorted(set(seqs))):
        raise CorruptChunk(f"{ref.key}: content does not match its index entry")
    return chunk.messages


def encode_index(index: ArchiveIndex) -> bytes:
    return msgspec.json.encode(index)


def decode_index(data: bytes | None, app: str, conversation: str) -> ArchiveIndex:
    """The index read from storage (None: no archive yet, an empty index)."""
    if data is None:
        return ArchiveIndex(app=app, conversation=conversation)
    return msgspec.json.decode(data, type=ArchiveIndex)
