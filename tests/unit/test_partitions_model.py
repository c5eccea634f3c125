"""The partition model (``schemas.partitions``): positions, the opaque cursor, the mapping."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from schemas.partitions import (
    MAX_CURSOR_CHARS,
    MAX_PARTITIONS,
    decode_cursor,
    encode_cursor,
    partition_of,
    partition_of_position,
    position,
    stream_seq_of,
)


def test_one_partition_keeps_the_stream_sequence() -> None:
    assert position(41, 0, 1) == 41 and partition_of("app", "d:a:b", 1) == 0


@given(st.integers(1, MAX_PARTITIONS), st.integers(1, 2**50), st.data())
def test_a_position_names_its_partition_and_stream_sequence(count: int, stream_seq: int,
                                                            data: st.DataObject) -> None:
    partition = data.draw(st.integers(0, count - 1))
    seq = position(stream_seq, partition, count)
    assert partition_of_position(seq, count) == partition
    assert stream_seq_of(seq, count) == stream_seq
    assert position(stream_seq + 1, partition, count) > seq  # increasing within a partition


def test_the_mapping_is_stable_and_spreads() -> None:
    # Fixed values: a changed hash would move stored conversations to other partitions.
    assert [partition_of("default", f"d:alice:u{i}", 16) for i in range(8)] == [
        7, 7, 7, 3, 6, 15, 2, 2]
    assert {partition_of("app", f"g:{i}", 16) for i in range(400)} == set(range(16))
    # the app is part of the key: the same conversation id of two apps may land apart
    assert any(partition_of("a", f"g:{i}", 16) != partition_of("b", f"g:{i}", 16)
               for i in range(10))


@given(st.integers(1, 64), st.data())
def test_a_cursor_round_trips(count: int, data: st.DataObject) -> None:
    cursor = [data.draw(st.sampled_from([0, position(data.draw(st.integers(1, 2**40)), p,
                                                     count)]))
              for p in range(count)]
    text = encode_cursor(cursor)
    assert text.startswith("c1.") and len(text) <= MAX_CURSOR_CHARS
    assert decode_cursor(text, count) == cursor


def test_the_largest_cursor_fits_its_bound() -> None:
    cursor = [position(2**62 // MAX_PARTITIONS - 1, p, MAX_PARTITIONS)
              for p in range(MAX_PARTITIONS)]
    assert len(encode_cursor(cursor)) <= MAX_CURSOR_CHARS
    assert decode_cursor(encode_cursor(cursor), MAX_PARTITIONS) == cursor


@pytest.mark.parametrize("text", [
    "", "c1", "c2.kAA", "c1.!!", "c1." + "A" * MAX_CURSOR_CHARS,
    encode_cursor([1, 0]),          # position 1 is partition 1's, not partition 0's
    encode_cursor([0, 0, 0]),       # another partition count
    encode_cursor([-2, 0]),
    encode_cursor([2**63, 0]),
])
def test_cursors_this_deployment_did_not_issue_are_refused(text: str) -> None:
    with pytest.raises(ValueError):
        decode_cursor(text, 2)
