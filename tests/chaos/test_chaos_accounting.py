"""The reliability figures from made-up event logs: lost, duplicates shown, out of order and
recovery are counted exactly as docs/reliability.md defines them."""

import pytest

from chaos.accounting import MISSING_SHOWN, Sent, Shown, tally
from chaos.load import decode_key, encode_key

CONV = "d:r0:s0"


def sent(counter: int, at: float, accepted: bool = True,
         recipients: tuple[str, ...] = ("on", "off")) -> Sent:
    return Sent(key=("s0", counter), first_try=at, recipients=recipients,
                message_id=f"m{counter}" if accepted else None,
                seq=counter + 1 if accepted else None)


def shown(counter: int, device: str, at: float, seq: int | None = None,
          message_id: str | None = None) -> Shown:
    return Shown(device=device, key=("s0", counter), message_id=message_id or f"m{counter}",
                 conversation=CONV, seq=counter + 1 if seq is None else seq, at=at)


def test_everything_delivered_once_in_order() -> None:
    log = [sent(0, 1.0), sent(1, 2.0)]
    views = [shown(0, "on", 1.1), shown(1, "on", 2.1), shown(0, "off", 9.0),
             shown(1, "off", 9.0)]
    result = tally(log, views, fault_at=1.5)
    assert (result.accepted, result.unanswered, result.expected, result.delivered) == (2, 0, 4, 4)
    assert (result.lost, result.duplicates, result.out_of_order) == (0, 0, 0)
    assert result.recovery_s == 2.1 - 1.5
    assert result.missing == ()


def test_lost_counts_each_device_that_never_showed_an_accepted_message() -> None:
    log = [sent(0, 1.0), sent(1, 2.0), sent(2, 3.0)]
    views = [shown(0, "on", 1.1), shown(0, "off", 9.0), shown(2, "on", 3.1)]
    result = tally(log, views, fault_at=0.0)
    assert result.lost == 3  # #1 on both devices, #2 on "off"
    assert result.missing == ((("s0", 1), "on"), (("s0", 1), "off"), (("s0", 2), "off"))
    assert result.delivered == 3 and result.expected == 6


def test_unaccepted_sends_are_never_lost_but_count_when_delivered() -> None:
    log = [sent(0, 1.0), sent(1, 2.0, accepted=False), sent(2, 3.0, accepted=False)]
    views = [shown(0, "on", 1.1), shown(0, "off", 1.1), shown(1, "on", 2.5)]
    result = tally(log, views, fault_at=0.0)
    assert (result.accepted, result.unanswered, result.expected) == (1, 2, 2)
    assert (result.lost, result.delivered) == (0, 3)


def test_duplicates_shown_under_the_same_or_a_new_server_id() -> None:
    log = [sent(0, 1.0, recipients=("on",)), sent(1, 2.0, recipients=("on",))]
    views = [shown(0, "on", 1.1), shown(0, "on", 1.2),  # the SDK's dedup missed it
             shown(1, "on", 2.1), shown(1, "on", 2.2, message_id="m-other", seq=9),
             shown(1, "on", 2.3)]
    result = tally(log, views, fault_at=0.0)
    assert result.duplicates == 3
    assert result.delivered == 2 and result.lost == 0


def test_out_of_order_is_per_device_and_conversation() -> None:
    log = [sent(i, float(i), recipients=("on", "off")) for i in range(4)]
    views = [shown(0, "on", 0.1), shown(2, "on", 2.1), shown(1, "on", 5.0),  # 1 after 2
             shown(3, "on", 5.1),  # higher than the highest: in order again
             shown(3, "off", 9.0), shown(0, "off", 9.0), shown(1, "off", 9.0),
             shown(2, "off", 9.0)]  # three shown after the newest
    other = Shown(device="on", key=("s1", 0), message_id="x", conversation="d:r0:s1", seq=1,
                  at=6.0)  # low seq, but in another conversation
    result = tally(log, [*views, other], fault_at=0.0)
    assert result.out_of_order == 4


def test_recovery_waits_for_a_message_first_tried_after_the_fault() -> None:
    log = [sent(0, 9.0), sent(1, 10.0), sent(2, 11.0)]
    views = [shown(0, "on", 12.0),  # sent before the fault, shown after it: not recovery
             shown(2, "on", 13.5), shown(1, "on", 14.0)]
    assert tally(log, views, fault_at=10.0).recovery_s == 3.5


def test_publishing_resumes_with_the_first_acceptance_of_a_message_tried_after_the_fault(
        ) -> None:
    log = [Sent(key=("s0", 0), first_try=9.0, recipients=("on",), message_id="m0", seq=1,
                accepted_at=16.0),  # in flight at the fault: not a resumption
           Sent(key=("s0", 1), first_try=16.1, recipients=("on",), message_id="m1", seq=2,
                accepted_at=16.4),
           Sent(key=("s0", 2), first_try=10.5, recipients=("on",))]  # never accepted
    assert tally(log, [], fault_at=10.0).resumed_s == pytest.approx(6.4)
    assert tally(log[:1], [], fault_at=10.0).resumed_s is None


def test_no_recovery_when_nothing_sent_after_the_fault_was_shown() -> None:
    log = [sent(0, 1.0), sent(1, 11.0)]
    result = tally(log, [shown(0, "on", 12.0), shown(0, "off", 12.0)], fault_at=10.0)
    assert result.recovery_s is None and result.lost == 2


def test_missing_list_is_bounded() -> None:
    log = [sent(i, float(i)) for i in range(MISSING_SHOWN)]
    result = tally(log, [], fault_at=0.0)
    assert result.lost == 2 * MISSING_SHOWN and len(result.missing) == MISSING_SHOWN


def test_message_keys_round_trip_and_foreign_bodies_are_ignored() -> None:
    assert decode_key(encode_key(("s3", 41))) == ("s3", 41)
    for body in (b"", b"hello", b"[1,2]", b'["s0"]', b'["s0", 1, 2]', b'{"a": 1}', b"\xff"):
        assert decode_key(body) is None
