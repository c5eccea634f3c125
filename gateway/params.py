"""Query parameters of REST routes, validated into typed values or ``invalid`` problems."""

from aiohttp import web

from schemas.errors import ErrorCode, ProtocolError


def optional_int_query(request: web.Request, name: str, low: int,
                       high: int | None = None) -> int | None:
    """The integer query ``name`` within [low, high], or None when absent."""
    raw = request.query.get(name)
    if raw is None:
        return None
    try:
        value = int(raw)
    except ValueError:
        raise ProtocolError(ErrorCode.INVALID, f"query '{name}' must be an integer") from None
    if value < low or (high is not None and value > high):
        raise ProtocolError(ErrorCode.INVALID, f"query '{name}' must be within [{low}, {high}]")
    return value


def int_query(request: web.Request, name: str, default: int, low: int,
              high: int | None = None) -> int:
    """The integer query ``name`` within [low, high], or ``default`` when absent."""
    value = optional_int_query(request, name, low, high)
    return default if value is None else value
