"""Blobs in an S3 bucket (AWS S3, SeaweedFS, MinIO) behind SigV4 presigned URLs.

boto3, not aiobotocore: presigning, the hot path (every upload slot and download grant), is a
local HMAC computation with no I/O, so it is cheap and synchronous; the few calls that talk to
S3 (``size_of`` at send time, ``delete`` in the sweeper, ``open``) run in a worker thread.
boto3 is a dependency already (the SNS push provider), and aiobotocore pins botocore to narrow
ranges that would fight it.

The upload URL signs ``Content-Length`` and ``Content-Type`` (``X-Amz-SignedHeaders``), so the
storage itself refuses a body of another size or type with 403, whatever the client claims.
Multipart uploads: ``CreateMultipartUpload`` (the content type is set there), one presigned
``UploadPart`` URL per part with its ``Content-Length`` signed, ``CompleteMultipartUpload``
(S3 checks the ETags, the order and the size of every part but the last) and
``AbortMultipartUpload``.
"""

import asyncio
from typing import Any

import boto3
from botocore.config import Config as BotoConfig
from botocore.exceptions import BotoCoreError, ClientError

from blobs.base import PresignedUpload
from schemas.errors import ErrorCode, ProtocolError


class S3BlobStore:
    """Objects in ``bucket``; ``create_bucket``: make it at ``open`` if it is missing."""

    def __init__(self, bucket: str, *, endpoint_url: str = "", region: str = "us-east-1",
                 access_key: str = "", secret_key: str = "",
                 create_bucket: bool = False) -> None:
        self.bucket = bucket
        self._create_bucket = create_bucket
        options: dict[str, Any] = {"region_name": region, "config": BotoConfig(
            signature_version="s3v4", s3={"addressing_style": "path"},
            retries={"max_attempts": 3, "mode": "standard"})}
        if endpoint_url:
            options["endpoint_url"] = endpoint_url
        if access_key:
            options["aws_access_key_id"] = access_key
            options["aws_secret_access_key"] = secret_key
        self._client: Any = boto3.client("s3", **options)

    async def open(self) -> None:
        await asyncio.to_thread(self._ensure_bucket)

    def _ensure_bucket(self) -> None:
        try:
            self._client.head_bucket(Bucket=self.bucket)
        except ClientError as exc:
            if not self._create_bucket or _status(exc) != 404:
                raise
            self._client.create_bucket(Bucket=self.bucket)

    async def close(self) -> None:
        await asyncio.to_thread(self._client.close)

    def upload(self, key: str, size: int, content_type: str, expires_s: int) -> PresignedUpload:
        url = self._client.generate_presigned_url("put_object", Params={
            "Bucket": self.bucket, "Key": key, "ContentLength": size,
            "ContentType": content_type}, ExpiresIn=expires_s)
        return PresignedUpload(method="PUT", url=str(url),
                               headers={"Content-Type": content_type})

    def download_url(self, key: str, expires_s: int) -> str:
        return str(self._client.generate_presigned_url(
            "get_object", Params={"Bucket": self.bucket, "Key": key}, ExpiresIn=expires_s))

    async def size_of(self, key: str) -> int | None:
        try:
            head = await asyncio.to_thread(self._client.head_object, Bucket=self.bucket,
                                           Key=key)
        except ClientError as exc:
            if _status(exc) == 404:
                return None
            raise ProtocolError(ErrorCode.UNAVAILABLE, f"blob storage: {exc}") from None
        except BotoCoreError as exc:
            raise ProtocolError(ErrorCode.UNAVAILABLE, f"blob storage: {exc}") from None
        return int(head["ContentLength"])

    async def delete(self, key: str) -> None:
        await asyncio.to_thread(self._client.delete_object, Bucket=self.bucket, Key=key)

    async def put_object(self, key: str, data: bytes, content_type: str) -> None:
        try:
            await asyncio.to_thread(self._client.put_object, Bucket=self.bucket, Key=key,
                                    Body=data, ContentType=content_type)
        except (ClientError, BotoCoreError) as exc:
            raise ProtocolError(ErrorCode.UNAVAILABLE, f"blob storage: {exc}") from None

    async def get_object(self, key: str) -> bytes | None:
        try:
            return await asyncio.to_thread(self._read, key)
        except ClientError as exc:
            if _status(exc) == 404:
                return None
            raise ProtocolError(ErrorCode.UNAVAILABLE, f"blob storage: {exc}") from None
        except BotoCoreError as exc:
            raise ProtocolError(ErrorCode.UNAVAILABLE, f"blob storage: {exc}") from None

    def _read(self, key: str) -> bytes:
        response = self._client.get_object(Bucket=self.bucket, Key=key)
        with response["Body"] as body:
            return bytes(body.read())

    async def create_multipart(self, key: str, content_type: str) -> str:
        try:
            created = await asyncio.to_thread(self._client.create_multipart_upload,
                                              Bucket=self.bucket, Key=key,
                                              ContentType=content_type)
        except (ClientError, BotoCoreError) as exc:
            raise ProtocolError(ErrorCode.UNAVAILABLE, f"blob storage: {exc}") from None
        return str(created["UploadId"])

    def upload_part(self, key: str, upload_id: str, number: int, size: int,
                    expires_s: int) -> PresignedUpload:
        url = self._client.generate_presigned_url("upload_part", Params={
            "Bucket": self.bucket, "Key": key, "UploadId": upload_id, "PartNumber": number,
            "ContentLength": size}, ExpiresIn=expires_s)
        return PresignedUpload(method="PUT", url=str(url), headers={})

    async def complete_multipart(self, key: str, upload_id: str,
                                 parts: list[tuple[int, str]]) -> None:
        try:
            await asyncio.to_thread(
                self._client.complete_multipart_upload, Bucket=self.bucket, Key=key,
                UploadId=upload_id, MultipartUpload={"Parts": [
                    {"PartNumber": number, "ETag": etag} for number, etag in parts]})
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if code == "NoSuchUpload":
                raise ProtocolError(ErrorCode.NOT_FOUND, "no such multipart upload") from None
            if code in ("InvalidPart", "InvalidPartOrder", "EntityTooSmall"):
                raise ProtocolError(ErrorCode.INVALID, f"parts refused: {code}") from None
            raise ProtocolError(ErrorCode.UNAVAILABLE, f"blob storage: {exc}") from None
        except BotoCoreError as exc:
            raise ProtocolError(ErrorCode.UNAVAILABLE, f"blob storage: {exc}") from None

    async def abort_multipart(self, key: str, upload_id: str) -> None:
        try:
            await asyncio.to_thread(self._client.abort_multipart_upload, Bucket=self.bucket,
                                    Key=key, UploadId=upload_id)
        except ClientError as exc:
            if _status(exc) != 404:
                raise


def _status(exc: ClientError) -> int:
    return int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))
