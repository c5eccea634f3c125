"""Bounds every decoded document is held to, so no value reaches a store or a decoder that
cannot take it.

Integers: every store column is a signed 64-bit integer (SQLite ``INTEGER``, Cassandra
``bigint``), so every integer in a client frame, a REST body or query parameter and an envelope
lies within [``MIN_INT``, ``MAX_INT``]; the types below carry the bound into the JSON Schema.

Nesting: a JSON document (frame or REST body) nested deeper than ``MAX_JSON_DEPTH`` arrays and
objects is refused before it is decoded (no schema of the protocol is half as deep), so a small
frame cannot exhaust the decoder's recursion limit.
"""

import re
from typing import Annotated, Final

import msgspec

#: Largest integer the stores hold (signed 64-bit).
MAX_INT: Final = 2**63 - 1
#: Smallest integer the stores hold.
MIN_INT: Final = -(2**63)
#: Deepest nesting of arrays and objects in a JSON frame or body.
MAX_JSON_DEPTH: Final = 32

#: Any integer a store can hold.
Int64 = Annotated[int, msgspec.Meta(ge=MIN_INT, le=MAX_INT)]
#: A count, position or time (ms) a store can hold: 0 up to ``MAX_INT``.
Count = Annotated[int, msgspec.Meta(ge=0, le=MAX_INT)]

_STRING: Final = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_NOT_BRACKET: Final = re.compile(rb"[^\[\]{}]+")
_EMPTY_PAIR: Final = re.compile(rb"\[\]|\{\}")


def too_deep(data: bytes | str, limit: int = MAX_JSON_DEPTH) -> bool:
    """Whether the JSON text nests arrays and objects deeper than ``limit``.

    Fast when it cannot be: fewer opening brackets than ``limit`` is a single count. Otherwise
    strings are blanked out and innermost empty pairs removed once per level, all in C: a
    document is too deep when ``limit`` rounds leave brackets that still pair up. Unbalanced
    text is left to the decoder, which reports it as not JSON."""
    raw = data.encode() if isinstance(data, str) else data
    if raw.count(b"[") + raw.count(b"{") <= limit:
        return False
    brackets = _NOT_BRACKET.sub(b"", _STRING.sub(b"", raw))
    for _ in range(limit):
        brackets, removed = _EMPTY_PAIR.subn(b"", brackets)
        if not removed or not brackets:
            return False
    return _EMPTY_PAIR.search(brackets) is not None
