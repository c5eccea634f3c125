"""``/v1/media``: upload slots, multipart completions and aborts, download grants (device
routes, module ``media``), and the signed upload (whole or part) and download URLs of the
local blob store (``/v1/media/local/...``: no token, the URL's signature is the credential;
404 when the blob store is S3). See docs/media.md."""

from typing import Final

from aiohttp import web

from blobs.local import LocalBlobStore
from gateway.auth import Identity
from gateway.handlers.media import MediaService
from gateway.http.responses import json_response
from gateway.http.routing import IdParam, IntParam
from schemas.errors import ErrorCode, ProtocolError
from schemas.ids import ID_PATTERN
from schemas.media import BLOB_ID_PATTERN, MAX_PARTS, CompleteUpload, UploadRequest

BLOB: Final = IdParam("blob", "The blob id", where="path", pattern=BLOB_ID_PATTERN,
                      label="blob id")
APP: Final = IdParam("app", "The app the blob belongs to", where="path", pattern=ID_PATTERN,
                     label="app id")
EXPIRES: Final = IntParam("expires", "When the URL expires (seconds since the epoch, signed)")
SIZE: Final = IntParam("size", "The body's exact size in bytes (signed)")
TYPE: Final = IdParam("type", "The body's content type (signed)",
                      pattern=r"^[a-z0-9][a-z0-9!#$&^_.+\-]{0,63}/[a-z0-9][a-z0-9!#$&^_.+\-]{0,126}$",
                      label="content type")
PART: Final = IntParam("part", "The part number", where="path", low=1, high=MAX_PARTS)
UPLOAD: Final = IdParam("upload", "The multipart upload id (signed)", pattern=r"^[0-9a-f]{32}$",
                        label="upload id")
SIG: Final = IdParam("sig", "HMAC-SHA256 of the request (hex)", pattern=r"^[0-9a-f]{64}$",
                     label="signature")
#: Largest JSON body of ``POST /v1/media/uploads``.
MAX_BODY: Final = 4 * 1024
#: Largest JSON body of ``POST /v1/media/uploads/{blob}/complete`` (10,000 parts).
MAX_COMPLETE_BODY: Final = 1024 * 1024


class MediaApi:
    """Upload slots and download grants."""

    def __init__(self, media: MediaService) -> None:
        self._media = media

    async def upload(self, request: web.Request, identity: Identity,
                     body: UploadRequest) -> web.Response:
        return json_response(await self._media.slot(identity, body), 201)

    async def complete(self, request: web.Request, identity: Identity,
                       body: CompleteUpload) -> web.Response:
        return json_response(await self._media.complete(identity, BLOB.value(request), body))

    async def abort(self, request: web.Request, identity: Identity) -> web.Response:
        await self._media.abort(identity, BLOB.value(request))
        return web.Response(status=204)

    async def download(self, request: web.Request, identity: Identity) -> web.Response:
        return json_response(await self._media.grant(identity, BLOB.value(request)))


class LocalBlobRoutes:
    """The gateway end of the local blob store's signed URLs."""

    def __init__(self, store: LocalBlobStore | None) -> None:
        self._store = store

    def _local(self, request: web.Request) -> tuple[LocalBlobStore, str]:
        if self._store is None:
            raise ProtocolError(ErrorCode.NOT_FOUND, "blobs are not stored here (S3 backend)")
        return self._store, f"{APP.value(request)}/{BLOB.value(request)}"

    async def put(self, request: web.Request) -> web.Response:
        store, key = self._local(request)
        await store.receive(request, key, expires=EXPIRES.value(request),
                            size=SIZE.value(request), content_type=TYPE.value(request),
                            sig=SIG.value(request))
        return web.Response(status=204)

    async def put_part(self, request: web.Request) -> web.Response:
        store, key = self._local(request)
        etag = await store.receive_part(request, key, upload=UPLOAD.value(request),
                                        part=PART.value(request),
                                        expires=EXPIRES.value(request),
                                        size=SIZE.value(request), sig=SIG.value(request))
        return web.Response(status=200, headers={"ETag": etag})

    async def get(self, request: web.Request) -> web.StreamResponse:
        store, key = self._local(request)
        path = store.file(key, expires=EXPIRES.value(request), sig=SIG.value(request))
        return web.FileResponse(path, headers={"Content-Type": "application/octet-stream"})
