"""Media (attachments): the REST bodies of upload slots (single or multipart), completions and
download grants, the blob record kept per blob, and the KV buckets that hold records and
per-user usage.

The server never sees an attachment's content: clients encrypt before they upload (see
docs/media.md). What it keeps per blob is its owner, size, declared content type, when it was
made, the conversations it was sent in and when it expires.
"""

from typing import Annotated, Final

import msgspec

from schemas.bounds import Count
from schemas.buckets import BucketSpec
from schemas.ids import ConversationId

#: A blob id: ``b`` and 32 hex digits, random.
BLOB_ID_PATTERN: Final = r"^b[0-9a-f]{32}$"
BlobId = Annotated[str, msgspec.Meta(pattern=BLOB_ID_PATTERN, description="A blob id.")]
#: Smallest part of a multipart upload but the last (S3's minimum: a completion with a smaller
#: part before the last is refused).
MIN_PART_BYTES: Final = 5 * 1024**2
#: Largest part, and largest single upload (S3's largest PUT).
MAX_PART_BYTES: Final = 5 * 1024**3
#: Most parts of one multipart upload (S3's limit); part numbers are 1 to this.
MAX_PARTS: Final = 10_000
#: Blobs one message may reference (a file and its thumbnail, an album).
MAX_MESSAGE_BLOBS: Final = 16
#: Conversations one blob may be sent in (forwarding); past it a send is refused.
MAX_BLOB_CONVERSATIONS: Final = 64
#: A MIME type as ``type/subtype`` (parameters are not taken).
ContentType = Annotated[str, msgspec.Meta(
    pattern=r"^[a-z0-9][a-z0-9!#$&^_.+\-]{0,63}/[a-z0-9][a-z0-9!#$&^_.+\-]{0,126}$",
    description="MIME type of the stored object, `type/subtype` in lowercase.")]

MEDIA_BLOBS: Final = BucketSpec(
    name="courier_media_blobs",
    description="Blob records: <app>.<blob> -> BlobRecord (JSON).",
)
MEDIA_USAGE: Final = BucketSpec(
    name="courier_media_usage",
    description="Bytes of live blobs per user: <app>.<user> -> integer (JSON).",
)


class UploadRequest(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """Ask for an upload slot: the exact size of the (encrypted) object, its content type and
    the conversation it is meant for (the caller must be able to write to it)."""

    size: Annotated[int, msgspec.Meta(ge=1, le=2**63 - 1)]
    content_type: ContentType
    conversation: ConversationId


PartNumber = Annotated[int, msgspec.Meta(ge=1, le=MAX_PARTS,
                                          description="A part number, 1 to 10,000.")]
#: A part's ETag as the storage returned it (quoted or not): 32 hex digits.
ETag = Annotated[str, msgspec.Meta(pattern=r'^"?[0-9a-f]{32}"?$',
                                   description="The part's ETag from its upload's response.")]


class PartSlot(msgspec.Struct, frozen=True):
    """One part of a multipart slot: ``method`` on ``url`` with ``headers`` and a body of
    exactly ``size`` bytes (the file's bytes from ``(number - 1) * part_bytes``)."""

    number: PartNumber
    size: Count
    method: str
    url: str
    headers: dict[str, str]


class UploadSlot(msgspec.Struct, frozen=True):
    """Where to upload: send ``method`` to ``url`` with exactly these ``headers`` and a body
    of exactly ``size`` bytes before ``expires_at`` (ms). The storage refuses anything else.

    A multipart slot (``size`` over ``media.part_bytes``) has ``parts`` instead, each of
    ``part_bytes`` but the last, and an empty ``method`` and ``url``: upload every part, then
    ``POST /v1/media/uploads/{blob}/complete`` with their ETags."""

    blob: BlobId
    method: str
    url: str
    headers: dict[str, str]
    size: Count
    expires_at: Count
    part_bytes: Count = 0
    parts: list[PartSlot] = []


class CompletedPart(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    number: PartNumber
    etag: ETag


class CompleteUpload(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """Finish a multipart upload: every part of the slot, in ascending order, with the ETag
    its upload returned."""

    parts: Annotated[list[CompletedPart], msgspec.Meta(min_length=1, max_length=MAX_PARTS)]


class UploadComplete(msgspec.Struct, frozen=True):
    """The blob is stored (``size`` bytes) and may be referenced by a send."""

    blob: BlobId
    size: Count


class DownloadGrant(msgspec.Struct, frozen=True):
    """A short-lived URL to GET the blob (``Range`` requests work) until ``expires_at``."""

    blob: BlobId
    url: str
    size: Count
    content_type: str
    expires_at: Count


class BlobRecord(msgspec.Struct, frozen=True):
    """What the server knows of one blob (KV ``courier_media_blobs``). ``expires_at``: when
    the sweeper deletes it: the upload deadline of an unreferenced blob, else the end of the
    retention of the newest message that references it."""

    id: str
    app: str
    owner: str
    size: Count
    content_type: str
    created_at: Count
    expires_at: Count
    conversations: list[str] = []
    #: The storage's id of the blob's multipart upload (empty: a single upload); the sweeper
    #: aborts it, which leaves a completed upload's object alone.
    upload_id: str = ""
    #: Bytes of each part but the last of a multipart upload (0: a single upload).
    part_bytes: Count = 0

    @property
    def referenced(self) -> bool:
        return bool(self.conversations)

    @property
    def multipart(self) -> bool:
        return bool(self.upload_id)


def part_sizes(size: int, part_bytes: int) -> list[int]:
    """The sizes of the parts of a ``size``-byte object cut every ``part_bytes``."""
    full, rest = divmod(size, part_bytes)
    return [part_bytes] * full + ([rest] if rest else [])


def blob_key(app: str, blob: str) -> str:
    """The blob's key in the record bucket and, with ``/``, in the blob store."""
    return f"{app}.{blob}"


def object_key(app: str, blob: str) -> str:
    """The blob's object key in the blob store: the app first."""
    return f"{app}/{blob}"


def usage_key(app: str, user: str) -> str:
    return f"{app}.{user}"
