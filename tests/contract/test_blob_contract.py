"""The blob store contract (``blobs.base.BlobStore``), run against local files behind a real
aiohttp server and S3 on a real SeaweedFS: uploads and downloads through the signed URLs,
ranges, and the storage itself refusing what the signature does not allow (403 for a changed
or late URL, a body of another size or content type never stored)."""

import asyncio
import secrets
import time
import urllib.parse

import pytest

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


async def _wait_past(deadline: float) -> None:
    """Wait, with a bound, until the wall clock is past ``deadline`` (a URL's expiry)."""
    while time.time() <= deadline:
        await asyncio.sleep(0.1)


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
    await _wait_past(time.time() + 2.1)
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
