"""Attachments at the gateway: upload slots, download grants, and the references a send makes.

- ``slot``: the caller must be able to write to the conversation (as a send would); the size
  is within the app's maximum, the content type allowed, the user's quota not exceeded (the
  size is reserved at once). The blob gets a record that expires after
  ``media.unreferenced_ttl_s`` unless a message references it; the storage enforces the signed
  size and type itself. A size over ``media.part_bytes`` gets a multipart slot: the storage's
  multipart upload is created at once and each part gets its own URL, signed with its size.
- ``complete``: the owner lists every part of a multipart slot with its ETag; the storage
  joins them (and checks the ETags and the order); the blob is then uploaded.
- ``abort``: the owner gives up an upload not yet referenced: a multipart upload is aborted,
  and the blob expires now, so the sweeper deletes it and gives its bytes back to the quota.
- ``attach``: a send's ``blobs`` must be the sender's, uploaded, and not expired; each is
  marked as sent in the send's conversation and kept until the message's retention ends.
- ``grant``: a presigned GET for the owner and for members (current or former) of a
  conversation the blob was sent in; for anyone else the blob does not exist (404).
"""

import secrets
import time
from typing import Final

import msgspec
import structlog
from prometheus_client import Counter

from blobs.base import BlobStore
from blobs.records import CAS_ATTEMPTS, BlobRecords
from gateway.auth import Identity
from gateway.handlers.permissions import Permissions
from runtime.config import MediaConfig, RetentionConfig
from schemas.errors import ErrorCode, ProtocolError
from schemas.media import (
    MAX_BLOB_CONVERSATIONS,
    BlobRecord,
    CompleteUpload,
    DownloadGrant,
    PartSlot,
    UploadComplete,
    UploadRequest,
    UploadSlot,
    object_key,
    part_sizes,
)

log = structlog.get_logger(__name__)

SLOTS = Counter("courier_media_slots_total", "Upload slots asked for, by outcome", ["outcome"])
SLOT_BYTES = Counter("courier_media_slot_bytes_total", "Bytes of upload slots handed out")
GRANTS = Counter("courier_media_grants_total", "Download grants asked for, by outcome",
                 ["outcome"])
ATTACHED = Counter("courier_media_attached_total", "Blobs referenced by accepted sends")
MULTIPART = Counter("courier_media_multipart_total",
                    "Multipart uploads created and completed, refused completions (by code), "
                    "uploads given up (aborted)",
                    ["outcome"])
DAY_MS: Final = 86_400_000


def now_ms() -> int:
    return int(time.time() * 1000)


class MediaService:
    """Slots, grants and references, over the blob store and the blob records."""

    def __init__(self, config: MediaConfig, retention: RetentionConfig, store: BlobStore,
                 records: BlobRecords, permissions: Permissions) -> None:
        self._config = config
        self._retention = retention
        self._store = store
        self._records = records
        self._permissions = permissions

    def retained_until(self, app: str, ts: int, expires_at: int | None) -> int:
        """When a message sent at ``ts`` leaves the store: its own expiry, else the app's
        retention."""
        if expires_at is not None:
            return expires_at
        return ts + self._retention.days.get(app, self._retention.default_days) * DAY_MS

    async def slot(self, identity: Identity, request: UploadRequest) -> UploadSlot:
        try:
            slot = await self._slot(identity, request)
        except ProtocolError as exc:
            SLOTS.labels(exc.code).inc()
            raise
        SLOTS.labels("ok").inc()
        SLOT_BYTES.inc(request.size)
        return slot

    async def _slot(self, identity: Identity, request: UploadRequest) -> UploadSlot:
        limit = self._config.max_bytes_for(identity.app)
        if request.size > limit:
            raise ProtocolError(ErrorCode.TOO_LARGE, f"size {request.size} is over this app's "
                                f"maximum of {limit} bytes")
        if not self._config.allows(request.content_type):
            raise ProtocolError(ErrorCode.INVALID, f"content type {request.content_type!r} "
                                "is not allowed here")
        await self._permissions.check_conversation(identity, request.conversation)
        await self._records.add_usage(identity.app, identity.user, request.size,
                                      quota=self._config.user_quota_bytes)
        now = now_ms()
        key_id = f"b{secrets.token_hex(16)}"
        key = object_key(identity.app, key_id)
        multipart = request.size > self._config.part_bytes
        upload_id = ""
        try:
            if multipart:
                upload_id = await self._store.create_multipart(key, request.content_type)
            record = BlobRecord(id=key_id, app=identity.app, owner=identity.user,
                                size=request.size, content_type=request.content_type,
                                created_at=now,
                                expires_at=now + self._config.unreferenced_ttl_s * 1000,
                                upload_id=upload_id,
                                part_bytes=self._config.part_bytes if multipart else 0)
            await self._records.create(record)
        except BaseException:
            await self._records.add_usage(identity.app, identity.user, -request.size)
            if upload_id:
                await self._store.abort_multipart(key, upload_id)
            raise
        ttl = self._config.url_ttl_s
        log.info("media_slot", app=identity.app, user=identity.user, blob=record.id,
                 size=request.size, multipart=multipart)
        if multipart:
            MULTIPART.labels("created").inc()
            parts = []
            for number, size in enumerate(part_sizes(request.size, record.part_bytes), 1):
                signed = self._store.upload_part(key, upload_id, number, size, ttl)
                parts.append(PartSlot(number=number, size=size, method=signed.method,
                                      url=signed.url, headers=signed.headers))
            return UploadSlot(blob=record.id, method="", url="", headers={}, size=request.size,
                              expires_at=now + ttl * 1000, part_bytes=record.part_bytes,
                              parts=parts)
        upload = self._store.upload(key, request.size, request.content_type, ttl)
        return UploadSlot(blob=record.id, method=upload.method, url=upload.url,
                          headers=upload.headers, size=request.size,
                          expires_at=now + ttl * 1000)

    async def _own(self, identity: Identity, blob: str) -> tuple[BlobRecord, int]:
        """The caller's live blob and its revision; for anyone else the same 404 as grants."""
        found = await self._records.get(identity.app, blob)
        if found is None or found[0].owner != identity.user or found[0].expires_at <= now_ms():
            raise ProtocolError(ErrorCode.NOT_FOUND, f"no blob {blob!r} for you")
        return found

    async def complete(self, identity: Identity, blob: str,
                       request: CompleteUpload) -> UploadComplete:
        try:
            done = await self._complete(identity, blob, request)
        except ProtocolError as exc:
            MULTIPART.labels(exc.code).inc()
            raise
        MULTIPART.labels("completed").inc()
        return done

    async def _complete(self, identity: Identity, blob: str,
                        request: CompleteUpload) -> UploadComplete:
        record, _ = await self._own(identity, blob)
        if not record.multipart:
            raise ProtocolError(ErrorCode.CONFLICT, f"blob {blob!r} is a single upload")
        expected = len(part_sizes(record.size, record.part_bytes))
        numbers = [part.number for part in request.parts]
        if numbers != list(range(1, expected + 1)):
            raise ProtocolError(ErrorCode.INVALID, f"list every part of the slot, 1 to "
                                f"{expected}, once each and in order")
        key = object_key(record.app, blob)
        try:
            await self._store.complete_multipart(key, record.upload_id, [
                (part.number, part.etag) for part in request.parts])
        except ProtocolError as exc:
            # completed before (a retry whose first answer was lost): the object is there
            if exc.code != ErrorCode.NOT_FOUND or await self._store.size_of(key) != record.size:
                raise
        log.info("media_completed", app=record.app, user=identity.user, blob=blob,
                 parts=expected)
        return UploadComplete(blob=blob, size=record.size)

    async def abort(self, identity: Identity, blob: str) -> None:
        for _ in range(CAS_ATTEMPTS):
            record, revision = await self._own(identity, blob)
            if record.referenced:
                raise ProtocolError(ErrorCode.CONFLICT, f"blob {blob!r} was sent: it follows "
                                    "its messages' retention")
            if record.upload_id:
                await self._store.abort_multipart(object_key(record.app, blob),
                                                  record.upload_id)
            if await self._records.replace(msgspec.structs.replace(
                    record, expires_at=now_ms()), revision):
                MULTIPART.labels("aborted").inc()
                log.info("media_aborted", app=record.app, user=identity.user, blob=blob)
                return
        raise ProtocolError(ErrorCode.UNAVAILABLE, f"blob {blob!r} is contended; retry")

    async def grant(self, identity: Identity, blob: str) -> DownloadGrant:
        found = await self._records.get(identity.app, blob)
        record = found[0] if found is not None else None
        if record is None or record.expires_at <= now_ms() or not await self._may_read(
                identity, record):
            GRANTS.labels("not_found").inc()
            raise ProtocolError(ErrorCode.NOT_FOUND, f"no blob {blob!r} for you")
        GRANTS.labels("ok").inc()
        ttl = self._config.url_ttl_s
        return DownloadGrant(blob=blob, size=record.size, content_type=record.content_type,
                             url=self._store.download_url(object_key(record.app, blob), ttl),
                             expires_at=now_ms() + ttl * 1000)

    async def _may_read(self, identity: Identity, record: BlobRecord) -> bool:
        if record.owner == identity.user:
            return True
        for conversation in record.conversations:
            try:
                await self._permissions.check_member(identity.app, identity.user, conversation)
            except ProtocolError as exc:
                if exc.code != ErrorCode.NOT_MEMBER:
                    raise
                continue
            return True
        return False

    async def attach(self, identity: Identity, blobs: list[str], conversation: str,
                     until: int) -> None:
        """Mark ``blobs`` as sent in ``conversation`` and keep them until ``until`` (ms)."""
        for blob in dict.fromkeys(blobs):
            await self._attach_one(identity, blob, conversation, until)
            ATTACHED.inc()

    async def _attach_one(self, identity: Identity, blob: str, conversation: str,
                          until: int) -> None:
        for _ in range(CAS_ATTEMPTS):
            found = await self._records.get(identity.app, blob)
            if found is None or found[0].owner != identity.user:
                raise ProtocolError(ErrorCode.FORBIDDEN, f"blob {blob!r} is not one of yours")
            record, revision = found
            if record.expires_at <= now_ms():
                raise ProtocolError(ErrorCode.INVALID, f"blob {blob!r} has expired")
            if not record.referenced and await self._store.size_of(
                    object_key(record.app, blob)) is None:
                raise ProtocolError(ErrorCode.INVALID, f"blob {blob!r} is not uploaded yet")
            conversations = list(dict.fromkeys([*record.conversations, conversation]))
            if len(conversations) > MAX_BLOB_CONVERSATIONS:
                raise ProtocolError(ErrorCode.INVALID, f"blob {blob!r} was sent in "
                                    f"{MAX_BLOB_CONVERSATIONS} conversations already")
            expires_at = max(until, record.expires_at) if record.referenced else until
            updated = msgspec.structs.replace(record, conversations=conversations,
                                              expires_at=expires_at)
            if updated == record or await self._records.replace(updated, revision):
                return
        raise ProtocolError(ErrorCode.UNAVAILABLE, f"blob {blob!r} is contended; retry")
