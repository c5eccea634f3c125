"""HTTP problem responses (``application/problem+json``) for every REST error."""

import math

import msgspec
import structlog
from aiohttp import web
from aiohttp.typedefs import Handler

from schemas.errors import HTTP_STATUS, RETRYABLE, ErrorCode, ProtocolError
from schemas.rest import Problem

_encoder = msgspec.json.Encoder()
log = structlog.get_logger(__name__)


def problem(code: ErrorCode, detail: str, retry_after_s: float | None = None) -> web.Response:
    """The problem response of ``code``; with ``retry_after_s`` (``rate_limited``) also the
    ``Retry-After`` header, in whole seconds rounded up."""
    status = HTTP_STATUS[code]
    body = Problem(title=code.replace("_", " "), status=status, code=code, detail=detail,
                   retry=code in RETRYABLE,
                   retry_after_s=None if retry_after_s is None else round(retry_after_s, 3))
    headers = None if retry_after_s is None else {
        "Retry-After": str(max(1, math.ceil(retry_after_s)))}
    return web.Response(status=status, body=_encoder.encode(body), headers=headers,
                        content_type="application/problem+json")


def problem_of(exc: ProtocolError) -> web.Response:
    return problem(exc.code, exc.message, exc.retry_after_s)


@web.middleware
async def problem_middleware(request: web.Request,
                             handler: Handler) -> web.StreamResponse:
    """Map ``ProtocolError``, aiohttp's own HTTP errors and bugs to problem responses."""
    try:
        return await handler(request)
    except ProtocolError as exc:
        return problem_of(exc)
    except web.HTTPException as exc:
        if exc.status == 404:
            return problem(ErrorCode.NOT_FOUND, f"no route {request.method} {request.path}")
        if exc.status == 405:
            return problem(ErrorCode.INVALID, f"method {request.method} not allowed here")
        if exc.status == 413:
            return problem(ErrorCode.TOO_LARGE, "request body too large")
        raise
    except Exception:
        log.exception("request_failed", method=request.method, path=request.path)
        return problem(ErrorCode.INTERNAL, "internal error")
