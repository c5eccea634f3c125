"""Pure encode/decode of frames and envelopes (no I/O). Encoders and decoders are built once."""

from typing import Any, Final

import msgspec

from schemas.errors import ErrorCode, ProtocolError
from schemas.frames import CLIENT_FRAME_TYPES, FRAME_TYPES, ClientFrame, ServerFrame

_client_decoder: Final[msgspec.json.Decoder[ClientFrame]] = msgspec.json.Decoder(ClientFrame)
_server_decoder: Final[msgspec.json.Decoder[ServerFrame]] = msgspec.json.Decoder(
    ServerFrame)
_json_encoder: Final = msgspec.json.Encoder()
_any_decoder: Final = msgspec.json.Decoder(dict[str, Any])
SERVER_FRAME_TYPES: Final = frozenset(FRAME_TYPES) - CLIENT_FRAME_TYPES


def encode_frame(frame: msgspec.Struct) -> bytes:
    """JSON bytes of a frame."""
    return _json_encoder.encode(frame)


def decode_client_frame(data: bytes | str) -> ClientFrame:
    """Decode a client frame strictly, mapping every failure to one typed ``ProtocolError``."""
    try:
        return _client_decoder.decode(data)
    except msgspec.ValidationError as exc:
        raise _classify(data, exc) from None
    except msgspec.DecodeError as exc:
        raise ProtocolError(ErrorCode.BAD_FRAME, f"not a JSON frame: {exc}") from None


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


def _classify(data: bytes | str, exc: msgspec.ValidationError) -> ProtocolError:
    """Tell an unknown ``type`` from a malformed frame of a known type."""
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
