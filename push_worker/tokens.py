"""The push worker's side of the registration bucket ``courier_push_tokens``: read a device's
registration, and disable a token a provider rejected.

Why a NATS KV bucket and not the message store: registrations are small, keyed by device,
written rarely (on registration) and read per push by every push worker replica; the bucket
is durable (file storage), replicated like the streams, and shared by every process without a
storage RPC hop or a per-backend implementation (SQLite, Cassandra). Compare-and-set keeps a
rotation and a rejection from overwriting each other: a rejection disables the token only if
the registration still holds that token.
"""

import time

import msgspec
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from schemas.push import PushRegistration, registration_key

_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(PushRegistration)


class Registration(msgspec.Struct, frozen=True):
    """A registration and the KV revision it was read at."""

    value: PushRegistration
    revision: int


class TokenRegistry:
    """Reads registrations; disables rejected tokens with compare-and-set."""

    def __init__(self, kv: KeyValue) -> None:
        self._kv = kv

    async def get(self, app: str, device: str) -> Registration | None:
        """The registration of ``app``'s device, or None if it has none (or it was deleted)."""
        try:
            entry = await self._kv.get(registration_key(app, device))
        except KeyNotFoundError:
            return None
        if not entry.value or entry.operation is not None or entry.revision is None:
            return None
        return Registration(value=_decoder.decode(entry.value), revision=entry.revision)

    async def disable(self, registration: Registration, reason: str) -> bool:
        """Mark the token disabled unless the device registered again meanwhile; returns
        whether this call disabled it."""
        value = msgspec.structs.replace(registration.value, disabled=True,
                                        disabled_reason=reason[:200],
                                        disabled_at=int(time.time() * 1000))
        try:
            await self._kv.update(registration_key(value.app, value.device),
                                  _encoder.encode(value),
                                  last=registration.revision)
        except KeyWrongLastSequenceError:
            return False
        return True
