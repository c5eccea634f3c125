"""Pure parts of media: the ``media`` configuration keys (each at and past its bounds), the
content-type rule, the attachment cipher, thumbnails, local URL signatures, saved names."""

import base64
import hashlib
import io
import secrets
import time
from pathlib import Path

import pytest
from PIL import Image

from blobs.factory import local_url_key
from blobs.local import LocalBlobStore
from client.attachments import (
    AttachmentError,
    EncryptedBlob,
    _save,
    decrypt,
    encrypt,
    thumbnail,
)
from runtime.config import ConfigError, load_config
from schemas.errors import ProtocolError
from schemas.media import part_sizes

GIB = 1024**3
MIB = 1024**2
SECRET = "s" * 32


@pytest.mark.parametrize(("env", "fine"), [
    ({"COURIER_MEDIA_BACKEND": "local"}, True),
    ({"COURIER_MEDIA_BACKEND": "ftp"}, False),
    ({"COURIER_MEDIA_BACKEND": "s3"}, False),  # no bucket
    ({"COURIER_MEDIA_BACKEND": "s3", "COURIER_MEDIA_S3_BUCKET": "b"}, True),
    ({"COURIER_MEDIA_S3_ACCESS_KEY": "k"}, False),
    ({"COURIER_MEDIA_S3_SECRET_KEY": "k"}, False),
    ({"COURIER_MEDIA_S3_ACCESS_KEY": "k", "COURIER_MEDIA_S3_SECRET_KEY": "s"}, True),
    ({"COURIER_MEDIA_S3_CREATE_BUCKET": "maybe"}, False),
    ({"COURIER_MEDIA_URL_SECRET": "x" * 31}, False),
    ({"COURIER_MEDIA_URL_SECRET": "x" * 32}, True),
    ({"COURIER_MEDIA_PUBLIC_URL": "ftp://host"}, False),
    ({"COURIER_MEDIA_PUBLIC_URL": "https://media.example"}, True),
    ({"COURIER_MEDIA_MAX_BYTES": "0"}, False),
    ({"COURIER_MEDIA_MAX_BYTES": "1"}, True),
    ({"COURIER_MEDIA_MAX_BYTES": str(5 * GIB + 1)}, True),  # past one PUT: multipart
    # at most 10,000 parts of part_bytes (64 MiB by default), 10,000 x 5 GiB at most
    ({"COURIER_MEDIA_MAX_BYTES": str(10_000 * 64 * MIB)}, True),
    ({"COURIER_MEDIA_MAX_BYTES": str(10_000 * 64 * MIB + 1)}, False),
    ({"COURIER_MEDIA_MAX_BYTES": str(10_000 * 5 * GIB), "COURIER_MEDIA_PART_BYTES": str(5 * GIB)},
     True),
    ({"COURIER_MEDIA_MAX_BYTES": str(10_000 * 5 * GIB + 1),
      "COURIER_MEDIA_PART_BYTES": str(5 * GIB)}, False),
    ({"COURIER_MEDIA_MAX_BYTES": "lots"}, False),
    ({"COURIER_MEDIA_PART_BYTES": str(5 * MIB - 1)}, False),
    ({"COURIER_MEDIA_PART_BYTES": str(5 * MIB), "COURIER_MEDIA_MAX_BYTES": str(10_000 * 5 * MIB)},
     True),
    ({"COURIER_MEDIA_PART_BYTES": str(5 * MIB),
      "COURIER_MEDIA_MAX_BYTES": str(10_000 * 5 * MIB + 1)}, False),
    ({"COURIER_MEDIA_PART_BYTES": str(5 * GIB)}, True),
    ({"COURIER_MEDIA_PART_BYTES": str(5 * GIB + 1)}, False),
    ({"COURIER_MEDIA_PART_BYTES": "0"}, False),
    ({"COURIER_MEDIA_PART_BYTES": "big"}, False),
    ({"COURIER_MEDIA_MAX_BYTES_BY_APP": "a=1"}, True),
    ({"COURIER_MEDIA_MAX_BYTES_BY_APP": "a=0"}, False),
    ({"COURIER_MEDIA_MAX_BYTES_BY_APP": f"a={10_000 * 64 * MIB}"}, True),
    ({"COURIER_MEDIA_MAX_BYTES_BY_APP": f"a={10_000 * 64 * MIB + 1}"}, False),
    ({"COURIER_MEDIA_MAX_BYTES_BY_APP": "a"}, False),
    ({"COURIER_MEDIA_USER_QUOTA_BYTES": "0"}, False),
    ({"COURIER_MEDIA_USER_QUOTA_BYTES": str(2**62)}, True),
    ({"COURIER_MEDIA_USER_QUOTA_BYTES": str(2**62 + 1)}, False),
    ({"COURIER_MEDIA_CONTENT_TYPES": "image/*,application/pdf"}, True),
    ({"COURIER_MEDIA_CONTENT_TYPES": "image"}, False),
    ({"COURIER_MEDIA_CONTENT_TYPES": "*/*"}, False),
    ({"COURIER_MEDIA_CONTENT_TYPES": "Image/PNG"}, False),
    ({"COURIER_MEDIA_CONTENT_TYPES": ","}, False),
    ({"COURIER_MEDIA_URL_TTL_S": "0"}, False),
    ({"COURIER_MEDIA_URL_TTL_S": "1"}, True),
    ({"COURIER_MEDIA_URL_TTL_S": str(7 * 86400), "COURIER_MEDIA_UNREFERENCED_TTL_S":
      str(7 * 86400 + 1)}, True),
    ({"COURIER_MEDIA_URL_TTL_S": str(7 * 86400 + 1)}, False),
    ({"COURIER_MEDIA_UNREFERENCED_TTL_S": "300"}, False),  # not past the 300 s URL
    ({"COURIER_MEDIA_UNREFERENCED_TTL_S": "301"}, True),
    ({"COURIER_MEDIA_UNREFERENCED_TTL_S": str(30 * 86400 + 1)}, False),
    ({"COURIER_MEDIA_SWEEP_INTERVAL_S": "0.1"}, True),
    ({"COURIER_MEDIA_SWEEP_INTERVAL_S": "0.09"}, False),
    ({"COURIER_MEDIA_SWEEP_INTERVAL_S": "86400.1"}, False),
    ({"COURIER_MEDIA_LOCAL_DIR": "/tmp/x"}, True),
    ({"COURIER_MEDIA_NOPE": "1"}, False),
])
def test_media_keys_are_validated(env: dict[str, str], fine: bool) -> None:
    if fine:
        load_config(env)
        return
    with pytest.raises(ConfigError) as refused:
        load_config(env)
    assert "COURIER_MEDIA_" in str(refused.value)


def test_a_public_key_deployment_needs_a_url_secret_for_local_media(tmp_path: Path) -> None:
    key = tmp_path / "key.pem"
    key.write_text("not checked here")
    env = {"COURIER_AUTH_ALGORITHM": "EdDSA", "COURIER_AUTH_PUBLIC_KEY_FILE": str(key)}
    with pytest.raises(ConfigError, match="COURIER_MEDIA_URL_SECRET"):
        load_config(env)
    load_config({**env, "COURIER_MEDIA_URL_SECRET": "u" * 32})


def test_the_local_url_key_is_its_own_or_derived() -> None:
    derived = local_url_key(load_config({"COURIER_AUTH_SECRET": SECRET}))
    assert derived != SECRET.encode() and len(derived) == 32
    assert local_url_key(load_config({"COURIER_AUTH_SECRET": SECRET,
                                      "COURIER_MEDIA_URL_SECRET": "u" * 32})) == b"u" * 32


@pytest.mark.parametrize(("content_type", "allowed"), [
    ("image/png", True), ("image/jpeg", True), ("application/pdf", True),
    ("application/zip", False), ("text/html", False), ("imagex/png", False)])
def test_allowed_content_types(content_type: str, allowed: bool) -> None:
    media = load_config({"COURIER_MEDIA_CONTENT_TYPES": "image/*,application/pdf"}).media
    assert media.allows(content_type) is allowed


def _info(ciphertext: bytes, key: bytes, iv: bytes) -> EncryptedBlob:
    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()
    return EncryptedBlob(blob="b" + "0" * 32, key=b64(key), iv=b64(iv), size=len(ciphertext),
                         sha256=b64(hashlib.sha256(ciphertext).digest()))


def test_the_cipher_round_trips_and_hides_the_plaintext() -> None:
    plaintext = b"MARKER" * 10_000
    ciphertext, key, iv = encrypt(plaintext)
    assert len(ciphertext) == len(plaintext) and b"MARKER" not in ciphertext
    assert len(key) == 32 and len(iv) == 16 and iv[8:] == bytes(8)  # counter starts at 0
    assert decrypt(ciphertext, _info(ciphertext, key, iv)) == plaintext
    again, key2, iv2 = encrypt(plaintext)
    assert (again, key2, iv2) != (ciphertext, key, iv)  # fresh key and IV each time


def test_a_changed_ciphertext_fails_its_hash() -> None:
    ciphertext, key, iv = encrypt(b"payload")
    info = _info(ciphertext, key, iv)
    with pytest.raises(AttachmentError):
        decrypt(bytes([ciphertext[0] ^ 1]) + ciphertext[1:], info)


def test_thumbnails_of_images_only() -> None:
    out = io.BytesIO()
    Image.new("RGBA", (1000, 250), (1, 2, 3, 4)).save(out, format="PNG")
    thumb = thumbnail(out.getvalue())
    assert thumb is not None
    with Image.open(io.BytesIO(thumb)) as image:
        assert image.format == "JPEG" and image.size == (320, 80)
    assert thumbnail(b"not an image") is None
    assert thumbnail(b"") is None


def test_saved_files_stay_in_their_directory(tmp_path: Path) -> None:
    first = _save(tmp_path, "../../etc/passwd", b"1")
    second = _save(tmp_path, "../../etc/passwd", b"2")
    hidden = _save(tmp_path, ".bashrc", b"3")
    assert first == tmp_path / "passwd" and second == tmp_path / "passwd (1)"
    assert hidden == tmp_path / "bashrc" and _save(tmp_path, "", b"4") == tmp_path / "file"
    assert first.read_bytes() == b"1" and second.read_bytes() == b"2"


def test_local_signatures_bind_method_key_and_expiry(tmp_path: Path) -> None:
    secret = secrets.token_bytes(32)
    store = LocalBlobStore(tmp_path, secret, "http://h")
    url = store.download_url("app/b" + "0" * 32, 60)
    query = dict(part.split("=") for part in url.split("?")[1].split("&"))
    expires, sig = int(query["expires"]), query["sig"]
    with pytest.raises(ProtocolError) as missing:
        store.file("app/b" + "0" * 32, expires=expires, sig=sig)
    assert missing.value.code == "not_found"  # signature fine, no file
    for key, when in (("app/b" + "1" * 32, expires), ("other/b" + "0" * 32, expires),
                      ("app/b" + "0" * 32, expires + 1)):
        with pytest.raises(ProtocolError) as refused:
            store.file(key, expires=when, sig=sig)
        assert refused.value.code == "forbidden"
    late = LocalBlobStore(tmp_path, secret, "http://h")
    late_url = late.download_url("app/b" + "0" * 32, 1)
    late_query = dict(part.split("=") for part in late_url.split("?")[1].split("&"))
    while time.time() <= int(late_query["expires"]):
        time.sleep(0.1)  # until the signed second has passed
    with pytest.raises(ProtocolError, match="expired"):
        late.file("app/b" + "0" * 32, expires=int(late_query["expires"]),
                  sig=late_query["sig"])


@pytest.mark.parametrize(("size", "part", "sizes"), [
    (10, 10, [10]),
    (11, 10, [10, 1]),
    (20, 10, [10, 10]),
    (21, 10, [10, 10, 1]),
])
def test_objects_are_cut_into_parts_of_part_bytes(size: int, part: int,
                                                  sizes: list[int]) -> None:
    assert part_sizes(size, part) == sizes
