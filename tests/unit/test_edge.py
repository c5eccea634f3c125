"""The last hop's pure parts: where a router sends a device's frames (``router.edge.EdgeRoutes``:
attach markers per partition, newest socket by presence revision, presence as the fallback),
how one batch's frames are cut into edge batches (``EdgeOutbox``: one per gateway, in order,
within the byte bound), and the wire types' bounds (``schemas.edge``, ``AttachEnvelope``).
End to end: tests/e2e/test_edge.py."""

import msgspec
import pytest
from prometheus_client import REGISTRY

from router.edge import EdgeOutbox, EdgeRoutes
from schemas.bounds import MAX_INT
from schemas.edge import (
    MAX_FRAME_USERS,
    MAX_ITEM_DEVICES,
    EdgeBatch,
    EdgeItem,
    UserFrames,
    decode_edge_batch,
    decode_user_frames,
    encode_edge_batch,
    encode_user_frames,
)
from schemas.envelopes import AttachEnvelope, decode_envelope, encode_envelope


def marker(device: str, gateway: str, rev: int, app: str = "app") -> AttachEnvelope:
    return AttachEnvelope(app=app, user="bob", device=device, gateway=gateway,
                          session="s1", presence_rev=rev, ts=1)


def routes(presence: dict[tuple[str, str], str] | None = None, *, partitions: int = 2,
           max_devices: int = 10) -> EdgeRoutes:
    known = presence or {}
    return EdgeRoutes(partitions, max_devices, lambda app, device: known.get((app, device)))


def test_a_marker_routes_the_partitions_next_messages_to_its_gateway() -> None:
    edge = routes({("app", "phone"): "gw-old"})
    assert edge.gateway_of(0, "app", "phone") == "gw-old"  # no marker yet: presence
    edge.attached(0, marker("phone", "gw-new", rev=5))
    assert edge.gateway_of(0, "app", "phone") == "gw-new"
    # each partition moves at its own marker: partition 1 has not reached it yet
    assert edge.gateway_of(1, "app", "phone") == "gw-old"


def routed(source: str) -> float:
    return REGISTRY.get_sample_value("courier_router_routes_total", {"source": source}) or 0.0


def test_a_batch_of_devices_is_routed_by_gateway_and_counted_once_per_source() -> None:
    edge = routes({("app", "tab"): "gw-b", ("app", "watch"): "gw-a"})
    edge.attached(0, marker("phone", "gw-a", rev=1))
    counted = {source: routed(source) for source in ("marker", "presence", "offline")}
    assert edge.route(0, "app", ["phone", "tab", "gone", "watch"]) == {
        "gw-a": ["phone", "watch"], "gw-b": ["tab"]}
    assert {source: routed(source) - before
            for source, before in counted.items()} == {"marker": 1, "presence": 2,
                                                        "offline": 1}
    assert edge.route(1, "app", ["phone", "gone"]) == {}  # partition 1 saw no marker
    assert edge.route(0, "app", []) == {}


def test_an_older_sockets_marker_arriving_late_does_not_take_the_device_back() -> None:
    edge = routes()
    edge.attached(0, marker("phone", "gw-b", rev=7))
    edge.attached(0, marker("phone", "gw-a", rev=6))
    assert edge.gateway_of(0, "app", "phone") == "gw-b"
    edge.attached(0, marker("phone", "gw-a", rev=7))  # the same revision: the later marker
    assert edge.gateway_of(0, "app", "phone") == "gw-a"


def test_a_partition_taken_again_forgets_its_routes() -> None:
    """Markers of the partition that another router handled meanwhile were never seen here:
    presence decides until new markers come."""
    edge = routes({("app", "phone"): "gw-b"})
    edge.attached(0, marker("phone", "gw-a", rev=1))
    edge.attached(1, marker("phone", "gw-a", rev=1))
    edge.reset(0)
    assert edge.gateway_of(0, "app", "phone") == "gw-b"
    assert edge.gateway_of(1, "app", "phone") == "gw-a"


def test_devices_are_per_app_and_unknown_ones_are_offline() -> None:
    edge = routes()
    edge.attached(0, marker("phone", "gw-a", rev=1, app="one"))
    assert edge.gateway_of(0, "one", "phone") == "gw-a"
    assert edge.gateway_of(0, "two", "phone") is None


def test_the_routes_are_bounded_and_an_evicted_device_falls_back_to_presence() -> None:
    edge = routes({("app", "d0"): "gw-presence"}, max_devices=3)
    for index in range(4):
        edge.attached(0, marker(f"d{index}", "gw-marker", rev=index + 1))
    assert edge.gateway_of(0, "app", "d0") == "gw-presence"  # least recently used, evicted
    assert [edge.gateway_of(0, "app", f"d{index}") for index in (1, 2, 3)] == ["gw-marker"] * 3


def test_one_batch_per_gateway_items_in_the_order_they_were_added() -> None:
    outbox = EdgeOutbox(max_bytes=64 * 1024)
    outbox.add("gw-a", "app", ["a1", "a2"], b'{"m":1}')
    outbox.add("gw-b", "app", ["b1"], b'{"m":1}')
    outbox.add("gw-a", "app", ["a1"], b'{"m":2}')
    batches = outbox.take()
    assert [(gateway, [(item.devices, item.frame) for item in batch.items])
            for gateway, batch in batches] == [
        ("gw-a", [(["a1", "a2"], b'{"m":1}'), (["a1"], b'{"m":2}')]),
        ("gw-b", [(["b1"], b'{"m":1}')])]
    assert outbox.take() == []


@pytest.mark.parametrize("bound", [4096, 8192, 20_000])
def test_batches_stay_within_the_byte_bound_and_keep_the_order(bound: int) -> None:
    outbox = EdgeOutbox(max_bytes=bound)
    frames = [(b'{"n":%d,"pad":"' % n) + b"x" * 900 + b'"}' for n in range(40)]
    for frame in frames:
        outbox.add("gw-a", "app", ["a1", "a2"], frame)
    batches = outbox.take()
    encoded = [encode_edge_batch(batch) for _, batch in batches]
    assert all(len(data) <= bound for data in encoded)
    assert all(len(data) > bound - 1100 for data in encoded[:-1])  # full before the next
    assert [item.frame for _, batch in batches for item in batch.items] == frames


def test_an_item_over_the_bound_is_split_by_devices() -> None:
    devices = [f"device-{n:05d}" for n in range(2000)]
    outbox = EdgeOutbox(max_bytes=4096)
    outbox.add("gw-a", "app", devices, b'{"m":1}')
    batches = outbox.take()
    assert all(len(encode_edge_batch(batch)) <= 4096 for _, batch in batches)
    assert [d for _, batch in batches for item in batch.items for d in item.devices] == devices


def test_a_frame_alone_over_the_bound_goes_alone() -> None:
    outbox = EdgeOutbox(max_bytes=4096)
    outbox.add("gw-a", "app", ["a1"], b"x" * 10_000)
    outbox.add("gw-a", "app", ["a1"], b"small")
    assert [len(batch.items) for _, batch in outbox.take()] == [1, 1]


def test_an_edge_batch_round_trips() -> None:
    batch = EdgeBatch(items=[EdgeItem(app="app", devices=["a1"], frame=b"{}")])
    assert decode_edge_batch(encode_edge_batch(batch)) == batch


@pytest.mark.parametrize("items", [
    [],  # no items
    [["app", [], b"{}"]],  # no devices
    [["app", ["d"] * (MAX_ITEM_DEVICES + 1), b"{}"]],  # past the device bound
    [["", ["d"], b"{}"]],  # no app
    [["a" * 65, ["d"], b"{}"]],  # app past 64
    [["app", ["d" * 65], b"{}"]],  # device past 64
    [["app", ["d"], b""]],  # empty frame
    [["app", ["d"], "text, not bytes"]],
    [["app", "d", b"{}"]],
    [["app", ["d"]]],  # a field missing
])
def test_malformed_edge_batches_are_refused(items: object) -> None:
    with pytest.raises(msgspec.ValidationError):
        decode_edge_batch(msgspec.msgpack.encode([items]))


def test_edge_batches_at_their_bounds_decode() -> None:
    batch = decode_edge_batch(msgspec.msgpack.encode(
        [[["a" * 64, ["d" * 64] * MAX_ITEM_DEVICES, b"x"]]]))
    assert len(batch.items[0].devices) == MAX_ITEM_DEVICES


def test_not_msgpack_is_a_decode_error() -> None:
    with pytest.raises(msgspec.DecodeError):
        decode_edge_batch(b"\xc1")


@pytest.mark.parametrize("frames", [
    ["app", [], b"{}"],  # no users
    ["app", ["u"] * (MAX_FRAME_USERS + 1), b"{}"],  # past the user bound
    ["", ["u"], b"{}"],  # no app
    ["a" * 65, ["u"], b"{}"],  # app past 64
    ["app", ["u" * 65], b"{}"],  # user past 64
    ["app", ["u"], b""],  # empty frame
    ["app", ["u"], "text, not bytes"],
    ["app", ["u"]],  # a field missing
])
def test_malformed_user_frames_are_refused(frames: object) -> None:
    with pytest.raises(msgspec.ValidationError):
        decode_user_frames(msgspec.msgpack.encode(frames))


def test_user_frames_at_their_bounds_round_trip() -> None:
    frames = UserFrames("a" * 64, ["u" * 64] * MAX_FRAME_USERS, b"{}")
    assert decode_user_frames(encode_user_frames(frames)) == frames
    with pytest.raises(msgspec.DecodeError):
        decode_user_frames(b"\xc1")


def test_an_attach_marker_round_trips_in_the_envelope_union() -> None:
    envelope = marker("phone", "gw-8080-abc", rev=MAX_INT)
    assert decode_envelope(encode_envelope(envelope)) == envelope


@pytest.mark.parametrize(("field", "value"), [
    ("gateway", "gw.8080"), ("gateway", "gw-*"), ("gateway", "g" * 65), ("gateway", ""),
    ("device", "a.b"), ("app", "x" * 65), ("session", ""), ("session", "s" * 65),
    ("presence_rev", -1), ("presence_rev", MAX_INT + 1), ("ts", -1),
])
def test_an_attach_marker_past_its_bounds_is_refused(field: str, value: object) -> None:
    raw = msgspec.to_builtins(marker("phone", "gw-a", rev=1))
    raw[field] = value
    with pytest.raises(msgspec.ValidationError):
        decode_envelope(msgspec.msgpack.encode(raw))
