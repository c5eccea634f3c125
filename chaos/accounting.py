"""What one fault's traffic did, from its event log: pure bookkeeping, no I/O.

The load records two kinds of events. A ``Sent`` is one message a sender wanted to send (its
key is the sender and a counter, carried in the body), with the devices that should get it
and, once the gateway answered ``accepted``, the server id and seq. A ``Shown`` is one message
the client library handed to the application on one device (after its dedup by server id).

``tally`` turns them into the figures of the reliability table:

* accepted: sends the gateway acknowledged;
* delivered: distinct (message, device) pairs shown;
* lost: (accepted message, device that should have it) pairs never shown;
* duplicates: shows of a message a device had already shown (the SDK's dedup by server id
  missed them: the same message shown twice, whether under the same or a new server id);
* out of order: shows whose seq is lower than one already shown in the same conversation on the
  same device;
* recovery: from the fault to the first show of a message first tried after the fault;
* publishing resumed: from the fault to the first ``accepted`` of a message first tried after
  the fault (the gateway's publish path back, whatever delivery still waits for).
"""

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

#: A message's identity in the load: (sender user, counter).
Key = tuple[str, int]


@dataclass(frozen=True)
class Sent:
    """One message a sender tried to send."""

    key: Key
    #: When the first attempt started (``time.monotonic()``).
    first_try: float
    #: Device ids that should show it.
    recipients: tuple[str, ...]
    #: Server id and seq from ``accepted``, and when it came; None if the gateway never
    #: acknowledged it.
    message_id: str | None = None
    seq: int | None = None
    accepted_at: float | None = None


@dataclass(frozen=True)
class Shown:
    """One message the client library handed to the application on ``device``."""

    device: str
    key: Key
    message_id: str
    conversation: str
    seq: int
    at: float


@dataclass(frozen=True)
class Tally:
    accepted: int
    unanswered: int
    expected: int
    delivered: int
    lost: int
    duplicates: int
    out_of_order: int
    recovery_s: float | None
    #: Up to ``MISSING_SHOWN`` lost (key, device) pairs, for the report.
    missing: tuple[tuple[Key, str], ...]
    resumed_s: float | None = None


MISSING_SHOWN = 10


def missing_deliveries(sent: Iterable[Sent], shown: Iterable[Shown]) -> list[tuple[Key, str]]:
    """(key, device) pairs of accepted messages that a device that should have them never
    showed, in send order."""
    have = {(event.key, event.device) for event in shown}
    return [(message.key, device) for message in sent if message.message_id is not None
            for device in message.recipients if (message.key, device) not in have]


def duplicates_shown(shown: Iterable[Shown]) -> int:
    """Shows beyond the first of one message on one device."""
    counts = Counter((event.key, event.device) for event in shown)
    return sum(count - 1 for count in counts.values())


def out_of_order(shown: Iterable[Shown]) -> int:
    """Shows with a seq below the highest already shown in their conversation on their
    device (``shown`` in the order each device showed them)."""
    highest: dict[tuple[str, str], int] = {}
    late = 0
    for event in shown:
        position = (event.device, event.conversation)
        if event.seq < highest.get(position, -1):
            late += 1
        else:
            highest[position] = event.seq
    return late


def recovery_s(sent: Iterable[Sent], shown: Iterable[Shown], fault_at: float) -> float | None:
    """Seconds from ``fault_at`` to the first show of a message first tried at or after it;
    None if no such message was shown."""
    after = {message.key for message in sent if message.first_try >= fault_at}
    times = [event.at for event in shown if event.key in after]
    return max(min(times) - fault_at, 0.0) if times else None


def resumed_s(sent: Iterable[Sent], fault_at: float) -> float | None:
    """Seconds from ``fault_at`` to the first acceptance of a message first tried at or after
    it; None if none was accepted."""
    times = [message.accepted_at for message in sent
             if message.first_try >= fault_at and message.accepted_at is not None]
    return max(min(times) - fault_at, 0.0) if times else None


def tally(sent: list[Sent], shown: list[Shown], fault_at: float) -> Tally:
    """The reliability figures of one fault's event log (see the module docstring)."""
    accepted = [message for message in sent if message.message_id is not None]
    missing = missing_deliveries(sent, shown)
    return Tally(
        accepted=len(accepted),
        unanswered=len(sent) - len(accepted),
        expected=sum(len(message.recipients) for message in accepted),
        delivered=len({(event.key, event.device) for event in shown}),
        lost=len(missing),
        duplicates=duplicates_shown(shown),
        out_of_order=out_of_order(shown),
        recovery_s=recovery_s(sent, shown, fault_at),
        missing=tuple(missing[:MISSING_SHOWN]),
        resumed_s=resumed_s(sent, fault_at),
    )
