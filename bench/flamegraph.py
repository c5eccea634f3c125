"""Flame graphs (SVG) of the collapsed stacks ``py-spy record --format raw`` writes.

One recording serves both the summary (``bench.profiling.summarize``) and the picture: the
stacks are merged per function (line numbers dropped, as in the summary), each function a box
as wide as its share of the samples, callers below their callees (the entry point at the
bottom). Boxes narrower than ``MIN_WIDTH_PX`` are left out, which keeps a graph of a long
recording small (tens of KB); every box's tooltip (``<title>``) gives its samples and share.
Frames of the project's own packages are drawn in blue, the rest (asyncio, aiohttp, nats-py,
aiosqlite) in warm colours, so the project's code stands out.
"""

import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Final
from xml.sax.saxutils import escape

WIDTH_PX: Final = 1200
ROW_PX: Final = 16
MIN_WIDTH_PX: Final = 0.5
CHAR_PX: Final = 7
MARGIN_PX: Final = 10
TITLE_PX: Final = 24
#: Boxes at least this wide carry their function's name (cut to fit).
LABEL_MIN_PX: Final = 3 * CHAR_PX


@dataclass
class _Node:
    count: int = 0
    children: dict[str, "_Node"] = field(default_factory=dict)


def build_tree(stacks: Iterable[tuple[Sequence[str], int]]) -> _Node:
    """Stacks (outermost frame first) with their sample counts, merged into one tree."""
    root = _Node()
    for frames, count in stacks:
        root.count += count
        node = root
        for frame in frames:
            node = node.children.setdefault(frame, _Node())
            node.count += count
    return root


@dataclass(frozen=True)
class _Box:
    name: str
    count: int
    x: float
    row: int
    width: float


def render(stacks: Iterable[tuple[Sequence[str], int]], title: str,
           own_packages: tuple[str, ...] = ()) -> str:
    """The SVG flame graph of ``stacks``; frames whose file starts with one of
    ``own_packages`` are drawn in blue."""
    root = build_tree(stacks)
    boxes: list[_Box] = []
    if root.count:
        _layout(root, 0.0, 0, root.count, boxes)
    rows = max((box.row for box in boxes), default=0) + 1
    height = TITLE_PX + rows * ROW_PX + 2 * MARGIN_PX
    heading = escape(f"{title} ({root.count} samples)")
    return "\n".join([
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH_PX}" height="{height}" '
        f'viewBox="0 0 {WIDTH_PX} {height}" font-family="monospace" font-size="11">',
        '<rect width="100%" height="100%" fill="#fafafa"/>',
        f'<text x="{MARGIN_PX}" y="{MARGIN_PX + 12}" font-size="14">{heading}</text>',
        *(_svg_box(box, root.count, height, own_packages) for box in boxes),
        "</svg>", ""])


def _layout(node: _Node, x: float, row: int, total: int, boxes: list[_Box]) -> None:
    """Append a box for each child of ``node`` (in row ``row``, from ``x``) and theirs."""
    usable = WIDTH_PX - 2 * MARGIN_PX
    for name, child in sorted(node.children.items()):
        width = usable * child.count / total
        if width >= MIN_WIDTH_PX:
            boxes.append(_Box(name, child.count, x, row, width))
            _layout(child, x, row + 1, total, boxes)
        x += width


def _svg_box(box: _Box, total: int, height: int, own_packages: tuple[str, ...]) -> str:
    x = MARGIN_PX + box.x
    y = height - MARGIN_PX - (box.row + 1) * ROW_PX  # row 0 (the entry point) at the bottom
    tip = escape(f"{box.name}: {box.count} samples, {100 * box.count / total:.1f}%")
    label = ""
    if box.width >= LABEL_MIN_PX:
        chars = int((box.width - 4) // CHAR_PX)
        text = box.name if len(box.name) <= chars else box.name[:max(chars - 2, 1)] + ".."
        label = f'<text x="{x + 2:.1f}" y="{y + ROW_PX - 4}">{escape(text)}</text>'
    return (f'<g><title>{tip}</title><rect x="{x:.1f}" y="{y}" width="{box.width:.1f}" '
            f'height="{ROW_PX - 1}" fill="{_colour(box.name, own_packages)}"/>{label}</g>')


def _colour(name: str, own_packages: tuple[str, ...]) -> str:
    shade = zlib.crc32(name.encode()) % 60
    if own_packages and name.partition("(")[2].startswith(own_packages):
        return f"rgb({80 + shade},{140 + shade},230)"
    return f"rgb(230,{100 + 2 * shade},{40 + shade})"
