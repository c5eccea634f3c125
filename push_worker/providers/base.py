"""The push provider interface. Every provider implements ``PushProvider``; the contract suite
in ``tests/contract/test_push_providers.py`` runs the same tests against each."""

import enum
from typing import Protocol

import msgspec

from schemas.push import WakeUp


class Outcome(enum.StrEnum):
    """What became of one send."""

    SENT = "sent"  # the push service accepted the wake-up
    REJECTED = "rejected"  # the service says the token is invalid: disable it, never retry
    RETRY = "retry"  # transient (throttled, 5xx, timeout, network): send again later
    FAILED = "failed"  # can never work as sent (bad request, misconfiguration): dead-letter


class SendResult(msgspec.Struct, frozen=True):
    """The outcome of one send and what the service said."""

    outcome: Outcome
    detail: str = ""


class PushTarget(msgspec.Struct, frozen=True):
    """One registered device. ``registered_at`` changes whenever the device registers again
    (a rotated or re-confirmed token)."""

    device: str
    user: str
    app: str
    platform: str
    token: str
    registered_at: int


class PushProvider(Protocol):
    """Delivers wake-ups to one kind of push service."""

    #: Names the provider in metrics and dead letters.
    name: str

    async def send(self, target: PushTarget, wake: WakeUp) -> SendResult:
        """Deliver ``wake`` to ``target``. Answers of the push service are results, never
        exceptions; an exception is a bug or an unexpected failure and is treated as
        ``RETRY`` by the caller. Must not block the event loop."""
        ...

    async def close(self) -> None:
        """Release connections and threads; the provider is unusable afterwards."""
        ...
