"""The blob store configuration names."""

import hashlib
import hmac
from pathlib import Path

from blobs.base import BlobStore
from blobs.local import LocalBlobStore
from blobs.s3 import S3BlobStore
from runtime.config import Config


def local_url_key(config: Config) -> bytes:
    """The HMAC key of local URLs: ``media.url_secret``, else one derived from
    ``auth.secret`` (so embedded mode needs no second secret)."""
    if config.media.url_secret:
        return config.media.url_secret.encode()
    return hmac.new(config.auth.secret.encode(), b"courier media urls", hashlib.sha256).digest()


def create_blob_store(config: Config) -> BlobStore:
    media = config.media
    if media.backend == "s3":
        return S3BlobStore(media.s3_bucket, endpoint_url=media.s3_endpoint_url,
                           region=media.s3_region, access_key=media.s3_access_key,
                           secret_key=media.s3_secret_key,
                           create_bucket=media.s3_create_bucket)
    return LocalBlobStore(Path(media.local_dir), local_url_key(config), media.public_url)
