"""Query and path parameters of REST routes, validated into typed values or ``invalid``
problems that name the parameter.

Integers are bounded by what the stores hold (``schemas.bounds.MAX_INT``) unless a route
bounds them tighter, so no value reaches a store it would overflow."""

from aiohttp import web

from schemas.bounds import MAX_INT
from schemas.errors import ErrorCode, ProtocolError


def _bounded(raw: str, what: str, low: int, high: int) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise ProtocolError(ErrorCode.INVALID, f"{what} must be an integer") from None
    if not low <= value <= high:
        raise ProtocolError(ErrorCode.INVALID, f"{what} must be within [{low}, {high}]")
    return value


def optional_int_query(request: web.Request, name: str, low: int,
                       high: int = MAX_INT) -> int | None:
    """The integer query ``name`` within [low, high], or None when absent."""
    raw = request.query.get(name)
    return None if raw is None else _bounded(raw, f"query '{name}'", low, high)


def int_query(request: web.Request, name: str, default: int, low: int,
              high: int = MAX_INT) -> int:
    """The integer query ``name`` within [low, high], or ``default`` when absent."""
    value = optional_int_query(request, name, low, high)
    return default if value is None else value


def int_path(request: web.Request, name: str, low: int, high: int = MAX_INT) -> int:
    """The integer path segment ``{name}`` within [low, high]."""
    return _bounded(request.match_info[name], f"path '{name}'", low, high)
