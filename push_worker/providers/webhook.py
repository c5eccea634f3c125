"""The webhook provider: POSTs each wake-up as JSON to a URL the deployment runs (web push
gateways, custom transports), signed so the receiver can tell it came from Courier.

Signature: ``Courier-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>." + body>`` with
the configured secret; receivers recompute it and reject old timestamps (replays).
Status mapping: 2xx sent; 410 Gone rejected (the token is dead: disabled); 408, 429 and 5xx,
timeouts and connection errors retried; any other status failed (dead-lettered).
"""

import hashlib
import hmac
import time

import aiohttp
import msgspec

from push_worker.providers.base import Outcome, PushTarget, SendResult
from schemas.push import WakeUp

_encoder = msgspec.json.Encoder()
SIGNATURE_HEADER = "Courier-Signature"
RETRY_STATUSES = frozenset({408, 429})


class WebhookPush(msgspec.Struct):
    """The JSON body of a webhook request."""

    device: str
    user: str
    app: str
    platform: str
    token: str
    wake: WakeUp


def signature(secret: bytes, timestamp: int, body: bytes) -> str:
    """The ``Courier-Signature`` value of ``body`` sent at ``timestamp``."""
    mac = hmac.new(secret, f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={mac}"


def verify_signature(secret: bytes, header: str, body: bytes, now: int,
                     tolerance_s: int = 300) -> bool:
    """What a receiver checks: a well-formed header, a fresh timestamp, a matching MAC."""
    parts = dict(item.partition("=")[::2] for item in header.split(","))
    try:
        timestamp = int(parts.get("t", ""))
    except ValueError:
        return False
    if abs(now - timestamp) > tolerance_s:
        return False
    return hmac.compare_digest(signature(secret, timestamp, body), header)


class WebhookProvider:
    """POSTs wake-ups to one URL with one aiohttp session."""

    name = "webhook"

    def __init__(self, url: str, secret: str, timeout_s: float) -> None:
        self._url = url
        self._secret = secret.encode()
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout_s))

    async def send(self, target: PushTarget, wake: WakeUp) -> SendResult:
        body = _encoder.encode(WebhookPush(device=target.device, user=target.user,
                                           app=target.app, platform=target.platform,
                                           token=target.token, wake=wake))
        headers = {"Content-Type": "application/json",
                   SIGNATURE_HEADER: signature(self._secret, int(time.time()), body),
                   "Courier-Collapse-Key": wake.collapse_key}
        try:
            async with self._session.post(self._url, data=body, headers=headers) as response:
                status = response.status
                await response.read()
        except (aiohttp.ClientError, TimeoutError) as exc:
            return SendResult(Outcome.RETRY, f"webhook unreachable: {exc!r}")
        return _classify(status)

    async def close(self) -> None:
        await self._session.close()


def _classify(status: int) -> SendResult:
    if 200 <= status < 300:
        return SendResult(Outcome.SENT)
    detail = f"webhook answered {status}"
    if status == 410:
        return SendResult(Outcome.REJECTED, detail)
    if status in RETRY_STATUSES or status >= 500:
        return SendResult(Outcome.RETRY, detail)
    return SendResult(Outcome.FAILED, detail)
