"""The archive worker's request/reply subject (docs/archive.md).

``archive.run`` (JSON, queue group ``archive``): run the archive now, for one app or all,
optionally archiving everything older than ``before_ts`` instead of the configured age. The
admin REST route ``POST /v1/admin/archive`` sends the same request. Replies are JSON
``{"r": "ok", "value": <ArchiveReport>}`` or ``{"r": "failed", "code": ..., "message": ...}``;
a run already going is waited for, then this one runs.
"""

from typing import Annotated, Final

import msgspec

from schemas.ids import AppId

#: Request/reply subject of on-request archive runs (JSON).
ARCHIVE_RUN: Final = "archive.run"
#: Queue group of the archive workers serving ``archive.run``.
ARCHIVE_QUEUE: Final = "archive"
#: Largest ``before_ts`` a request may name (ms; JSON-safe integers).
MAX_TS: Final = 2**53 - 1
#: Largest ``archive.run`` request in bytes.
MAX_REQUEST_BYTES: Final = 4096


class ArchiveRunRequest(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    """Archive now: ``app`` (every app when omitted; an ephemeral app is refused, it is never
    archived); messages older than ``before_ts`` (ms since the epoch; default: the app's
    configured age before now)."""

    app: AppId | None = None
    before_ts: Annotated[int, msgspec.Meta(ge=0, le=MAX_TS)] | None = None


class ArchiveReport(msgspec.Struct):
    """What one run did."""

    conversations: int = 0
    messages: int = 0
    chunks: int = 0
    bytes: int = 0
    purged: int = 0
    expired_chunks: int = 0
