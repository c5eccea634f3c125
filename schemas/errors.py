"""Error codes (in ``error`` frames and HTTP problem responses) and WebSocket close codes.

Every error says whether retrying the same request can succeed (``retry``). Close codes in the
4000-4099 range mean "reconnect is allowed, with backoff"; 4100-4199 mean "do not reconnect
with the same credentials"; 1001, 1002, 1007 and 1009 are the standard WebSocket codes (the
last three sent by the WebSocket layer itself when a frame breaks the protocol).
"""

import enum
from typing import Final


class ErrorCode(enum.StrEnum):
    """Machine-readable reason of an ``error`` frame or a problem response."""

    BAD_FRAME = "bad_frame"  # not JSON, not an object, or no "type"
    UNKNOWN_TYPE = "unknown_type"  # "type" names no client frame
    INVALID = "invalid"  # a field is missing, of the wrong type, or out of range
    TOO_LARGE = "too_large"  # frame or body over the configured maximum
    UNAUTHORIZED = "unauthorized"  # missing, malformed, forged or expired token
    FORBIDDEN = "forbidden"  # authenticated, but not allowed to do this
    DISABLED = "disabled"  # the device, user or module is disabled by an administrator
    NOT_MEMBER = "not_member"  # not a member of the conversation
    UNKNOWN_RECIPIENT = "unknown_recipient"  # the destination does not exist
    NOT_FOUND = "not_found"  # a REST resource that does not exist
    CONFLICT = "conflict"  # a REST write that contradicts current state
    RATE_LIMITED = "rate_limited"  # too many frames or requests; slow down and retry
    UNSUPPORTED_VERSION = "unsupported_version"  # the client asked for another protocol
    UNAVAILABLE = "unavailable"  # a dependency did not answer in time; retry
    INTERNAL = "internal"  # a bug: reported and logged with the request id


RETRYABLE: Final = frozenset(
    {ErrorCode.RATE_LIMITED, ErrorCode.UNAVAILABLE, ErrorCode.INTERNAL}
)

#: HTTP status used when the same code is returned by the REST API.
HTTP_STATUS: Final[dict[ErrorCode, int]] = {
    ErrorCode.BAD_FRAME: 400,
    ErrorCode.UNKNOWN_TYPE: 400,
    ErrorCode.INVALID: 422,
    ErrorCode.TOO_LARGE: 413,
    ErrorCode.UNAUTHORIZED: 401,
    ErrorCode.FORBIDDEN: 403,
    ErrorCode.DISABLED: 403,
    ErrorCode.NOT_MEMBER: 403,
    ErrorCode.UNKNOWN_RECIPIENT: 404,
    ErrorCode.NOT_FOUND: 404,
    ErrorCode.CONFLICT: 409,
    ErrorCode.RATE_LIMITED: 429,
    ErrorCode.UNSUPPORTED_VERSION: 400,
    ErrorCode.UNAVAILABLE: 503,
    ErrorCode.INTERNAL: 500,
}


class CloseCode(enum.IntEnum):
    """WebSocket close codes sent by the gateway."""

    GOING_AWAY = 1001  # gateway draining for shutdown: reconnect (to another gateway)
    PROTOCOL_ERROR = 1002  # a frame that breaks RFC 6455 (bad opcode, stray continuation)
    INVALID_TEXT = 1007  # a text frame that is not valid UTF-8: reconnect, send valid UTF-8
    MESSAGE_TOO_BIG = 1009  # a frame over max_frame_bytes: reconnect and send smaller frames
    SLOW_CONSUMER = 4008  # over a byte budget, or not reading: reconnect; messages wait
    TOO_MANY_ERRORS = 4009  # repeated bad frames or rate-limit abuse: reconnect after backoff
    TOKEN_EXPIRED = 4010  # the token expired during the session: get a new token, reconnect
    REPLACED = 4011  # the same device connected again elsewhere; this socket is superseded
    MOVED = 4012  # gateway draining: reconnect at once, through the balancer (to another one)
    UNAUTHORIZED = 4101  # the token was refused: do not reconnect with it
    DISABLED = 4103  # device, user or module disabled by an administrator: do not reconnect


class ProtocolError(Exception):
    """An error to report to the client as a typed ``error`` frame or problem response."""

    def __init__(self, code: ErrorCode, message: str, *,
                 retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        #: ``rate_limited``: seconds until the same request can succeed.
        self.retry_after_s = retry_after_s
