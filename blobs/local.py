"""Blobs as files on local disk (embedded mode), behind gateway URLs signed with HMAC-SHA256.

An upload URL signs the method, key, expiry, size and content type; a download URL the method,
key and expiry. The gateway's ``/v1/media/local/...`` routes (``gateway.http.media_rest``) check the
signature before they touch a file: a changed or late URL is 403, a body of another size or
type is refused as S3 refuses it. Files are written to a temporary name and renamed, so a
reader never sees half an upload.

Multipart uploads keep their parts under ``<root>/.multipart/<app>/<blob>/<upload id>/<n>``
(app ids hold no dot, so no app is named ``.multipart``); a part URL signs the upload, the
part number, the expiry and the size, and its response carries the part's ETag (the MD5 of
its bytes, as S3's). Completion checks what S3 checks (every listed part present with its
ETag, ascending, none but the last under ``MIN_PART_BYTES``) while it concatenates the parts
into a temporary file, renamed into place at the end; then the parts directory goes.
"""

import asyncio
import hashlib
import hmac
import os
import secrets
import shutil
import time
import urllib.parse
from pathlib import Path
from typing import Final

from aiohttp import web

from blobs.base import PresignedUpload
from schemas.errors import ErrorCode, ProtocolError
from schemas.media import MIN_PART_BYTES

#: Bytes read from the request per write to disk.
CHUNK: Final = 256 * 1024
ROUTE_PREFIX: Final = "/v1/media/local"
#: The directory of multipart uploads under the root.
MULTIPART_DIR: Final = ".multipart"


class LocalBlobStore:
    """Files under ``root`` (``<root>/<app>/<blob>``); URLs under ``base_url``."""

    def __init__(self, root: Path, secret: bytes, base_url: str = "") -> None:
        self.root = root
        self._secret = secret
        #: Where the gateway serving the URLs listens (set once its port is known).
        self.base_url = base_url.rstrip("/")

    async def open(self) -> None:
        await asyncio.to_thread(self.root.mkdir, parents=True, exist_ok=True)

    async def close(self) -> None:
        return None

    # ------------------------------------------------------------------ signing

    def _sign(self, *parts: object) -> str:
        message = "\n".join(str(part) for part in parts).encode()
        return hmac.new(self._secret, message, hashlib.sha256).hexdigest()

    def _url(self, key: str, query: dict[str, str]) -> str:
        return f"{self.base_url}{ROUTE_PREFIX}/{key}?{urllib.parse.urlencode(query)}"

    def upload(self, key: str, size: int, content_type: str, expires_s: int) -> PresignedUpload:
        expires = int(time.time()) + expires_s
        sig = self._sign("PUT", key, expires, size, content_type)
        return PresignedUpload(method="PUT", url=self._url(key, {
            "expires": str(expires), "size": str(size), "type": content_type, "sig": sig}),
            headers={"Content-Type": content_type})

    def download_url(self, key: str, expires_s: int) -> str:
        expires = int(time.time()) + expires_s
        return self._url(key, {"expires": str(expires), "sig": self._sign("GET", key, expires)})

    def _check(self, sig: str, expires: int, *parts: object) -> None:
        if not hmac.compare_digest(sig, self._sign(*parts)):
            raise ProtocolError(ErrorCode.FORBIDDEN, "the URL's signature does not match")
        if expires < time.time():
            raise ProtocolError(ErrorCode.FORBIDDEN, "the URL has expired")

    # ------------------------------------------------------------------ serving

    def _path(self, key: str) -> Path:
        app, _, blob = key.partition("/")
        return self.root / app / blob

    async def receive(self, request: web.Request, key: str, *, expires: int, size: int,
                      content_type: str, sig: str) -> None:
        """Store the body of a signed PUT: exactly ``size`` bytes of ``content_type``."""
        self._check(sig, expires, "PUT", key, expires, size, content_type)
        if request.content_type != content_type:
            raise ProtocolError(ErrorCode.FORBIDDEN, f"Content-Type must be {content_type}, "
                                "as signed")
        await self._write(request, self._path(key), size)

    async def receive_part(self, request: web.Request, key: str, *, upload: str, part: int,
                           expires: int, size: int, sig: str) -> str:
        """Store the body of a signed part PUT (exactly ``size`` bytes); the part's ETag."""
        self._check(sig, expires, "PUT-PART", key, upload, part, expires, size)
        directory = self._parts(key, upload)
        if not await asyncio.to_thread(directory.is_dir):
            raise ProtocolError(ErrorCode.NOT_FOUND, "no such multipart upload")
        return f'"{await self._write(request, directory / str(part), size)}"'

    async def _write(self, request: web.Request, path: Path, size: int) -> str:
        """Write the body (exactly ``size`` bytes) to ``path`` atomically; its MD5 (hex)."""
        if request.content_length is not None and request.content_length != size:
            raise ProtocolError(ErrorCode.TOO_LARGE if request.content_length > size
                                else ErrorCode.INVALID,
                                f"the body must be {size} bytes, as signed")
        await asyncio.to_thread(path.parent.mkdir, parents=True, exist_ok=True)
        partial = path.with_name(f".{path.name}.{os.getpid()}.{id(request)}")
        digest = hashlib.md5(usedforsecurity=False)
        try:
            fh = await asyncio.to_thread(partial.open, "wb")
            written = 0
            try:
                async for chunk in request.content.iter_chunked(CHUNK):
                    written += len(chunk)
                    if written > size:
                        raise ProtocolError(ErrorCode.TOO_LARGE,
                                            f"the body must be {size} bytes, as signed")
                    digest.update(chunk)
                    await asyncio.to_thread(fh.write, chunk)
            finally:
                await asyncio.to_thread(fh.close)
            if written != size:
                raise ProtocolError(ErrorCode.INVALID, f"the body must be {size} bytes, "
                                    f"as signed; {written} arrived")
            await asyncio.to_thread(os.replace, partial, path)
        finally:
            await asyncio.to_thread(partial.unlink, missing_ok=True)
        return digest.hexdigest()

    def file(self, key: str, *, expires: int, sig: str) -> Path:
        """The file a signed GET may read (``FileResponse`` serves ranges)."""
        self._check(sig, expires, "GET", key, expires)
        path = self._path(key)
        if not path.is_file():
            raise ProtocolError(ErrorCode.NOT_FOUND, "no such blob")
        return path

    # ------------------------------------------------------------------ management

    async def size_of(self, key: str) -> int | None:
        try:
            return (await asyncio.to_thread(self._path(key).stat)).st_size
        except FileNotFoundError:
            return None

    async def delete(self, key: str) -> None:
        await asyncio.to_thread(self._path(key).unlink, missing_ok=True)

    async def put_object(self, key: str, data: bytes, content_type: str) -> None:
        await asyncio.to_thread(_write_atomically, self._path(key), data)

    async def get_object(self, key: str) -> bytes | None:
        try:
            return await asyncio.to_thread(self._path(key).read_bytes)
        except FileNotFoundError:
            return None

    # ------------------------------------------------------------------ multipart

    def _parts(self, key: str, upload_id: str) -> Path:
        app, _, blob = key.partition("/")
        return self.root / MULTIPART_DIR / app / blob / upload_id

    async def create_multipart(self, key: str, content_type: str) -> str:
        upload_id = secrets.token_hex(16)
        await asyncio.to_thread(self._parts(key, upload_id).mkdir, parents=True)
        return upload_id

    def upload_part(self, key: str, upload_id: str, number: int, size: int,
                    expires_s: int) -> PresignedUpload:
        expires = int(time.time()) + expires_s
        sig = self._sign("PUT-PART", key, upload_id, number, expires, size)
        return PresignedUpload(method="PUT", url=(
            f"{self.base_url}{ROUTE_PREFIX}/{key}/parts/{number}?" + urllib.parse.urlencode({
                "upload": upload_id, "expires": str(expires), "size": str(size),
                "sig": sig})), headers={})

    async def complete_multipart(self, key: str, upload_id: str,
                                 parts: list[tuple[int, str]]) -> None:
        directory = self._parts(key, upload_id)
        if not await asyncio.to_thread(directory.is_dir):
            raise ProtocolError(ErrorCode.NOT_FOUND, "no such multipart upload")
        numbers = [number for number, _ in parts]
        if not numbers or numbers != sorted(set(numbers)):
            raise ProtocolError(ErrorCode.INVALID, "parts refused: InvalidPartOrder")
        path = self._path(key)
        await asyncio.to_thread(path.parent.mkdir, parents=True, exist_ok=True)
        partial = path.with_name(f".{path.name}.{os.getpid()}.{upload_id}")
        try:
            await asyncio.to_thread(_concatenate, directory, parts, partial)
            await asyncio.to_thread(os.replace, partial, path)
        finally:
            await asyncio.to_thread(partial.unlink, missing_ok=True)
        await asyncio.to_thread(shutil.rmtree, directory, ignore_errors=True)

    async def abort_multipart(self, key: str, upload_id: str) -> None:
        await asyncio.to_thread(shutil.rmtree, self._parts(key, upload_id), ignore_errors=True)


def _concatenate(directory: Path, parts: list[tuple[int, str]], target: Path) -> None:
    """Write the listed parts of ``directory`` to ``target`` in order, checking each one's
    presence, ETag and (all but the last) size as S3 does."""
    with target.open("wb") as out:
        for index, (number, etag) in enumerate(parts):
            part = directory / str(number)
            digest = hashlib.md5(usedforsecurity=False)
            size = 0
            try:
                with part.open("rb") as fh:
                    while chunk := fh.read(CHUNK):
                        digest.update(chunk)
                        size += len(chunk)
                        out.write(chunk)
            except FileNotFoundError:
                raise ProtocolError(ErrorCode.INVALID, "parts refused: InvalidPart") from None
            if etag.strip('"') != digest.hexdigest():
                raise ProtocolError(ErrorCode.INVALID, "parts refused: InvalidPart")
            if index < len(parts) - 1 and size < MIN_PART_BYTES:
                raise ProtocolError(ErrorCode.INVALID, "parts refused: EntityTooSmall")


def _write_atomically(path: Path, data: bytes) -> None:
    """``data`` at ``path``, through a temporary file renamed into place (fsynced first: an
    archive chunk is verified once and then trusted)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    try:
        with partial.open("wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)
