"""Push delivery to offline devices: registrations, jobs, wake-ups, dead letters.

A device registers its push token with ``PUT /v1/devices/me/push``; the registration lives in
the KV bucket ``courier_push_tokens`` (key: device id). For every recipient device that is
offline when a message arrives, the router publishes a ``PushJob`` on ``push.jobs`` (stream
``PUSH``, work-queue retention, de-duplicated by ``<message id>.<device>``); the push worker
coalesces the jobs of one device and conversation into one ``WakeUp`` and hands it to the
provider of the device's platform. What keeps failing is published as a ``DeadPush`` on
``push.dead`` (kept in the same stream for inspection). Nothing here carries message bodies:
a wake-up names ids and counts; the app fetches and decrypts.
"""

import hashlib
from typing import Annotated, Final, Literal

import msgspec

from schemas.buckets import BucketSpec
from schemas.streams import StreamSpec
from schemas.version import PROTOCOL_VERSION

#: Platforms a device can register. ``apns``/``apns_sandbox``/``fcm`` go to mobile push
#: services (AWS SNS platform applications); ``webpush`` and ``webhook`` to a webhook that
#: the deployment runs.
Platform = Literal["apns", "apns_sandbox", "fcm", "webpush", "webhook"]
PLATFORMS: Final[tuple[str, ...]] = ("apns", "apns_sandbox", "fcm", "webpush", "webhook")
#: Push providers, chosen per platform by configuration.
PROVIDERS: Final[tuple[str, ...]] = ("sns", "webhook", "log")

PUSH_STREAM: Final = "PUSH"
#: Push jobs published by the router, consumed by the push worker.
PUSH_JOBS: Final = "push.jobs"
#: Dead letters: wake-ups that failed ``max_attempts`` times or can never be sent.
PUSH_DEAD: Final = "push.dead"
#: Durable pull consumer of the push workers on ``push.jobs``.
PUSH_CONSUMER: Final = "push"

PUSH: Final = StreamSpec(
    name=PUSH_STREAM,
    subjects=(PUSH_JOBS, PUSH_DEAD),
    description="Push jobs for offline devices (work queue) and push dead letters.",
    work_queue=True,
)


def push_stream(max_age_s: int) -> StreamSpec:
    """``PUSH`` with the configured job age (every service creating it must agree)."""
    return msgspec.structs.replace(PUSH, max_age_s=max_age_s)


PUSH_TOKENS: Final = BucketSpec(
    name="courier_push_tokens",
    description="Push registrations: device id -> PushRegistration (JSON).",
)

Token = Annotated[str, msgspec.Meta(min_length=1, max_length=4096,
                                    description="The provider's device token (opaque).")]


class PushRegistrationRequest(msgspec.Struct, forbid_unknown_fields=True):
    """``PUT /v1/devices/me/push``: this device's push token (registering again rotates it)."""

    platform: Platform
    token: Token


class PushRegistration(msgspec.Struct, omit_defaults=True):
    """A device's push registration. ``disabled`` once a provider rejected the token; a new
    ``PUT`` (a rotated or re-confirmed token) enables it again."""

    user: str
    device: str
    app: str
    platform: Platform
    token: str
    updated_at: int
    disabled: bool = False
    disabled_reason: str | None = None
    disabled_at: int | None = None


class PushJob(msgspec.Struct, tag="job", tag_field="t", omit_defaults=True):
    """One message for one offline device (MessagePack on ``push.jobs``). No body."""

    device: str
    user: str
    app: str
    conversation: str
    message_id: str
    seq: int
    kind: str
    module: str
    ts: int
    expires_at: int | None = None
    v: int = PROTOCOL_VERSION


class WakeUp(msgspec.Struct):
    """What a device receives through a push service: which conversation has how many new
    messages (the newest ``message_ids``), never what they say."""

    app: str
    conversation: str
    kind: str
    count: int
    seq: int
    message_ids: list[str]
    collapse_key: str
    type: Literal["wake"] = "wake"
    v: int = PROTOCOL_VERSION


class DeadPush(msgspec.Struct, omit_defaults=True):
    """A wake-up given up on (JSON on ``push.dead``)."""

    device: str
    user: str
    conversation: str
    message_ids: list[str]
    provider: str
    attempts: int
    error: str
    ts: int


def job_dedup_id(message_id: str, device: str) -> str:
    """``Nats-Msg-Id`` of a push job: a router redelivery does not make a second job."""
    return f"{message_id}.{device}"


def collapse_key(conversation: str) -> str:
    """The provider collapse key of a conversation: short (APNs allows 64 bytes) and not the
    conversation id itself (push services need not learn who talks to whom)."""
    return "c" + hashlib.blake2b(conversation.encode(), digest_size=16).hexdigest()


_job_encoder: Final = msgspec.msgpack.Encoder()
_job_decoder: Final = msgspec.msgpack.Decoder(PushJob)


def encode_job(job: PushJob) -> bytes:
    return _job_encoder.encode(job)


def decode_job(data: bytes) -> PushJob:
    """Raises ``msgspec.DecodeError``/``ValidationError`` on bad data."""
    return _job_decoder.decode(data)


def registration_key(device: str) -> str:
    """KV key of a device's registration (device ids are subject-safe)."""
    return device
