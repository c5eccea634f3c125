"""The blob store contract (``blobs.base.BlobStore``), run against local files behind a real
aiohttp server and S3 on a real SeaweedFS: uploads and downloads through the signed URLs,
ranges, and the storage itself refusing what the signature does not allow (403 for a changed
or late URL, a body of another size or content type never stored); multipart uploads (parts
of another size refused by the storage, a completion with a missing, reordered or changed
part refused, an abort leaves nothing)."""

import io
import secrets
import time
import urllib.parse
from collections.abc import Awaitable

import pytest

from schemas.errors import ErrorCode, ProtocolError
from schemas.media import MIN_PART_BYTES
from tests.blob_helpers import wait_past
from tests.contract.conftest import BlobBackend

TYPE = "application/octet-stream"


def _key() -> str:
    return f"app-{secrets.token_hex(3)}/b{secrets.token_hex(16)}"


async def _put(backend: BlobBackend, key: str, body: bytes, *, size: int | None = None,
               content_type: str = TYPE, expires_s: int = 60) -> int:
    upload = backend.store.upload(key, len(body) if size is None else size, content_type,
                                  expires_s)
    async with backend.http.request(upload.method, upload.url, data=body,
                                    headers=upload.headers) as response:
        await response.read()
        return response.status


async def _get(backend: BlobBackend, url: str, headers: dict[str, str] | None = None,
               ) -> tuple[int, bytes]:
    async with backend.http.get(url, headers=headers or {}) as response:
        return response.status, await response.read()


def _tamper(url: str) -> str:
    """The URL with one character of its signature changed."""
    parts = urllib.parse.urlsplit(url)
    query = urllib.parse.parse_qs(parts.query)
    name = "sig" if "sig" in query else "X-Amz-Signature"
    signature = query[name][0]
    query[name] = [signature[:-1] + ("0" if signature[-1] != "0" else "1")]
    return urllib.parse.urlunsplit(parts._replace(
        query=urllib.parse.urlencode(query, doseq=True)))


async def test_upload_then_download_whole_and_by_range(blobs: BlobBackend) -> None:
    key, body = _key(), secrets.token_bytes(300_000)
    assert await blobs.store.size_of(key) is None
    assert await _put(blobs, key, body) in (200, 204)
    assert await blobs.store.size_of(key) == len(body)
    url = blobs.store.download_url(key, 60)
    assert await _get(blobs, url) == (200, body)
    assert await _get(blobs, url, {"Range": "bytes=1000-1999"}) == (206, body[1000:2000])


async def test_a_tampered_url_is_refused(blobs: BlobBackend) -> None:
    key, body = _key(), b"tamper" * 100
    upload = blobs.store.upload(key, len(body), TYPE, 60)
    async with blobs.http.put(_tamper(upload.url), data=body,
                              headers=upload.headers) as response:
        assert response.status == 403
    assert await blobs.store.size_of(key) is None
    assert await _put(blobs, key, body) in (200, 204)
    status, _ = await _get(blobs, _tamper(blobs.store.download_url(key, 60)))
    assert status == 403


async def test_a_url_for_another_key_is_refused(blobs: BlobBackend) -> None:
    key, other, body = _key(), _key(), b"x" * 10
    assert await _put(blobs, key, body) in (200, 204)
    url = blobs.store.download_url(key, 60)
    status, _ = await _get(blobs, url.replace(key.split("/")[1], other.split("/")[1]))
    assert status == 403


async def test_an_expired_url_is_refused(blobs: BlobBackend) -> None:
    key, body = _key(), b"late" * 10
    upload = blobs.store.upload(key, len(body), TYPE, 1)
    assert await _put(blobs, key, body) in (200, 204)
    download = blobs.store.download_url(key, 1)
    await wait_past(time.time() + 2.1)
    async with blobs.http.put(upload.url, data=body, headers=upload.headers) as response:
        assert response.status == 403
    status, _ = await _get(blobs, download)
    assert status == 403


@pytest.mark.parametrize("extra", [1, 1000, -1])
async def test_the_storage_refuses_another_size_than_signed(blobs: BlobBackend,
                                                            extra: int) -> None:
    key = _key()
    body = secrets.token_bytes(1000 + extra)
    status = await _put(blobs, key, body, size=1000)
    assert status in (403, 413, 422), status
    assert await blobs.store.size_of(key) is None


async def test_the_storage_refuses_another_content_type_than_signed(blobs: BlobBackend) -> None:
    key, body = _key(), b"typed" * 10
    upload = blobs.store.upload(key, len(body), "image/png", 60)
    async with blobs.http.put(upload.url, data=body,
                              headers={"Content-Type": "text/html"}) as response:
        assert response.status == 403
    assert await blobs.store.size_of(key) is None


async def test_delete_removes_and_is_idempotent(blobs: BlobBackend) -> None:
    key = _key()
    assert await _put(blobs, key, b"gone") in (200, 204)
    await blobs.store.delete(key)
    assert await blobs.store.size_of(key) is None
    await blobs.store.delete(key)
    status, _ = await _get(blobs, blobs.store.download_url(key, 60))
    assert status in (403, 404)  # S3 answers 403 to a missing key without List rights


async def test_keys_of_two_apps_are_apart(blobs: BlobBackend) -> None:
    blob = f"b{secrets.token_hex(16)}"
    first, second = f"app-a{secrets.token_hex(2)}/{blob}", f"app-b{secrets.token_hex(2)}/{blob}"
    assert await _put(blobs, first, b"first") in (200, 204)
    assert await blobs.store.size_of(second) is None
    assert await _put(blobs, second, b"second!") in (200, 204)
    assert await _get(blobs, blobs.store.download_url(first, 60)) == (200, b"first")


# ---------------------------------------------------------------------- multipart

PART = MIN_PART_BYTES


async def _put_part(backend: BlobBackend, key: str, upload_id: str, number: int, body: bytes,
                    *, size: int | None = None) -> tuple[int, str]:
    """PUT one part through its signed URL: the status and the ETag answered."""
    upload = backend.store.upload_part(key, upload_id, number,
                                       len(body) if size is None else size, 60)
    async with backend.http.request(upload.method, upload.url, data=io.BytesIO(body),
                                    headers=upload.headers) as response:
        await response.read()
        return response.status, response.headers.get("ETag", "")


async def _parts(backend: BlobBackend, key: str, upload_id: str,
                 bodies: list[bytes]) -> list[tuple[int, str]]:
    """Upload ``bodies`` as parts 1, 2, ...: their (number, ETag)."""
    etags = []
    for number, body in enumerate(bodies, 1):
        status, etag = await _put_part(backend, key, upload_id, number, body)
        assert status == 200, status
        etags.append((number, etag))
    return etags


async def _refused(call: Awaitable[None], code: ErrorCode) -> None:
    with pytest.raises(ProtocolError) as refused:
        await call
    assert refused.value.code == code


async def test_a_multipart_upload_joins_its_parts_in_order(blobs: BlobBackend) -> None:
    key = _key()
    bodies = [secrets.token_bytes(PART), secrets.token_bytes(PART), secrets.token_bytes(1000)]
    upload_id = await blobs.store.create_multipart(key, TYPE)
    etags = await _parts(blobs, key, upload_id, bodies)
    assert await blobs.store.size_of(key) is None  # nothing stored before the completion
    await blobs.store.complete_multipart(key, upload_id, etags)
    whole = b"".join(bodies)
    assert await blobs.store.size_of(key) == len(whole)
    url = blobs.store.download_url(key, 60)
    assert await _get(blobs, url) == (200, whole)
    assert await _get(blobs, url, {"Range": f"bytes={PART - 10}-{PART + 9}"}) == (
        206, whole[PART - 10:PART + 10])
    # completing again is not_found (local) or a no-op (SeaweedFS, as AWS for a while);
    # aborting a completed upload (the sweeper does) leaves the object either way
    try:
        await blobs.store.complete_multipart(key, upload_id, etags)
    except ProtocolError as exc:
        assert exc.code == ErrorCode.NOT_FOUND
    await blobs.store.abort_multipart(key, upload_id)
    assert await _get(blobs, url) == (200, whole)


@pytest.mark.parametrize("extra", [1, -1])
async def test_the_storage_refuses_a_part_of_another_size_than_signed(blobs: BlobBackend,
                                                                      extra: int) -> None:
    key = _key()
    upload_id = await blobs.store.create_multipart(key, TYPE)
    status, _ = await _put_part(blobs, key, upload_id, 1, secrets.token_bytes(1000 + extra),
                                size=1000)
    assert status in (403, 413, 422), status
    good = secrets.token_bytes(1000)
    status, etag = await _put_part(blobs, key, upload_id, 1, good)
    assert status == 200
    await blobs.store.complete_multipart(key, upload_id, [(1, etag)])
    assert await _get(blobs, blobs.store.download_url(key, 60)) == (200, good)


async def test_a_tampered_part_url_is_refused(blobs: BlobBackend) -> None:
    key = _key()
    upload_id = await blobs.store.create_multipart(key, TYPE)
    upload = blobs.store.upload_part(key, upload_id, 1, 10, 60)
    async with blobs.http.put(_tamper(upload.url), data=b"x" * 10) as response:
        assert response.status == 403


async def test_completion_refuses_a_missing_a_reordered_or_a_changed_part(
        blobs: BlobBackend) -> None:
    key = _key()
    upload_id = await blobs.store.create_multipart(key, TYPE)
    etags = await _parts(blobs, key, upload_id, [secrets.token_bytes(PART),
                                                 secrets.token_bytes(500)])
    (one, first), (two, second) = etags
    never = '"0123456789abcdef0123456789abcdef"'
    for parts in ([(one, first), (3, never)],  # part 3 was never uploaded
                  [(two, second), (one, first)],  # reordered
                  [(one, first), (two, never)],  # another ETag
                  [(one, second), (two, first)]):  # ETags swapped
        await _refused(blobs.store.complete_multipart(key, upload_id, parts),
                       ErrorCode.INVALID)
        assert await blobs.store.size_of(key) is None
    await blobs.store.complete_multipart(key, upload_id, etags)  # still completes
    assert await blobs.store.size_of(key) == PART + 500


async def test_completion_refuses_a_small_part_before_the_last(blobs: BlobBackend) -> None:
    key = _key()
    upload_id = await blobs.store.create_multipart(key, TYPE)
    etags = await _parts(blobs, key, upload_id, [b"a" * 100, b"b" * 100])
    await _refused(blobs.store.complete_multipart(key, upload_id, etags), ErrorCode.INVALID)
    assert await blobs.store.size_of(key) is None


async def test_abort_leaves_nothing_and_is_idempotent(blobs: BlobBackend) -> None:
    key = _key()
    upload_id = await blobs.store.create_multipart(key, TYPE)
    etags = await _parts(blobs, key, upload_id, [b"c" * 100])
    await blobs.store.abort_multipart(key, upload_id)
    await blobs.store.abort_multipart(key, upload_id)
    await _refused(blobs.store.complete_multipart(key, upload_id, etags), ErrorCode.NOT_FOUND)
    status, _ = await _put_part(blobs, key, upload_id, 2, b"late")
    assert status in (403, 404), status
    assert await blobs.store.size_of(key) is None
    assert await blobs.leftovers() == []


# ---------------------------------------------------------------------------- server-side objects
# (the archive's chunks and indexes: put and read by the server, never through a URL)


async def test_put_object_then_get_object_returns_the_bytes(blobs: BlobBackend) -> None:
    key, body = _key(), secrets.token_bytes(70_000)
    assert await blobs.store.get_object(key) is None
    await blobs.store.put_object(key, body, TYPE)
    assert await blobs.store.get_object(key) == body
    assert await blobs.store.size_of(key) == len(body)


async def test_put_object_replaces_and_delete_removes(blobs: BlobBackend) -> None:
    key = f"{_key()}/index.json"
    await blobs.store.put_object(key, b"first", "application/json")
    await blobs.store.put_object(key, b"second version", "application/json")
    assert await blobs.store.get_object(key) == b"second version"
    await blobs.store.delete(key)
    assert await blobs.store.get_object(key) is None
