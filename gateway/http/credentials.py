"""Credentials and bodies of the service, admin and push-registration REST routes.

Service and admin routes authenticate with a shared bearer secret from configuration,
compared in constant time; an empty secret turns the routes off (every call is refused).
Bodies are read with a limit of their own (notification batches are larger than the
gateway's frame limit) and decoded strictly into typed structs.
"""

import hmac
from typing import TypeVar

from aiohttp import web

from schemas.codec import decode_document
from schemas.errors import ErrorCode, ProtocolError

T = TypeVar("T")
CHUNK = 64 * 1024


def bearer(request: web.Request) -> str:
    """The bearer token of a request, or ``unauthorized``."""
    auth = request.headers.get("Authorization", "")
    if not auth.startswith("Bearer "):
        raise ProtocolError(ErrorCode.UNAUTHORIZED, "missing bearer token")
    return auth.removeprefix("Bearer ").strip()


def require_secret(request: web.Request, secret: str, setting: str) -> None:
    """Refuse the request unless it carries ``secret`` (``setting`` names the config key)."""
    if not secret:
        raise ProtocolError(ErrorCode.UNAUTHORIZED, f"this API is off: {setting} is not set")
    if not hmac.compare_digest(bearer(request).encode(), secret.encode()):
        raise ProtocolError(ErrorCode.UNAUTHORIZED, "bad credential")


async def read_json(request: web.Request, kind: type[T], limit: int) -> T:
    """Read at most ``limit`` bytes of body and decode it as ``kind``: ``too_large`` over the
    limit, ``bad_frame`` for non-JSON, ``invalid`` for a JSON body of the wrong shape."""
    if request.content_length is not None and request.content_length > limit:
        raise ProtocolError(ErrorCode.TOO_LARGE, f"request body over {limit} bytes")
    body = bytearray()
    while chunk := await request.content.read(CHUNK):
        body.extend(chunk)
        if len(body) > limit:
            raise ProtocolError(ErrorCode.TOO_LARGE, f"request body over {limit} bytes")
    return decode_document(bytes(body), kind)
