"""System callbacks: a client hands a payload to a named system handler.

A ``callback`` frame names a handler the deployment declares (``COURIER_CALLBACKS_HANDLERS``).
The gateway publishes a ``CallbackEnvelope`` (JSON, body base64) on ``callback.<handler>`` in
the ``CALLBACKS`` stream, with the sender's user, device and app from its token; internal
services consume the subject (a durable consumer of their own, or a plain subscription).
"""

from typing import Final

import msgspec

from schemas.streams import StreamSpec
from schemas.version import PAYLOAD_VERSION

CALLBACKS_STREAM: Final = "CALLBACKS"
CALLBACK_PREFIX: Final = "callback"

CALLBACKS: Final = StreamSpec(
    name=CALLBACKS_STREAM,
    subjects=(f"{CALLBACK_PREFIX}.>",),
    description="Client callbacks to system handlers, one subject per handler.",
)


class CallbackEnvelope(msgspec.Struct, omit_defaults=True):
    """What a handler's consumers receive. ``id`` is unique per callback."""

    id: str
    handler: str
    app: str
    user: str
    device: str
    ts: int
    body: bytes
    gateway: str
    request_id: str | None = None
    v: int = PAYLOAD_VERSION


def callback_subject(handler: str) -> str:
    """The subject of one handler (handler names are subject-safe)."""
    return f"{CALLBACK_PREFIX}.{handler}"
