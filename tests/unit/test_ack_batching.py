"""Acks aggregated per gateway (``gateway.handlers.acks``), receipts coalesced by the router,
and the settings of the send window and the ack flush: pure logic, no bus."""

from collections import defaultdict
from typing import Any, cast

import pytest

from gateway.handlers.acks import KEPT_FACTOR, AckBatcher
from router.dispatch import _collect_delivered, _Delivered
from runtime.config import ConfigError, load_config
from schemas.envelopes import DeviceAcks, ReceiptBatch, decode_envelope, encode_envelope
from schemas.frames import AckItem

SECRET = {"COURIER_AUTH_SECRET": "s" * 32}

#: (key, lowest accepted, highest accepted)
BOUNDS = [
    ("COURIER_GATEWAY_SEND_WINDOW", 1, 1024),
    ("COURIER_GATEWAY_PUBLISH_WINDOW", 1, 100_000),
    ("COURIER_GATEWAY_ACK_FLUSH_MS", 1, 1000),
    ("COURIER_GATEWAY_ACK_BATCH_MAX", 1, 1000),
]


@pytest.mark.parametrize(("key", "low", "high"), BOUNDS)
def test_pipeline_settings_at_their_bounds(key: str, low: int, high: int) -> None:
    field = key.removeprefix("COURIER_GATEWAY_").lower()
    for value in (low, high):
        config = load_config({**SECRET, key: str(value)})
        assert getattr(config.gateway, field) == value


@pytest.mark.parametrize(("key", "value"), [
    *((key, str(low - 1)) for key, low, _ in BOUNDS),
    *((key, str(high + 1)) for key, _, high in BOUNDS),
    ("COURIER_GATEWAY_SEND_WINDOW", "-1"), ("COURIER_GATEWAY_ACK_FLUSH_MS", "0.5"),
    ("COURIER_GATEWAY_ACK_BATCH_MAX", "many"),
])
def test_bad_pipeline_settings_name_the_key(key: str, value: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config({**SECRET, key: value})
    assert str(info.value).startswith(key), str(info.value)


def item(n: int, conversation: str = "d:alice:bob", sender: str | None = "alice") -> AckItem:
    return AckItem(id=f"m{n}", seq=n, conversation=conversation, sender=sender)


def acks(user: str, device: str, *numbers: int) -> DeviceAcks:
    return DeviceAcks(app="app", user=user, device=device, items=[item(n) for n in numbers])


def batcher(batch_max: int) -> AckBatcher:
    return AckBatcher(cast(Any, None), "gw", flush_ms=10, batch_max=batch_max)


def test_pending_acks_merge_per_device_and_cut_at_the_batch_size() -> None:
    b = batcher(batch_max=3)
    b.add(0, acks("bob", "phone", 1, 2))
    b.add(0, acks("carol", "tab", 3))
    b.add(0, acks("bob", "phone", 4, 5))
    assert b.pending_items() == 5
    batches = b._take(0)
    assert [[(e.user, [i.seq for i in e.items]) for e in batch] for batch in batches] == [
        [("bob", [1, 2, 4])], [("bob", [5]), ("carol", [3])]]
    assert b.pending_items() == 0


def test_a_failed_batch_goes_back_first_and_the_oldest_are_dropped_past_the_bound() -> None:
    b = batcher(batch_max=2)
    b.add(1, acks("bob", "phone", 1, 2))
    failed = b._take(1)[0]
    b.add(1, acks("bob", "phone", 3))
    b._keep(1, failed)
    assert [i.seq for e in b._pending[1] for i in e.items] == [1, 2, 3]
    for n in range(4, 4 + 2 * KEPT_FACTOR):
        b.add(1, acks("bob", "phone", n))
    kept = [i.seq for e in b._pending[1] for i in e.items]
    assert len(kept) == 2 * KEPT_FACTOR and kept[-1] == 3 + 2 * KEPT_FACTOR
    assert 1 not in kept  # the oldest went first


def test_a_receipt_batch_round_trips_with_the_app_of_each_entry() -> None:
    batch = ReceiptBatch(ts=1, entries=[acks("bob", "phone", 1),
                                        DeviceAcks(app="other", user="bob", device="phone",
                                                   items=[item(2)])], gateway="gw")
    decoded = decode_envelope(encode_envelope(batch))
    assert decoded == batch


def test_receipts_to_senders_are_coalesced_across_devices_and_frames() -> None:
    delivered: _Delivered = defaultdict(dict)
    _collect_delivered(delivered, "app", "bob", [item(1), item(2)])
    _collect_delivered(delivered, "app", "bob", [item(2), item(3)])  # bob's other device
    _collect_delivered(delivered, "app", "bob", [item(4, sender="bob")])  # own: no receipt
    _collect_delivered(delivered, "app", "bob", [item(5, sender=None)])  # receipt not wanted
    _collect_delivered(delivered, "app", "bob", [item(6, conversation="d:alice:carol")])
    _collect_delivered(delivered, "other", "bob", [item(7)])
    assert {key: list(ids) for key, ids in delivered.items()} == {
        ("app", "d:alice:bob", "alice", "bob"): ["m1", "m2", "m3"],
        ("other", "d:alice:bob", "alice", "bob"): ["m7"],
    }
