"""Attachments end to end, on a whole system with each blob store: local files behind the
gateway and S3 on a real SeaweedFS. ``send_file`` encrypts, uploads (with a thumbnail for
images) and sends; the receiver downloads, verifies and decrypts. The storage refuses what
the signature does not allow; only the owner and members of a conversation the blob was sent
in get a download URL; blobs never referenced are collected, referenced ones follow their
message's retention; the stored object holds no plaintext."""

import argparse
import asyncio
import io
import json
import secrets
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from botocore.exceptions import ClientError as BotoClientError
from PIL import Image

from client import cli
from client.attachments import (
    CIPHERTEXT_TYPE,
    AttachmentError,
    decrypt,
    download,
    fetch,
    file_body,
    send_file,
)
from client.e2ee import SecureClient
from client.sdk import ClientError, CourierClient
from infra.seaweedfs import SeaweedFs
from schemas.ids import direct_conversation
from tests.blob_helpers import local_held, s3_client, s3_held, wait_past
from tests.e2e.e2ee_helpers import close_all, next_text, secure_device
from tests.e2e.social_helpers import wait_for
from tests.harness import System

MAX_BYTES = 4 * 1024 * 1024
QUOTA = 2 * MAX_BYTES + 64 * 1024  # two full blobs and small ones
URL_TTL_S = 3
UNREFERENCED_TTL_S = 8
MEDIA_ENV = {
    "COURIER_MEDIA_MAX_BYTES": str(MAX_BYTES),
    "COURIER_MEDIA_USER_QUOTA_BYTES": str(QUOTA),
    "COURIER_MEDIA_URL_TTL_S": str(URL_TTL_S),
    "COURIER_MEDIA_UNREFERENCED_TTL_S": str(UNREFERENCED_TTL_S),
    "COURIER_MEDIA_SWEEP_INTERVAL_S": "0.5",
    "COURIER_MEDIA_CONTENT_TYPES": "application/octet-stream,image/*",
}
MARKER = b"COURIER-PLAINTEXT-MARKER-7f3a"


@dataclass
class MediaSystem:
    system: System
    #: The bytes stored for a blob of the default app, or None.
    stored: Callable[[str], bytes | None]
    #: Everything the storage holds: objects, open multipart uploads, their parts.
    held: Callable[[], list[str]]


def _s3_reader(server: SeaweedFs, bucket: str) -> Callable[[str], bytes | None]:
    s3 = s3_client(server)

    def stored(blob: str) -> bytes | None:
        try:
            return bytes(s3.get_object(Bucket=bucket, Key=f"default/{blob}")["Body"].read())
        except BotoClientError as exc:
            if exc.response["Error"]["Code"] in ("NoSuchKey", "404"):
                return None
            raise

    return stored


@pytest.fixture(scope="module", params=["local", "s3"])
def media(request: pytest.FixtureRequest,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[MediaSystem]:
    yield from media_system(request, tmp_path_factory, MEDIA_ENV)


def media_system(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
                 media_env: dict[str, str]) -> Iterator[MediaSystem]:
    """A whole system with the blob store ``request.param`` names (``local``, ``s3`` on the
    session's SeaweedFS) and ``media_env``."""
    root = tmp_path_factory.mktemp(f"media-{request.param}")
    env = dict(media_env)
    if request.param == "s3":
        server: SeaweedFs = request.getfixturevalue("seaweedfs")
        bucket = f"media-{secrets.token_hex(6)}"
        env.update({"COURIER_MEDIA_BACKEND": "s3", "COURIER_MEDIA_S3_BUCKET": bucket,
                    "COURIER_MEDIA_S3_ENDPOINT_URL": server.endpoint_url,
                    "COURIER_MEDIA_S3_ACCESS_KEY": server.access_key,
                    "COURIER_MEDIA_S3_SECRET_KEY": server.secret_key,
                    "COURIER_MEDIA_S3_CREATE_BUCKET": "true"})
        stored = _s3_reader(server, bucket)
        held = s3_held(server, bucket)
    else:
        def stored(blob: str) -> bytes | None:
            path = root / "media" / "default" / blob
            return path.read_bytes() if path.exists() else None
        held = local_held(root / "media")
    with System(root, env) as system:
        yield MediaSystem(system, stored, held)
    assert not system.permission_violations(), "a service was refused by NATS permissions"


async def _pair(media: MediaSystem) -> tuple[CourierClient, CourierClient, str, str]:
    tag = secrets.token_hex(3)
    alice_id, bob_id = f"alice-{tag}", f"bob-{tag}"
    alice = await media.system.connect(await media.system.device(alice_id))
    bob = await media.system.connect(await media.system.device(bob_id))
    return alice, bob, alice_id, bob_id


async def _secure_pair(media: MediaSystem, state: Path) -> tuple[SecureClient, SecureClient]:
    """Alice and Bob on encrypting devices (files are sent in end-to-end encrypted messages)."""
    tag = secrets.token_hex(3)
    alice = await secure_device(media.system, f"alice-{tag}", f"alice-{tag}-phone", state)
    bob = await secure_device(media.system, f"bob-{tag}", f"bob-{tag}-phone", state)
    return alice, bob


async def _slot(client: CourierClient, conversation: str, size: int,
                content_type: str = CIPHERTEXT_TYPE) -> tuple[int, Any]:
    return await client.api("POST", "/v1/media/uploads", {
        "size": size, "content_type": content_type, "conversation": conversation})


async def _put(slot: dict[str, Any], body: bytes) -> int:
    async with aiohttp.ClientSession() as session, session.request(
            slot["method"], slot["url"], data=io.BytesIO(body),
            headers=slot["headers"]) as response:
        await response.read()
        return response.status


async def _get(url: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    async with aiohttp.ClientSession() as session, session.get(
            url, headers=headers or {}) as response:
        return response.status, await response.read()


async def _uploaded(client: CourierClient, conversation: str, body: bytes) -> str:
    status, slot = await _slot(client, conversation, len(body))
    assert status == 201, slot
    assert await _put(slot, body) in (200, 204)
    return str(slot["blob"])


def _png(marker: bytes = b"") -> bytes:
    image = Image.new("RGB", (800, 600), (200, 40, 90))
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue() + marker


async def test_a_file_and_its_thumbnail_go_end_to_end_encrypted(
        media: MediaSystem, tmp_path: Path) -> None:
    alice, bob = await _secure_pair(media, tmp_path / "e2ee")
    picture = tmp_path / "holiday.png"
    picture.write_bytes(_png(MARKER * 50))
    try:
        await send_file(alice, bob.user, picture)
        body = file_body(await next_text(bob))
        assert body is not None and body.thumbnail is not None
        assert (body.name, body.mimetype, body.size) == ("holiday.png", "image/png",
                                                         picture.stat().st_size)
        saved = await download(bob.client, body, tmp_path / "received")
        assert saved.read_bytes() == picture.read_bytes()
        with Image.open(io.BytesIO(await fetch(bob.client, body.thumbnail))) as thumb:
            assert thumb.format == "JPEG" and max(thumb.size) <= 320
        stored = media.stored(body.file.blob)
        assert stored is not None and len(stored) == body.file.size
        assert MARKER not in stored  # the marker search: ciphertext only
        assert decrypt(stored, body.file) == picture.read_bytes()
        key = body.file.key.encode()
        assert key not in media.system.root.joinpath("courier.db").read_bytes()  # key: E2EE
    finally:
        await close_all(alice, bob)


async def test_only_the_owner_and_members_get_a_download_url(media: MediaSystem) -> None:
    alice, bob, alice_id, bob_id = await _pair(media)
    carol = await media.system.connect(await media.system.device(f"carol-{alice_id[-6:]}"))
    try:
        blob = await _uploaded(alice, direct_conversation(alice_id, bob_id), b"secret" * 100)
        path = f"/v1/media/{blob}/download"
        assert (await bob.api("GET", path))[0] == 404  # not sent yet
        assert (await alice.api("GET", path))[0] == 200  # its owner
        await alice.send(bob_id, b"see attached", blobs=[blob])
        assert (await bob.api("GET", path))[0] == 200
        status, problem = await carol.api("GET", path)
        assert status == 404, problem  # a non-member: as if it did not exist
    finally:
        for client in (alice, bob, carol):
            await client.close()


async def test_download_urls_answer_ranges_and_refuse_tampering_and_expiry(
        media: MediaSystem) -> None:
    alice, bob, alice_id, bob_id = await _pair(media)
    try:
        content = secrets.token_bytes(100_000)
        blob = await _uploaded(alice, direct_conversation(alice_id, bob_id), content)
        await alice.send(bob_id, b"ranges", blobs=[blob])
        _, grant = await bob.api("GET", f"/v1/media/{blob}/download")
        url = str(grant["url"])  # type: ignore[index]
        assert await _get(url, {"Range": "bytes=500-1499"}) == (206, content[500:1500])
        parts = urllib.parse.urlsplit(url)
        query = urllib.parse.parse_qs(parts.query)
        name = "sig" if "sig" in query else "X-Amz-Signature"
        query[name] = [query[name][0][::-1]]
        tampered = urllib.parse.urlunsplit(parts._replace(
            query=urllib.parse.urlencode(query, doseq=True)))
        assert (await _get(tampered))[0] == 403
        expires = int(grant["expires_at"]) / 1000  # type: ignore[index]
        await wait_past(expires + 1.2)  # past the signed expiry (second resolution)
        assert (await _get(url))[0] == 403
    finally:
        await alice.close()
        await bob.close()


async def test_the_storage_refuses_a_body_larger_than_the_slot(media: MediaSystem) -> None:
    alice, bob, alice_id, bob_id = await _pair(media)
    try:
        status, slot = await _slot(alice, direct_conversation(alice_id, bob_id), 1000)
        assert status == 201
        # straight to the storage, past the gateway: the signature binds the size
        assert await _put(slot, secrets.token_bytes(5000)) in (403, 413)
        assert media.stored(slot["blob"]) is None
        with pytest.raises(ClientError) as refused:
            await alice.send(bob_id, b"nothing there", blobs=[slot["blob"]])
        assert refused.value.code == "invalid"
        assert await _put(slot, secrets.token_bytes(1000)) in (200, 204)  # the signed size
    finally:
        await alice.close()
        await bob.close()


async def test_unreferenced_blobs_are_collected_and_give_their_quota_back(
        media: MediaSystem) -> None:
    alice, bob, alice_id, bob_id = await _pair(media)
    conversation = direct_conversation(alice_id, bob_id)
    try:
        kept = await _uploaded(alice, conversation, b"kept" * 1000)
        await alice.send(bob_id, b"kept", blobs=[kept])
        orphan = await _uploaded(alice, conversation, secrets.token_bytes(MAX_BYTES))
        status, slot = await _slot(alice, conversation, MAX_BYTES)
        assert status == 201  # the quota holds two of these, not a third
        assert (await _slot(alice, conversation, MAX_BYTES))[0] == 409
        assert await _put(slot, secrets.token_bytes(MAX_BYTES)) in (200, 204)

        async def collected() -> bool:
            return media.stored(orphan) is None and media.stored(slot["blob"]) is None

        await wait_for(collected, within=UNREFERENCED_TTL_S + 30)
        assert (await alice.api("GET", f"/v1/media/{orphan}/download"))[0] == 404
        # the sweeper went past it: the referenced blob of the same age is still there
        assert media.stored(kept) == b"kept" * 1000
        assert (await bob.api("GET", f"/v1/media/{kept}/download"))[0] == 200
        assert (await _slot(alice, conversation, MAX_BYTES))[0] == 201  # quota back
    finally:
        await alice.close()
        await bob.close()


async def test_a_blob_follows_the_retention_of_its_message(media: MediaSystem) -> None:
    alice, bob, alice_id, bob_id = await _pair(media)
    try:
        blob = await _uploaded(alice, direct_conversation(alice_id, bob_id), b"brief" * 10)
        await alice.send(bob_id, b"self-destructs", blobs=[blob], ttl=2)

        async def gone() -> bool:
            return media.stored(blob) is None

        await wait_for(gone, within=30)
        assert (await bob.api("GET", f"/v1/media/{blob}/download"))[0] == 404
    finally:
        await alice.close()
        await bob.close()


async def test_a_download_that_does_not_match_its_hash_is_refused(media: MediaSystem,
                                                                  tmp_path: Path) -> None:
    alice, bob = await _secure_pair(media, tmp_path / "e2ee")
    document = tmp_path / "notes.txt"
    document.write_bytes(b"plain notes" * 100)
    try:
        await send_file(alice, bob.user, document)
        body = file_body(await next_text(bob))
        assert body is not None and body.thumbnail is None  # not an image
        forged = type(body.file)(blob=body.file.blob, key=body.file.key, iv=body.file.iv,
                                 sha256="A" * 43, size=body.file.size)
        with pytest.raises(AttachmentError):
            await fetch(bob.client, forged)
    finally:
        await close_all(alice, bob)


async def test_the_cli_sends_a_file_and_saves_what_it_receives(
        media: MediaSystem, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    alice, bob = await _secure_pair(media, tmp_path / "e2ee")
    document = tmp_path / "report.pdf"
    document.write_bytes(MARKER + secrets.token_bytes(5000))
    sender = cli._Session(alice.client, alice, tmp_path / "unused")
    receiver = asyncio.create_task(cli._Session(bob.client, bob, tmp_path / "inbox").receive())
    to_bob = argparse.Namespace(to=bob.user, group=None)
    try:
        await sender.send(to_bob, f"/file {document}")
        await sender.send(to_bob, "and a line")
        saved = tmp_path / "inbox" / "report.pdf"

        async def both_arrived() -> bool:
            return "and a line" in capsys.readouterr().out

        await wait_for(both_arrived, within=30)  # the line came after the file: the file is saved
        assert saved.read_bytes() == document.read_bytes()
    finally:
        receiver.cancel()
        await asyncio.gather(receiver, return_exceptions=True)
        await close_all(alice, bob)


# ---------------------------------------------------------------------- bad input


@pytest.mark.parametrize(("body", "status"), [
    ({"size": 0}, 422), ({"size": -1}, 422), ({"size": 2**63}, 422), ({"size": "1"}, 422),
    ({"size": MAX_BYTES + 1}, 413), ({"size": 2**63 - 1}, 413), ({"size": MAX_BYTES}, 201),
    ({"content_type": "text/plain"}, 422), ({"content_type": "IMAGE/PNG"}, 422),
    ({"content_type": "image/png; charset=x"}, 422), ({"content_type": "image/png"}, 201),
    ({"conversation": "d:someone:else"}, 403), ({"conversation": "n:me"}, 403),
    ({"conversation": "g:no-such-group"}, 403), ({"conversation": "x"}, 422),
    ({"extra": 1}, 422),
])
async def test_upload_slots_refuse_bad_requests(media: MediaSystem, body: dict[str, Any],
                                                status: int) -> None:
    alice, bob, alice_id, bob_id = await _pair(media)
    try:
        request = {"size": 10, "content_type": CIPHERTEXT_TYPE,
                   "conversation": direct_conversation(alice_id, bob_id), **body}
        got, problem = await alice.api("POST", "/v1/media/uploads", request)
        assert got == status, problem
        if status != 201:
            assert problem["code"] != "internal"  # type: ignore[index]
    finally:
        await alice.close()
        await bob.close()


@pytest.mark.parametrize(("blob", "status"), [
    ("nope", 422), ("b" + "0" * 31, 422), ("b" + "G" * 32, 422), ("b" + "0" * 32, 404)])
async def test_download_grants_refuse_bad_ids(media: MediaSystem, blob: str,
                                              status: int) -> None:
    alice, bob, _, _ = await _pair(media)
    try:
        assert (await alice.api("GET", f"/v1/media/{blob}/download"))[0] == status
    finally:
        await alice.close()
        await bob.close()


async def test_sends_refuse_blobs_that_are_not_the_senders(media: MediaSystem) -> None:
    alice, bob, alice_id, bob_id = await _pair(media)
    try:
        blob = await _uploaded(alice, direct_conversation(alice_id, bob_id), b"mine")
        for blobs, sender, to in (([blob], bob, alice_id),  # bob sends alice's blob
                                  (["b" + "1" * 32], alice, bob_id)):  # nobody's
            with pytest.raises(ClientError) as refused:
                await sender.send(to, b"x", blobs=blobs)
            assert refused.value.code == "forbidden", (blobs, refused.value)
        for bad in (["nope"], [], [blob] * 17, "b" + "1" * 32, [None]):
            await alice.send_raw(json.dumps({
                "type": "send", "client_id": secrets.token_hex(8),
                "to": {"kind": "user", "id": bob_id}, "body": "eA==", "blobs": bad}))
            error = await asyncio.wait_for(alice.errors.get(), 10)
            assert error.code == "invalid", (bad, error)
        accepted = await alice.send(bob_id, b"ok", blobs=[blob] * 16)  # at the bound
        assert accepted.message_id
    finally:
        await alice.close()
        await bob.close()


async def test_local_urls_refuse_bad_queries(media: MediaSystem) -> None:
    """The local store's routes: 422 for a missing or malformed query, 403 for a wrong
    signature; where blobs are on S3 they are not served at all (404)."""
    alice, bob, alice_id, bob_id = await _pair(media)
    try:
        status, slot = await _slot(alice, direct_conversation(alice_id, bob_id), 10)
        assert status == 201
        local = "/v1/media/local/" in str(slot["url"])
        path = f"{media.system.url}/v1/media/local/default/{slot['blob']}"
        signed = "expires=9999999999&size=10&type=application%2Foctet-stream"
        cases = [("", 422), ("?expires=x&size=10", 422), (f"?{signed}", 422),
                 (f"?{signed}&sig={'0' * 64}", 403), (f"?{signed}&sig=zz", 422),
                 (f"?{signed}&sig={'0' * 64}&more=1", 422)]
        async with aiohttp.ClientSession() as session:
            for query, expected in cases:
                async with session.put(f"{path}{query}", data=b"0123456789", headers={
                        "Content-Type": CIPHERTEXT_TYPE}) as response:
                    want = expected if local or (expected == 422 and "more" in query) else 404
                    assert response.status == want, (query, await response.text())
            async with session.get(f"{path}?expires=1&sig={'0' * 64}") as response:
                assert response.status == (403 if local else 404)
    finally:
        await alice.close()
        await bob.close()
