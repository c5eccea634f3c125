"""Push delivery to offline devices: registrations, jobs, wake-ups, dead letters.

A device registers its push token with ``PUT /v1/devices/me/push``; the registration lives in
the KV bucket ``courier_push_tokens`` (key: device id). For every recipient device that is
offline when a message arrives, the router publishes a ``PushJob`` on ``push.jobs`` (stream
``PUSH``, work-queue retention, de-duplicated by ``<message id>.<device>``); the push worker
coalesces the jobs of one device and conversation into one burst, records what the burst
concerns as a ``WakeUpRecord`` in the KV bucket ``courier_push_wakeups`` under a random
wake-up id, and hands the provider of the device's platform a ``WakeUp``: that id and a count,
nothing else. The push service (FCM/APNs behind SNS, a webhook) so learns neither bodies nor
who talks to whom; the app trades the id for the details (``WakeUpDetails``, the conversations
and message ids) over the authenticated API, then fetches and decrypts. What keeps failing is
published as a ``DeadPush`` on ``push.dead`` (kept in the same stream for inspection).
"""

import hashlib
import secrets
from typing import Annotated, Final, Literal

import msgspec

from schemas.buckets import BucketSpec
from schemas.ids import scoped
from schemas.streams import StreamSpec
from schemas.version import PAYLOAD_VERSION

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

#: How long a device can trade a wake-up id for its details (the bucket's TTL).
WAKEUP_TTL_S: Final = 86_400

PUSH_WAKEUPS: Final = BucketSpec(
    name="courier_push_wakeups",
    description="Wake-ups sent: wake-up id -> WakeUpRecord (JSON), read by the device it woke.",
    ttl_s=WAKEUP_TTL_S,
)

#: A wake-up id: ``w`` and 32 hex digits, random (it derives from nothing it names).
WAKEUP_ID_PATTERN: Final = r"^w[0-9a-f]{32}$"
WakeUpId = Annotated[str, msgspec.Meta(pattern=WAKEUP_ID_PATTERN,
                                       description="Opaque id of one wake-up.")]

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
    v: int = PAYLOAD_VERSION


class WakeUp(msgspec.Struct):
    """What a device receives through a push service: an opaque id and how many new messages
    it stands for. No conversation, sender, message id or body: the app trades ``id`` for
    the details (``GET /v1/devices/me/push/wakeups/{id}``) once it is awake."""

    id: WakeUpId
    count: int
    collapse_key: str
    type: Literal["wake"] = "wake"
    v: int = PAYLOAD_VERSION


class WakeUpConversation(msgspec.Struct):
    """One conversation a wake-up concerns: how many new messages, the newest ids and seq."""

    conversation: str
    kind: str
    count: int
    seq: int
    message_ids: list[str]


class WakeUpDetails(msgspec.Struct):
    """``GET /v1/devices/me/push/wakeups/{id}``: what a wake-up stands for (times in ms)."""

    id: WakeUpId
    count: int
    conversations: list[WakeUpConversation]
    created_at: int
    expires_at: int


class WakeUpRecord(msgspec.Struct):
    """A wake-up as kept in ``courier_push_wakeups``: the device it woke (only that device
    may read it) and its details."""

    app: str
    user: str
    device: str
    details: WakeUpDetails


def new_wakeup_id() -> str:
    return "w" + secrets.token_hex(16)


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


def collapse_key(device: str, conversation: str) -> str:
    """The provider collapse key of a conversation on one device: short (APNs allows 64
    bytes), stable so successive wake-ups replace each other, and different for every device,
    so the push service cannot match the wake-ups of two people in one conversation."""
    digest = hashlib.blake2b(f"{device}\x00{conversation}".encode(), digest_size=16)
    return "c" + digest.hexdigest()


_job_encoder: Final = msgspec.msgpack.Encoder()
_job_decoder: Final = msgspec.msgpack.Decoder(PushJob)


def encode_job(job: PushJob) -> bytes:
    return _job_encoder.encode(job)


def decode_job(data: bytes) -> PushJob:
    """Raises ``msgspec.DecodeError``/``ValidationError`` on bad data."""
    return _job_decoder.decode(data)


def registration_key(app: str, device: str) -> str:
    """KV key of a device's registration: ``<app>.<device>`` (device ids are per app, and
    subject-safe)."""
    return scoped(app, device)
