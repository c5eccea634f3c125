"""Pure logic of push delivery: bursts, wake-ups, the per-user limit, provider payloads and
signatures, and the new schema pieces (notification conversations, callback frames)."""

import json
import re

import msgspec
import pytest

from push_worker.coalesce import Coalescer, summarize
from push_worker.limiter import UserLimiter
from push_worker.providers.base import Outcome
from push_worker.providers.sns import APNS_ALERT_KEY, sns_message
from push_worker.providers.webhook import _classify, signature, verify_signature
from schemas.codec import decode_client_frame, decode_server_frame, encode_frame
from schemas.control import control_key
from schemas.errors import ErrorCode, ProtocolError
from schemas.frames import AckItem, Callback, CallbackAccepted
from schemas.ids import notification_conversation, notification_members
from schemas.notifications import NotifyRequest, notification_message_id
from schemas.push import (
    WAKEUP_ID_PATTERN,
    PushJob,
    WakeUp,
    collapse_key,
    decode_job,
    encode_job,
    new_wakeup_id,
)

SECRET_BODY = b"attack at dawn"


def job(seq: int, device: str = "d1", conversation: str = "d:alice:bob") -> PushJob:
    return PushJob(device=device, user="bob", app="app", conversation=conversation,
                   message_id=f"m{seq}", seq=seq, kind="chat", module="chat", ts=seq)


def test_jobs_within_the_window_become_one_burst() -> None:
    coalescer: Coalescer[int] = Coalescer(window_s=2.0)
    for i in range(5):
        coalescer.add(job(i + 1), i, now=10.0 + i * 0.1)
    coalescer.add(job(9, conversation="d:bob:carol"), 9, now=10.5)
    coalescer.add(job(7, device="d2"), 7, now=10.6)
    assert coalescer.pop_due(11.9) == []
    due = coalescer.pop_due(12.0)
    assert [b.key for b in due] == [("app", "d1", "d:alice:bob")]
    assert due[0].handles == [0, 1, 2, 3, 4]
    assert coalescer.next_due() == 12.5
    assert {b.key for b in coalescer.pop_due(13.0)} == {("app", "d1", "d:bob:carol"),
                                                         ("app", "d2", "d:alice:bob")}
    assert coalescer.next_due() is None and len(coalescer) == 0
    coalescer.add(job(10), 10, now=20.0)  # after a flush, a new burst
    assert coalescer.next_due() == 22.0


def test_requeue_merges_with_the_newer_burst_and_stale_touches() -> None:
    coalescer: Coalescer[int] = Coalescer(window_s=1.0)
    coalescer.add(job(1), 1, now=0.0)
    [burst] = coalescer.pop_due(1.0)
    coalescer.add(job(2), 2, now=1.5)  # arrives while the first burst is held back
    coalescer.requeue(burst, due=5.0)
    assert coalescer.pop_due(4.9) == []
    [merged] = coalescer.pop_due(5.0)
    assert merged.handles == [1, 2] and merged.touched == 0.0
    coalescer.add(job(3), 3, now=10.0)
    assert coalescer.stale(now=19.0, age_s=10.0) == []
    assert [b.handles for b in coalescer.stale(now=20.0, age_s=10.0)] == [[3]]
    assert coalescer.stale(now=20.5, age_s=10.0) == []
    assert [b.handles for b in coalescer.pop_all()] == [[3]]


def test_a_burst_is_summarized_for_the_device_not_for_the_push_service() -> None:
    jobs = [job(s) for s in (3, 1, 2, 5, 4, 6, 6)]  # out of order, one redelivered twice
    summary = summarize(jobs, max_ids=3)
    assert (summary.conversation, summary.kind) == ("d:alice:bob", "chat")
    assert (summary.count, summary.seq, summary.message_ids) == (6, 6, ["m4", "m5", "m6"])
    assert SECRET_BODY not in msgspec.json.encode(summary)


def test_the_wake_up_names_nobody() -> None:
    """Issue 10, finding 6: wake-ups carried ``conversation: d:<a>:<b>``."""
    # a device id with letters no hex id has: "d1" turned up inside the random id 1 time in 8
    wake = WakeUp(id=new_wakeup_id(), count=6,
                  collapse_key=collapse_key("phone-1", "d:alice:bob"))
    assert set(msgspec.to_builtins(wake)) == {"id", "count", "collapse_key", "type", "v"}
    encoded = msgspec.json.encode(wake)
    assert b"alice" not in encoded and b"bob" not in encoded and b"phone" not in encoded
    assert re.fullmatch(WAKEUP_ID_PATTERN, wake.id) and new_wakeup_id() != wake.id


def test_collapse_keys_fit_apns_and_differ_per_device() -> None:
    conversation = "d:" + "a" * 64 + ":" + "b" * 64
    key = collapse_key("phone", conversation)
    assert len(key.encode()) <= 64 and "aaaa" not in key and conversation not in key
    assert collapse_key("phone", "g:team") == collapse_key("phone", "g:team")  # replaces
    assert collapse_key("phone", "g:team") != collapse_key("phone", "g:other")
    # the two ends of one conversation get unrelated keys: the service cannot pair them
    assert collapse_key("alice-phone", "d:alice:bob") != collapse_key("bob-phone",
                                                                      "d:alice:bob")


def test_per_user_limit_defers_then_allows() -> None:
    limiter = UserLimiter(per_minute=60, burst=2)  # one per second after two
    assert limiter.wait_s("bob", 0.0) == 0.0
    assert limiter.wait_s("bob", 0.0) == 0.0
    assert limiter.wait_s("bob", 0.0) == pytest.approx(1.0)
    assert limiter.wait_s("carol", 0.0) == 0.0  # per user
    assert limiter.wait_s("bob", 0.5) == pytest.approx(0.5)
    assert limiter.wait_s("bob", 1.0) == 0.0
    limiter.prune(100.0)
    assert limiter.wait_s("bob", 100.0) == 0.0 and limiter.wait_s("bob", 100.0) == 0.0


WAKE = WakeUp(id=new_wakeup_id(), count=2, collapse_key=collapse_key("d1", "d:alice:bob"))


@pytest.mark.parametrize("platform", ["apns", "apns_sandbox", "fcm"])
def test_sns_message_has_the_default_key_real_sns_requires(platform: str) -> None:
    message, attributes = sns_message(platform, WAKE)
    structure = json.loads(message)
    assert isinstance(structure["default"], str)  # required by SNS for MessageStructure=json
    assert json.loads(structure["default"])["count"] == 2
    assert all(isinstance(value, str) for value in structure.values())  # each key a string
    if platform == "fcm":
        fcm = json.loads(structure["GCM"])["fcmV1Message"]["message"]
        assert fcm["android"]["collapse_key"] == WAKE.collapse_key
        assert json.loads(fcm["data"]["courier"])["id"] == WAKE.id
        assert attributes == {}
    else:
        key = "APNS" if platform == "apns" else "APNS_SANDBOX"
        apns = json.loads(structure[key])
        assert apns["aps"]["alert"] == {"loc-key": APNS_ALERT_KEY}
        assert apns["aps"]["mutable-content"] == 1
        assert apns["courier"]["id"] == WAKE.id
        collapse = attributes["AWS.SNS.MOBILE.APNS.COLLAPSE_ID"]
        assert collapse == {"DataType": "String", "StringValue": WAKE.collapse_key}
    with pytest.raises(ValueError):
        sns_message("webhook", WAKE)


def test_webhook_signature_and_status_mapping() -> None:
    secret, body = b"k" * 32, b'{"x":1}'
    header = signature(secret, 1_000, body)
    assert verify_signature(secret, header, body, now=1_010)
    assert not verify_signature(secret, header, body + b" ", now=1_010)
    assert not verify_signature(b"other" * 8, header, body, now=1_010)
    assert not verify_signature(secret, header, body, now=5_000)  # replayed later
    assert not verify_signature(secret, "garbage", body, now=1_000)
    assert [_classify(s).outcome for s in (200, 204, 410, 429, 500, 503, 400, 404)] == [
        Outcome.SENT, Outcome.SENT, Outcome.REJECTED, Outcome.RETRY, Outcome.RETRY,
        Outcome.RETRY, Outcome.FAILED, Outcome.FAILED]


def test_push_job_round_trip_and_poison() -> None:
    assert decode_job(encode_job(job(4))) == job(4)
    with pytest.raises((msgspec.DecodeError, msgspec.ValidationError)):
        decode_job(b"\xc1nope")


def test_notification_conversation_ids() -> None:
    assert notification_conversation("bob") == "n:bob"
    assert notification_members("n:bob") == ("bob",)
    assert notification_members("d:a:b") is None and notification_members("n:") is None
    assert notification_members("n:a:b") is None
    assert msgspec.convert({"id": "m", "seq": 1, "conversation": "n:bob"}, AckItem).seq == 1
    with pytest.raises(msgspec.ValidationError):
        msgspec.convert({"id": "m", "seq": 1, "conversation": "n:bo.b"}, AckItem)
    first = notification_message_id("app", "billing", "n1", "bob")
    assert first == notification_message_id("app", "billing", "n1", "bob")
    assert first != notification_message_id("app", "billing", "n1", "carol")
    assert first != notification_message_id("app", "shipping", "n1", "bob")


def test_callback_frames() -> None:
    frame = decode_client_frame(b'{"type":"callback","handler":"upload_logs","body":"aGk=",'
                                b'"id":"7"}')
    assert frame == Callback(handler="upload_logs", body=b"hi", id="7")
    reply = CallbackAccepted(handler="upload_logs", callback_id="cb1", id="7")
    assert decode_server_frame(encode_frame(reply)) == reply
    for bad in (b'{"type":"callback","handler":"a.b","body":""}',
                b'{"type":"callback","handler":"x"}',
                b'{"type":"callback","handler":"x","body":"","user":"mallory"}'):
        with pytest.raises(ProtocolError) as info:
            decode_client_frame(bad)
        assert info.value.code == ErrorCode.INVALID


def test_notify_request_targets_are_strict() -> None:
    good = {"service": "billing", "notifications": [
        {"id": "1", "to": {"kind": "user", "id": "bob"}, "body": "aGk="},
        {"id": "2", "to": {"kind": "users", "ids": ["a", "b"]}, "body": ""},
        {"id": "3", "to": {"kind": "group", "id": "team"}, "body": "", "ttl": 60},
        {"id": "4", "to": {"kind": "device", "id": "d1"}, "body": "", "receipt": True},
        {"id": "5", "to": {"kind": "app"}, "body": "", "app": "shop", "module": "orders"}]}
    request = msgspec.convert(good, NotifyRequest)
    assert [type(n.to).__name__ for n in request.notifications] == [
        "ToUser", "ToUsers", "ToGroup", "ToDevice", "ToApp"]
    for bad in ({"kind": "planet", "id": "x"}, {"kind": "user"}, {"kind": "users", "ids": []},
                {"kind": "app", "id": "x"}, {"kind": "user", "id": "a b"}):
        with pytest.raises(msgspec.ValidationError):
            msgspec.convert({"service": "s", "notifications": [
                {"id": "1", "to": bad, "body": ""}]}, NotifyRequest)


def test_control_keys() -> None:
    assert control_key("device", "d1", "app") == "device.app.d1"
    assert control_key("user", "bob", "app") == "user.app.bob"
    assert control_key("module", "shop", "app") == "module.app.shop"
