"""The pure parts of "no envelope can stall a stream": bisecting a failing batch, telling
outages from faulty envelopes, integer bounds and the JSON depth limit."""

import asyncio

import msgspec
import nats.errors
import pytest

from runtime.consumer import Isolator
from runtime.deadletter import RetryPolicy, describe
from runtime.transient import Transient, is_transient
from schemas.bounds import MAX_INT, MAX_JSON_DEPTH, too_deep
from schemas.codec import decode_client_frame, decode_document
from schemas.control import ControlRequest
from schemas.envelopes import ReceiptEnvelope, decode_envelope, encode_envelope
from schemas.errors import ErrorCode, ProtocolError
from schemas.partitions import MAX_CURSOR_CHARS
from storage_worker.store.base import StoreUnavailable

POLICY = RetryPolicy(attempts=3, retry_s=0.01, outage_backoff_s=0.01, max_backoff_s=0.05)


class Poison(Exception):
    pass


class Batches:
    """A handler over ints that fails on the ``bad`` ones and records what it applied, in
    order, and every batch it was called with."""

    def __init__(self, bad: set[int], outages: int = 0) -> None:
        self.bad = bad
        self.outages = outages
        self.applied: list[int] = []
        self.calls: list[list[int]] = []
        self.buried: list[tuple[int, int]] = []
        self.waits: list[float] = []

    async def handle(self, items: list[int]) -> None:
        self.calls.append(list(items))
        if self.outages:
            self.outages -= 1
            raise StoreUnavailable("down")
        for item in items:  # a handler applies in order, then fails at the first bad one
            if item in self.bad:
                raise Poison(str(item))
            self.applied.append(item)

    async def bury(self, item: int, exc: BaseException, attempts: int) -> None:
        assert isinstance(exc, Poison)
        self.buried.append((item, attempts))

    async def wait(self, delay: float) -> None:
        self.waits.append(delay)


def isolator(batches: Batches, policy: RetryPolicy = POLICY) -> Isolator[int]:
    return Isolator("test", batches.handle, batches.bury, policy)


def last_application(applied: list[int]) -> list[int]:
    """Each item at its last application (re-runs of a half repeat earlier items)."""
    seen: dict[int, int] = {}
    for index, item in enumerate(applied):
        seen[item] = index
    return sorted(seen, key=seen.__getitem__)


async def test_a_good_batch_is_handled_once() -> None:
    batches = Batches(bad=set())
    await isolator(batches).run(list(range(10)), batches.wait)
    assert batches.calls == [list(range(10))]
    assert batches.buried == [] and batches.waits == []


@pytest.mark.parametrize("bad", [0, 5, 63, 127])
async def test_one_bad_item_is_isolated_and_buried_and_the_rest_applied_in_order(
        bad: int) -> None:
    batches = Batches(bad={bad})
    items = list(range(128))
    await isolator(batches).run(items, batches.wait)
    assert batches.buried == [(bad, POLICY.attempts)]
    assert last_application(batches.applied) == [i for i in items if i != bad]
    alone = [call for call in batches.calls if call == [bad]]
    assert len(alone) == POLICY.attempts  # tried alone exactly `attempts` times
    assert batches.waits == [0.01, 0.02]  # between those tries, doubling
    assert len(batches.calls) <= 2 * 7 + POLICY.attempts + 1  # log2(128) levels


async def test_the_first_half_is_applied_before_the_second() -> None:
    batches = Batches(bad={2, 6})
    await isolator(batches).run(list(range(8)), batches.wait)
    assert [item for item, _ in batches.buried] == [2, 6]
    order = last_application(batches.applied)
    assert order == [0, 1, 3, 4, 5, 7]


async def test_every_bad_item_of_a_batch_is_buried() -> None:
    bad = {1, 2, 3, 10, 11}
    batches = Batches(bad=bad)
    await isolator(batches).run(list(range(16)), batches.wait)
    assert sorted(item for item, _ in batches.buried) == sorted(bad)
    assert last_application(batches.applied) == [i for i in range(16) if i not in bad]


async def test_an_item_that_fails_once_is_not_buried() -> None:
    flaky = {4}

    async def handle(items: list[int]) -> None:
        if flaky & set(items):
            flaky.clear()
            raise Poison("once")

    buried: list[int] = []

    async def bury(item: int, exc: BaseException, attempts: int) -> None:
        buried.append(item)

    async def wait(delay: float) -> None:
        pass

    await Isolator("test", handle, bury, POLICY).run(list(range(8)), wait)
    assert buried == []


async def test_an_outage_is_retried_in_place_and_buries_nothing() -> None:
    batches = Batches(bad=set(), outages=50)
    await isolator(batches).run(list(range(4)), batches.wait)
    assert batches.buried == []
    assert batches.calls == [[0, 1, 2, 3]] * 51  # the same batch every time: no split
    assert max(batches.waits) == POLICY.max_backoff_s
    assert batches.applied == [0, 1, 2, 3]


async def test_an_outage_does_not_count_against_an_isolated_item() -> None:
    calls: list[list[int]] = []

    async def handle(items: list[int]) -> None:
        calls.append(items)
        if items == [1]:
            raise StoreUnavailable("down") if len(calls) % 2 else Poison("1")
        if 1 in items:
            raise Poison("1")

    buried: list[tuple[int, int]] = []

    async def bury(item: int, exc: BaseException, attempts: int) -> None:
        buried.append((item, attempts))

    async def wait(delay: float) -> None:
        pass

    await Isolator("test", handle, bury, POLICY).run([0, 1], wait)
    assert buried == [(1, POLICY.attempts)]
    assert calls.count([1]) > POLICY.attempts  # the outage tries were not counted


async def test_settled_items_are_not_handled_again() -> None:
    settled: set[int] = set()
    calls: list[list[int]] = []

    async def handle(items: list[int]) -> None:
        calls.append(items)
        settled.add(items[0])  # the handler settles (acks) the first, then fails
        if len(calls) == 1:
            raise StoreUnavailable("down")

    async def bury(item: int, exc: BaseException, attempts: int) -> None:
        raise AssertionError("nothing to bury")

    async def wait(delay: float) -> None:
        pass

    await Isolator("test", handle, bury, POLICY,
                   pending=lambda items: [i for i in items if i not in settled]).run(
        [0, 1, 2], wait)
    assert calls == [[0, 1, 2], [1, 2]]


async def test_burying_is_retried_while_nats_is_down() -> None:
    failures = [nats.errors.ConnectionClosedError(), nats.errors.TimeoutError()]
    buried: list[int] = []

    async def handle(items: list[int]) -> None:
        raise Poison("always")

    async def bury(item: int, exc: BaseException, attempts: int) -> None:
        if failures:
            raise failures.pop()
        buried.append(item)

    waits: list[float] = []

    async def wait(delay: float) -> None:
        waits.append(delay)

    await Isolator("test", handle, bury, POLICY).run([7], wait)
    assert buried == [7]
    assert len(waits) == POLICY.attempts - 1 + 2


async def test_cancellation_is_never_swallowed() -> None:
    async def handle(items: list[int]) -> None:
        raise asyncio.CancelledError

    async def bury(item: int, exc: BaseException, attempts: int) -> None:
        raise AssertionError("not buried")

    async def wait(delay: float) -> None:
        pass

    with pytest.raises(asyncio.CancelledError):
        await Isolator("test", handle, bury, POLICY).run([1, 2], wait)


@pytest.mark.parametrize("exc", [
    StoreUnavailable("x"), Transient("x"), ProtocolError(ErrorCode.UNAVAILABLE, "x"),
    nats.errors.ConnectionClosedError(), nats.errors.TimeoutError(),
    nats.errors.NoRespondersError(), TimeoutError(), ConnectionResetError(),
])
def test_outages_are_transient(exc: BaseException) -> None:
    assert is_transient(exc)


@pytest.mark.parametrize("exc", [
    OverflowError("Python int too large to convert to SQLite INTEGER"), ValueError("x"),
    ProtocolError(ErrorCode.INTERNAL, "x"), ProtocolError(ErrorCode.NOT_MEMBER, "x"),
    nats.errors.MaxPayloadError(), nats.errors.BadSubjectError(), KeyError("x"),
])
def test_faults_of_the_envelope_are_not_transient(exc: BaseException) -> None:
    assert not is_transient(exc)


def test_error_descriptions_fit_one_header_line() -> None:
    text = describe(ValueError("a\r\nb" + "x" * 1000))
    assert text.startswith("ValueError: a  b") and len(text) == 500 and "\n" not in text
    assert describe(ValueError("café")) == "ValueError: caf\\xe9"


# ---------------------------------------------------------------- bounds at the edge


@pytest.mark.parametrize("frame", [
    '{"type":"read","conversation":"d:a:b","seq":%d}',
    '{"type":"ack","messages":[{"id":"m1","seq":%d,"conversation":"d:a:b"}]}',
])
def test_client_integers_are_bounded_by_the_stores(frame: str) -> None:
    assert decode_client_frame(frame % MAX_INT) is not None  # at the bound
    for past in (MAX_INT + 1, 2**64, 2**64 + 5, 10**30, -1):
        with pytest.raises(ProtocolError) as info:
            decode_client_frame(frame % past)
        assert info.value.code == ErrorCode.INVALID


def test_the_sync_cursor_is_an_opaque_string_within_its_bound() -> None:
    """Protocol 2: ``after`` is the cursor a ``synced`` frame gave (an integer, protocol 1's
    cursor, is refused); its length is bounded before anything decodes it."""
    at_bound = "c1." + "A" * (MAX_CURSOR_CHARS - 3)
    assert decode_client_frame(f'{{"type":"sync","after":"{at_bound}"}}') is not None
    for bad in ('"c1.' + "A" * (MAX_CURSOR_CHARS - 2) + '"', "41", '"41"', '"c1.a b"', '""'):
        with pytest.raises(ProtocolError) as info:
            decode_client_frame(f'{{"type":"sync","after":{bad}}}')
        assert info.value.code == ErrorCode.INVALID


def test_envelope_integers_are_bounded_by_the_stores() -> None:
    good = ReceiptEnvelope(status="read", app="a", by_user="u", by_device="d", ts=1,
                           conversation="d:a:u", seq=MAX_INT)
    assert decode_envelope(encode_envelope(good)) == good
    past = msgspec.structs.replace(good, seq=MAX_INT + 1)
    with pytest.raises(msgspec.ValidationError):
        decode_envelope(encode_envelope(past))


def nested(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


@pytest.mark.parametrize(("text", "deep"), [
    (nested(MAX_JSON_DEPTH), False),
    (nested(MAX_JSON_DEPTH + 1), True),
    (b'{"a":"' + b"[" * 100 + b'"}', False),  # brackets in strings do not count
    (b'["\\"' + b"[" * 100 + b'"]', False),  # nor after an escaped quote
    (b"[" * 100, False),  # unbalanced: left to the decoder (not JSON)
    (b"[]" * 1000, False),  # wide is not deep
    (b'{"a":' * 40 + b"1" + b"}" * 40, True),
])
def test_depth(text: bytes, deep: bool) -> None:
    assert too_deep(text) is deep


@pytest.mark.parametrize("depth", [MAX_JSON_DEPTH + 1, 1000, 100_000])
def test_too_deep_frames_and_bodies_are_bad_frames(depth: int) -> None:
    frame = b'{"type":"read","conversation":"d:a:b","x":' + nested(depth) + b"}"
    with pytest.raises(ProtocolError) as info:
        decode_client_frame(frame)
    assert info.value.code == ErrorCode.BAD_FRAME and "levels deep" in info.value.message
    with pytest.raises(ProtocolError) as info:
        decode_document(b'{"actor":' + nested(depth) + b"}", ControlRequest)
    assert info.value.code == ErrorCode.BAD_FRAME and "levels deep" in info.value.message


def test_bodies_keep_their_error_codes() -> None:
    with pytest.raises(ProtocolError) as info:
        decode_document(b"{nope", ControlRequest)
    assert info.value.code == ErrorCode.BAD_FRAME
    with pytest.raises(ProtocolError) as info:
        decode_document(b"{}", ControlRequest)
    assert info.value.code == ErrorCode.INVALID
