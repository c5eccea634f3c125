"""Media (attachments): the REST bodies of upload slots and download grants, the blob record
kept per blob, and the KV buckets that hold records and per-user usage.

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


class UploadSlot(msgspec.Struct, frozen=True):
    """Where to upload: send ``method`` to ``url`` with exactly these ``headers`` and a body
    of exactly ``size`` bytes before ``expires_at`` (ms). The storage refuses anything else."""

    blob: BlobId
    method: str
    url: str
    headers: dict[str, str]
    size: Count
    expires_at: Count


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

    @property
    def referenced(self) -> bool:
        return bool(self.conversations)


def blob_key(app: str, blob: str) -> str:
    """The blob's key in the record bucket and, with ``/``, in the blob store."""
    return f"{app}.{blob}"


def object_key(app: str, blob: str) -> str:
    """The blob's object key in the blob store: the app first."""
    return f"{app}/{blob}"


def usage_key(app: str, user: str) -> str:
    return f"{app}.{user}"
