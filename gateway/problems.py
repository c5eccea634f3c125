"""HTTP problem responses (``application/problem+json``) for every REST error."""

import msgspec
import structlog
from aiohttp import web
from aiohttp.typedefs import Handler

from schemas.errors import HTTP_STATUS, RETRYABLE, ErrorCode, ProtocolError
from schemas.rest import Problem

_encoder = msgspec.json.Encoder()
log = structlog.get_logger(__name__)


def problem(code: ErrorCode, detail: str) -> web.Response:
    status = HTTP_STATUS[code]
    body = Problem(title=code.replace("_", " "), status=status, code=code, detail=detail,
                   retry=code in RETRYABLE)
    return web.Response(status=status, body=_encoder.encode(body),
                        content_type="application/problem+json")


@web.middleware
async def problem_middleware(request: web.Request,
                             handler: Handler) -> web.StreamResponse:
    """Map ``ProtocolError``, aiohttp's own HTTP errors and bugs to problem responses."""
    try:
        return await handler(request)
    except ProtocolError as exc:
        return problem(exc.code, exc.message)
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
