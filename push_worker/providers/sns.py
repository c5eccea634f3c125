"""The AWS SNS provider: mobile push through SNS platform applications (APNs, FCM).

Each registered token gets a platform endpoint under the platform application configured for
its platform (``create_platform_endpoint`` is idempotent for the same token). A token seen for
the first time since the device (re-)registered is also re-enabled, as AWS recommends: the app
just reported it valid. The wake-up is published with ``MessageStructure="json"``: a
``default`` text (required by SNS) plus a platform-specific payload carrying the collapse key
(APNs ``apns-collapse-id`` through the ``AWS.SNS.MOBILE.APNS.COLLAPSE_ID`` attribute, FCM
``collapse_key``). iOS receives a mutable alert with a fixed localisation key for the app's
notification service extension to replace after it fetched and decrypted the messages.

boto3 is synchronous: every call runs in this provider's own bounded thread pool.
Error mapping: ``EndpointDisabled`` and ``InvalidParameter`` reject the token; throttling, SNS
internal errors and connection failures are retried; anything else fails.
"""

import asyncio
import re
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import boto3
import msgspec
from botocore.config import Config as BotoConfig
from botocore.exceptions import BotoCoreError, ClientError

from push_worker.providers.base import Outcome, PushTarget, SendResult
from runtime.config import PushConfig
from schemas.push import WakeUp

T = TypeVar("T")
_encoder = msgspec.json.Encoder()
#: Localisation key of the alert iOS shows until the app's extension replaces it.
APNS_ALERT_KEY = "COURIER_WAKE"
ENDPOINT_CACHE = 100_000
REJECTED_CODES = frozenset({"EndpointDisabled", "InvalidParameter"})
RETRY_CODES = frozenset({"Throttling", "ThrottlingException", "Throttled", "InternalError",
                         "InternalFailure", "ServiceUnavailable", "RequestTimeout",
                         "KMSThrottling"})
_EXISTING_ENDPOINT = re.compile(r"Endpoint (arn:\S+) already exists")


def sns_message(platform: str, wake: WakeUp) -> tuple[str, dict[str, dict[str, str]]]:
    """The ``Message`` (JSON structure with ``default``) and ``MessageAttributes`` of a wake-up
    for ``platform`` (pure; unit-tested for the keys real SNS insists on)."""
    wake_json = _encoder.encode(wake).decode()
    message: dict[str, str] = {"default": wake_json}
    attributes: dict[str, dict[str, str]] = {}
    if platform in ("apns", "apns_sandbox"):
        apns = {"aps": {"alert": {"loc-key": APNS_ALERT_KEY}, "mutable-content": 1,
                        "thread-id": wake.collapse_key},
                "courier": msgspec.to_builtins(wake)}
        message["APNS" if platform == "apns" else "APNS_SANDBOX"] = _encoder.encode(apns).decode()
        attributes = {
            "AWS.SNS.MOBILE.APNS.COLLAPSE_ID": _string(wake.collapse_key),
            "AWS.SNS.MOBILE.APNS.PUSH_TYPE": _string("alert"),
            "AWS.SNS.MOBILE.APNS.PRIORITY": _string("10"),
        }
    elif platform == "fcm":
        fcm = {"fcmV1Message": {"message": {
            "android": {"collapse_key": wake.collapse_key, "priority": "high"},
            "data": {"courier": wake_json}}}}
        message["GCM"] = _encoder.encode(fcm).decode()
    else:
        raise ValueError(f"SNS does not deliver to platform {platform!r}")
    return _encoder.encode(message).decode(), attributes


def _string(value: str) -> dict[str, str]:
    return {"DataType": "String", "StringValue": value}


class SnsProvider:
    """Publishes to SNS platform endpoints."""

    name = "sns"

    def __init__(self, client: Any, applications: dict[str, str], threads: int) -> None:
        self._client = client
        self._applications = applications
        self._executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="sns")
        self._endpoints: OrderedDict[tuple[str, str, int], str] = OrderedDict()

    @classmethod
    def from_config(cls, config: PushConfig) -> "SnsProvider":
        client = boto3.session.Session().client(
            "sns", region_name=config.sns_region, endpoint_url=config.sns_endpoint_url or None,
            config=BotoConfig(retries={"max_attempts": 2, "mode": "standard"},
                              connect_timeout=5, read_timeout=10,
                              max_pool_connections=config.concurrency))
        applications = {platform: arn for platform, arn in (
            ("apns", config.sns_apns_arn), ("apns_sandbox", config.sns_apns_sandbox_arn),
            ("fcm", config.sns_fcm_arn)) if arn}
        return cls(client, applications, config.concurrency)

    async def send(self, target: PushTarget, wake: WakeUp) -> SendResult:
        application = self._applications.get(target.platform)
        if application is None:
            return SendResult(Outcome.FAILED, f"no SNS application for {target.platform!r}")
        message, attributes = sns_message(target.platform, wake)
        key = (application, target.token, target.registered_at)
        try:
            endpoint = await self._endpoint(key)
            await self._call(self._client.publish, TargetArn=endpoint, Message=message,
                             MessageStructure="json", MessageAttributes=attributes)
        except ClientError as exc:
            return self._classify(key, exc)
        except BotoCoreError as exc:
            return SendResult(Outcome.RETRY, f"SNS unreachable: {exc!r}")
        return SendResult(Outcome.SENT)

    async def close(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)

    async def _endpoint(self, key: tuple[str, str, int]) -> str:
        """The endpoint ARN of a token, created (and enabled) once per registration."""
        cached = self._endpoints.get(key)
        if cached is not None:
            self._endpoints.move_to_end(key)
            return cached
        application, token, _ = key
        try:
            reply = await self._call(self._client.create_platform_endpoint,
                                     PlatformApplicationArn=application, Token=token)
            arn = str(reply["EndpointArn"])
        except ClientError as exc:
            existing = _EXISTING_ENDPOINT.search(str(exc))
            if existing is None:
                raise
            arn = existing.group(1)
        attributes = await self._call(self._client.get_endpoint_attributes, EndpointArn=arn)
        current = attributes.get("Attributes", {})
        if current.get("Enabled") != "true" or current.get("Token") != token:
            await self._call(self._client.set_endpoint_attributes, EndpointArn=arn,
                             Attributes={"Enabled": "true", "Token": token})
        self._endpoints[key] = arn
        if len(self._endpoints) > ENDPOINT_CACHE:
            self._endpoints.popitem(last=False)
        return arn

    def _classify(self, key: tuple[str, str, int], exc: ClientError) -> SendResult:
        error = exc.response.get("Error", {})
        code = str(error.get("Code", ""))
        detail = f"{code}: {error.get('Message', '')}"
        if code in REJECTED_CODES:
            self._endpoints.pop(key, None)
            return SendResult(Outcome.REJECTED, detail)
        if code == "NotFound":  # the endpoint was deleted: create it again next time
            self._endpoints.pop(key, None)
            return SendResult(Outcome.RETRY, detail)
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
        if code in RETRY_CODES or status >= 500:
            return SendResult(Outcome.RETRY, detail)
        return SendResult(Outcome.FAILED, detail)

    async def _call(self, method: Callable[..., T], **kwargs: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, lambda: method(**kwargs))
