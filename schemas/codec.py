"""Pure encode/decode of frames and envelopes (no I/O). Encoders and decoders are built once."""

from typing import Any, Final, TypeVar

import msgspec

from schemas.bounds import MAX_JSON_DEPTH, too_deep
from schemas.errors import ErrorCode, ProtocolError
from schemas.frames import CLIENT_FRAME_TYPES, FRAME_TYPES, ClientFrame, ServerFrame

_client_decoder: Final[msgspec.json.Decoder[ClientFrame]] = msgspec.json.Decoder(ClientFrame)
_server_decoder: Final[msgspec.json.Decoder[ServerFrame]] = msgspec.json.Decoder(
    ServerFrame)
_json_encoder: Final = msgspec.json.Encoder()
_any_decoder: Final = msgspec.json.Decoder(dict[str, Any])
SERVER_FRAME_TYPES: Final = frozenset(FRAME_TYPES) - CLIENT_FRAME_TYPES
T = TypeVar("T")


def encode_frame(frame: msgspec.Struct) -> bytes:
    """JSON bytes of a frame."""
    return _json_encoder.encode(frame)


def decode_client_frame(data: bytes | str) -> ClientFrame:
    """Decode a client frame strictly, mapping every failure to one typed ``ProtocolError``."""
    try:
        return _client_decoder.decode(data)
    except (msgspec.ValidationError, msgspec.DecodeError, RecursionError) as exc:
        raise _classify(data, exc) from None


def decode_document(data: bytes, kind: type[T]) -> T:
    """Decode a JSON body strictly as ``kind``: ``bad_frame`` for text that is not JSON or
    nests deeper than ``MAX_JSON_DEPTH``, ``invalid`` for a document of the wrong shape."""
    try:
        return msgspec.json.decode(data, type=kind)
    except (msgspec.ValidationError, msgspec.DecodeError, RecursionError) as exc:
        if isinstance(exc, RecursionError) or too_deep(data):
            raise _too_deep("a body") from None
        if isinstance(exc, msgspec.ValidationError):  # a subclass of DecodeError
            raise ProtocolError(ErrorCode.INVALID, str(exc)) from None
        raise ProtocolError(ErrorCode.BAD_FRAME, f"body is not JSON: {exc}") from None


def _too_deep(what: str) -> ProtocolError:
    return ProtocolError(ErrorCode.BAD_FRAME,
                         f"{what} may nest arrays and objects {MAX_JSON_DEPTH} levels deep")


class _Tagged(msgspec.Struct):
    type: str = ""


_tag_decoder: Final = msgspec.json.Decoder(_Tagged)


def decode_server_frame(data: bytes | str) -> ServerFrame | None:
    """Decode a frame sent by a gateway (used by the client library); None for a frame type
    this version does not know (a newer server), so clients can skip it."""
    try:
        return _server_decoder.decode(data)
    except msgspec.ValidationError:
        if _tag_decoder.decode(data).type not in SERVER_FRAME_TYPES:
            return None
        raise


def _classify(data: bytes | str, exc: Exception) -> ProtocolError:
    """Tell a frame too deep to decode, text that is not JSON, an unknown ``type`` and a
    malformed frame of a known type apart (the depth is checked first: the untyped decoding
    below would recurse into any nesting)."""
    if isinstance(exc, RecursionError) or too_deep(data):
        return _too_deep("a frame")
    if not isinstance(exc, msgspec.ValidationError):  # DecodeError, its base class
        return ProtocolError(ErrorCode.BAD_FRAME, f"not a JSON frame: {exc}")
    try:
        raw = _any_decoder.decode(data)
    except (msgspec.ValidationError, msgspec.DecodeError):
        return ProtocolError(ErrorCode.BAD_FRAME, "a frame must be a JSON object")
    frame_type = raw.get("type")
    if not isinstance(frame_type, str):
        return ProtocolError(ErrorCode.BAD_FRAME, "a frame needs a string field 'type'")
    if frame_type not in CLIENT_FRAME_TYPES:
        return ProtocolError(ErrorCode.UNKNOWN_TYPE, f"unknown frame type {frame_type!r}")
    return ProtocolError(ErrorCode.INVALID, str(exc))
