"""Encrypted attachments on top of ``SecureClient``: ``send_file`` and ``download``.

As Matrix's encrypted attachments: each file is encrypted with AES-256-CTR under a random
key and IV (the counter half of the IV starts at zero), and the SHA-256 of the ciphertext is
kept. The ciphertext goes to the blob store through an upload slot; key, IV, hash, blob id,
file name, type and size travel in the text of an end-to-end encrypted message (Olm or
Megolm, ``client.e2ee``), so the server sees only ciphertext of known size. Images get a
thumbnail (Pillow, at most ``THUMBNAIL_PX`` on a side, JPEG), encrypted and uploaded as a blob
of its own. The send lists the blob ids in plaintext (``Send.blobs``), the ids only: that is
how the server knows who may download them and how long to keep them.

A slot for a large file (over the server's ``media.part_bytes``) is multipart: the parts are
uploaded ``PART_CONCURRENCY`` at a time, a part that fails (network, 5xx) is retried up to
``PART_ATTEMPTS`` times, then the upload is completed with the parts' ETags (or given up, so
the server frees the quota). The hash still covers the whole ciphertext.

Everything is read and encrypted in memory: files that fit in memory, up to the server's
``media.max_bytes``.
"""

import asyncio
import base64
import hashlib
import hmac
import io
import mimetypes
import secrets
from pathlib import Path
from typing import Final, Literal

import aiohttp
import msgspec
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from PIL import Image, UnidentifiedImageError

from client.e2ee import SecureClient
from client.sdk import CourierClient
from schemas.frames import Accepted
from schemas.ids import direct_conversation, group_conversation
from schemas.media import (
    CompletedPart,
    CompleteUpload,
    DownloadGrant,
    UploadRequest,
    UploadSlot,
)

#: Longest side of a thumbnail in pixels.
THUMBNAIL_PX: Final = 320
#: What every upload declares: the server stores ciphertext, whatever the file was.
CIPHERTEXT_TYPE: Final = "application/octet-stream"
FILE_TYPE: Final = "courier.file"
#: Parts of a multipart upload in flight at once.
PART_CONCURRENCY: Final = 4
#: Tries of one part before the upload is given up.
PART_ATTEMPTS: Final = 4
#: Wait before the second try of a part, doubled for each further one (seconds).
PART_RETRY_S: Final = 0.2


class AttachmentError(Exception):
    """An upload or download failed, or a downloaded file does not match its hash."""


class _Transient(Exception):
    """A try that may succeed again: the connection failed or the storage answered 5xx."""


class EncryptedBlob(msgspec.Struct, frozen=True):
    """How to fetch and decrypt one blob (inside the encrypted body)."""

    blob: str
    key: str  # base64url, 32 bytes
    iv: str  # base64url, 16 bytes
    sha256: str  # base64url of the ciphertext's SHA-256
    size: int  # ciphertext bytes


class FileBody(msgspec.Struct, frozen=True, tag_field="type", tag=FILE_TYPE):
    """The text of a file message (JSON; end-to-end encrypted like any other text)."""

    name: str
    mimetype: str
    size: int
    file: EncryptedBlob
    thumbnail: EncryptedBlob | None = None


_body_decoder: Final = msgspec.json.Decoder(FileBody)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def encrypt(plaintext: bytes) -> tuple[bytes, bytes, bytes]:
    """(ciphertext, key, iv): AES-256-CTR with a random key and a random 64-bit nonce whose
    64-bit counter starts at zero."""
    key, iv = secrets.token_bytes(32), secrets.token_bytes(8) + bytes(8)
    encryptor = Cipher(algorithms.AES(key), modes.CTR(iv)).encryptor()
    return encryptor.update(plaintext) + encryptor.finalize(), key, iv


def decrypt(ciphertext: bytes, info: EncryptedBlob) -> bytes:
    """The plaintext, once the ciphertext's hash matches ``info``; else ``AttachmentError``."""
    if not hmac.compare_digest(hashlib.sha256(ciphertext).digest(), _unb64(info.sha256)):
        raise AttachmentError(f"blob {info.blob}: the downloaded bytes do not match their hash")
    decryptor = Cipher(algorithms.AES(_unb64(info.key)), modes.CTR(_unb64(info.iv))).decryptor()
    return decryptor.update(ciphertext) + decryptor.finalize()


def thumbnail(data: bytes) -> bytes | None:
    """A JPEG thumbnail of an image, or None when ``data`` is not an image Pillow reads."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.thumbnail((THUMBNAIL_PX, THUMBNAIL_PX))
            out = io.BytesIO()
            image.convert("RGB").save(out, format="JPEG", quality=80)
            return out.getvalue()
    except (UnidentifiedImageError, OSError, ValueError):
        return None


def file_body(text: str) -> FileBody | None:
    """The file a decrypted message's text describes, or None when it is not a file body."""
    try:
        return _body_decoder.decode(text)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None


async def _store(session: aiohttp.ClientSession, method: str, url: str,
                 headers: dict[str, str], body: bytes) -> str:
    """One signed upload; the ETag answered. ``_Transient`` for what a retry may fix."""
    try:
        async with session.request(method, url, data=io.BytesIO(body),
                                   headers=headers) as response:
            detail = (await response.read())[:200]
            if response.status >= 500:
                raise _Transient(f"upload failed ({response.status}): {detail!r}")
            if response.status not in (200, 204):
                raise AttachmentError(f"upload refused ({response.status}): {detail!r}")
            return response.headers.get("ETag", "")
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise _Transient(f"upload failed: {exc!r}") from None


async def upload_parts(session: aiohttp.ClientSession, slot: UploadSlot,
                       ciphertext: bytes) -> list[CompletedPart]:
    """Upload the parts of a multipart slot, ``PART_CONCURRENCY`` at a time, each tried up
    to ``PART_ATTEMPTS`` times; their numbers and ETags, in order."""
    gate = asyncio.Semaphore(PART_CONCURRENCY)

    async def one(number: int, size: int, method: str, url: str,
                  headers: dict[str, str]) -> CompletedPart:
        start = (number - 1) * slot.part_bytes
        body = ciphertext[start:start + size]
        attempt = 1
        async with gate:
            while True:
                try:
                    etag = await _store(session, method, url, headers, body)
                except _Transient as exc:
                    if attempt == PART_ATTEMPTS:
                        raise AttachmentError(f"part {number}: {exc}") from None
                    await asyncio.sleep(PART_RETRY_S * 2 ** (attempt - 1))
                    attempt += 1
                    continue
                if not etag:
                    raise AttachmentError(f"part {number}: the storage answered no ETag")
                return CompletedPart(number=number, etag=etag)

    try:
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(one(part.number, part.size, part.method, part.url,
                                           part.headers)) for part in slot.parts]
    except ExceptionGroup as failed:
        raise failed.exceptions[0] from None
    return [task.result() for task in tasks]


async def _upload(client: CourierClient, conversation: str, plaintext: bytes) -> EncryptedBlob:
    ciphertext, key, iv = await asyncio.to_thread(encrypt, plaintext)
    status, reply = await client.api("POST", "/v1/media/uploads", UploadRequest(
        size=len(ciphertext), content_type=CIPHERTEXT_TYPE, conversation=conversation))
    if status != 201:
        raise AttachmentError(f"no upload slot ({status}): {reply}")
    slot = msgspec.convert(reply, UploadSlot)
    async with aiohttp.ClientSession() as session:
        if slot.parts:
            await _multipart(client, session, slot, ciphertext)
        else:
            try:
                await _store(session, slot.method, slot.url, slot.headers, ciphertext)
            except _Transient as exc:
                raise AttachmentError(str(exc)) from None
    return EncryptedBlob(blob=slot.blob, key=_b64(key), iv=_b64(iv), size=len(ciphertext),
                         sha256=_b64(hashlib.sha256(ciphertext).digest()))


async def _multipart(client: CourierClient, session: aiohttp.ClientSession, slot: UploadSlot,
                     ciphertext: bytes) -> None:
    """Upload the parts and complete; on failure give the upload up (the server aborts it
    and frees the quota) and raise."""
    try:
        parts = await upload_parts(session, slot, ciphertext)
        status, reply = await client.api("POST", f"/v1/media/uploads/{slot.blob}/complete",
                                         CompleteUpload(parts=parts))
        if status != 200:
            raise AttachmentError(f"upload not completed ({status}): {reply}")
    except AttachmentError:
        await client.api("DELETE", f"/v1/media/uploads/{slot.blob}")
        raise


async def send_file(secure: SecureClient, to: str, path: Path, *,
                    kind: Literal["user", "group"] = "user") -> Accepted:
    """Encrypt and upload ``path`` (and a thumbnail if it is an image), then send user or
    group ``to`` an end-to-end encrypted message that says how to fetch and decrypt them."""
    client = secure.client
    data = await asyncio.to_thread(path.read_bytes)
    conversation = (direct_conversation(client.credentials.user, to) if kind == "user"
                    else group_conversation(to))
    mimetype = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    stored = await _upload(client, conversation, data)
    preview = await asyncio.to_thread(thumbnail, data) if mimetype.startswith("image/") else None
    thumb = await _upload(client, conversation, preview) if preview is not None else None
    text = msgspec.json.encode(FileBody(name=path.name, mimetype=mimetype, size=len(data),
                                        file=stored, thumbnail=thumb)).decode()
    blobs = [stored.blob] + ([thumb.blob] if thumb is not None else [])
    if kind == "group":
        return await secure.send_group_text(to, text, blobs=blobs)
    return await secure.send_text(to, text, blobs=blobs)


async def fetch(client: CourierClient, info: EncryptedBlob) -> bytes:
    """Download one blob through a download grant, verify its hash and decrypt it."""
    status, reply = await client.api("GET", f"/v1/media/{info.blob}/download")
    if status != 200:
        raise AttachmentError(f"no download URL for {info.blob} ({status}): {reply}")
    grant = msgspec.convert(reply, DownloadGrant)
    async with aiohttp.ClientSession() as session, session.get(grant.url) as response:
        if response.status != 200:
            raise AttachmentError(f"download refused ({response.status})")
        ciphertext = await response.read()
    return await asyncio.to_thread(decrypt, ciphertext, info)


async def download(client: CourierClient, body: FileBody, directory: Path) -> Path:
    """Save the file ``body`` describes in ``directory`` (under its base name; a name taken
    gets a numbered one) and return its path."""
    plaintext = await fetch(client, body.file)
    return await asyncio.to_thread(_save, directory, body.name, plaintext)


def _save(directory: Path, name: str, data: bytes) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    base = Path(name).name.lstrip(".") or "file"
    stem, suffix = Path(base).stem, Path(base).suffix
    for n in range(10_000):
        path = directory / (base if n == 0 else f"{stem} ({n}){suffix}")
        try:
            with path.open("xb") as fh:
                fh.write(data)
            return path
        except FileExistsError:
            continue
    raise AttachmentError(f"no free name for {base!r} in {directory}")
