"""The blob store interface: presigned upload and download URLs, multipart uploads (one signed
URL per part, then a completion), the size of what was stored, deletion. The store never sees
who may read a blob: the gateway checks that before it signs.
"""

from typing import Protocol

import msgspec


class PresignedUpload(msgspec.Struct, frozen=True):
    """An upload the storage itself will accept: ``method`` on ``url`` with exactly
    ``headers``, a body of the signed size, before the signature expires."""

    method: str
    url: str
    headers: dict[str, str]


class BlobStore(Protocol):
    """Where blob bytes live. Keys are ``<app>/<blob>`` (``schemas.media.object_key``).

    Signing is local computation (no I/O); ``size_of`` and ``delete`` talk to the storage.
    """

    async def open(self) -> None:
        """Make the store usable (create its directory or bucket if allowed)."""

    async def close(self) -> None:
        """Release connections."""

    def upload(self, key: str, size: int, content_type: str, expires_s: int) -> PresignedUpload:
        """A signed request that stores exactly ``size`` bytes of ``content_type`` at ``key``
        within ``expires_s`` seconds. The storage refuses another size, another content type,
        a changed URL or a late request (403), whatever the gateway said before."""

    def download_url(self, key: str, expires_s: int) -> str:
        """A URL that GETs ``key`` (with ``Range`` support) for ``expires_s`` seconds; a
        changed or late URL is refused (403)."""

    async def size_of(self, key: str) -> int | None:
        """The size of the object stored at ``key``, or None when nothing is stored there."""

    async def delete(self, key: str) -> None:
        """Remove ``key``; removing what is not there succeeds (the sweeper retries)."""

    async def create_multipart(self, key: str, content_type: str) -> str:
        """Start a multipart upload of ``content_type`` at ``key``; its upload id. Nothing is
        stored at ``key`` until ``complete_multipart``."""

    def upload_part(self, key: str, upload_id: str, number: int, size: int,
                    expires_s: int) -> PresignedUpload:
        """A signed request that stores part ``number`` (1 to ``schemas.media.MAX_PARTS``)
        of exactly ``size`` bytes within ``expires_s`` seconds; the response's ``ETag``
        header names the part for the completion. The storage refuses another size, a
        changed URL or a late request (403)."""

    async def complete_multipart(self, key: str, upload_id: str,
                                 parts: list[tuple[int, str]]) -> None:
        """Join the listed ``(number, etag)`` parts, in ascending order, into the object at
        ``key``. ``invalid`` when a part is missing, its ETag does not match, the list is not
        ascending or a part before the last is under ``schemas.media.MIN_PART_BYTES``;
        ``not_found`` when the upload is unknown (aborted, completed)."""

    async def abort_multipart(self, key: str, upload_id: str) -> None:
        """Drop the upload and its parts; aborting what is not there succeeds (the sweeper
        retries)."""

    async def put_object(self, key: str, data: bytes, content_type: str) -> None:
        """Store ``data`` at ``key`` from the server itself (no URL: the archive's chunks and
        indexes), replacing what was there; a reader sees the old bytes or the new, never
        part of them."""

    async def get_object(self, key: str) -> bytes | None:
        """The bytes stored at ``key``, or None when nothing is stored there."""
