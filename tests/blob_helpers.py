"""What a blob storage holds, read past the blob store (the tests' view of the bucket or the
directory): objects, open multipart uploads, their parts."""

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config as BotoConfig

from infra.seaweedfs import SeaweedFs


def s3_client(server: SeaweedFs) -> Any:
    return boto3.client("s3", endpoint_url=server.endpoint_url, region_name="us-east-1",
                        aws_access_key_id=server.access_key,
                        aws_secret_access_key=server.secret_key,
                        config=BotoConfig(signature_version="s3v4",
                                          s3={"addressing_style": "path"}))


def s3_held(server: SeaweedFs, bucket: str) -> Callable[[], list[str]]:
    """Every object and open multipart upload in ``bucket``."""
    s3 = s3_client(server)

    def held() -> list[str]:
        objects = s3.list_objects_v2(Bucket=bucket).get("Contents", [])
        uploads = s3.list_multipart_uploads(Bucket=bucket).get("Uploads", [])
        return ([f"object {o['Key']}" for o in objects]
                + [f"upload {u['Key']} {u['UploadId']}" for u in uploads])

    return held


def local_held(root: Path) -> Callable[[], list[str]]:
    """Every file under ``root`` (blobs, parts of multipart uploads)."""
    def held() -> list[str]:
        return sorted(str(path.relative_to(root)) for path in root.rglob("*")
                      if path.is_file())

    return held


async def wait_past(deadline: float) -> None:
    """Until the wall clock is past ``deadline`` (a signed URL's expiry, in Unix seconds)."""
    while time.time() <= deadline:
        await asyncio.sleep(0.1)
