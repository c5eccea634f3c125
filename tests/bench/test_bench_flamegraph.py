"""The flame graph of collapsed stacks: box widths follow the samples, narrow boxes are left
out, names are escaped, and the project's frames are told apart."""

import re
import xml.etree.ElementTree as ET
from pathlib import Path

from bench.flamegraph import MARGIN_PX, MIN_WIDTH_PX, WIDTH_PX, build_tree, render
from bench.profiling import read_stacks

SVG = "{http://www.w3.org/2000/svg}"


def _boxes(svg: str) -> dict[str, tuple[float, float, float]]:
    """Function -> (x, y, width) of its box, from the tooltips."""
    root = ET.fromstring(svg)
    found = {}
    for group in root.iter(f"{SVG}g"):
        title = group.find(f"{SVG}title")
        rect = group.find(f"{SVG}rect")
        assert title is not None and title.text is not None and rect is not None
        name = title.text.rpartition(":")[0]
        found[name] = (float(rect.get("x", "")), float(rect.get("y", "")),
                       float(rect.get("width", "")))
    return found


def test_read_stacks_drops_line_numbers_and_malformed_lines(tmp_path: Path) -> None:
    raw = tmp_path / "stacks.txt"
    raw.write_text("main (a.py:1);f (b.py:2) 3\nnot a stack\n;; 4\nmain (a.py:1) x\n"
                   "main (a.py:9);f (b.py:7) 2\n")
    assert list(read_stacks(raw)) == [(["main (a.py)", "f (b.py)"], 3),
                                      (["main (a.py)", "f (b.py)"], 2)]


def test_tree_merges_stacks_per_function() -> None:
    root = build_tree([(["main", "f"], 3), (["main", "g"], 1), (["main", "f", "h"], 2)])
    assert root.count == 6
    main = root.children["main"]
    assert (main.count, main.children["f"].count, main.children["g"].count) == (6, 5, 1)
    assert main.children["f"].children["h"].count == 2


def test_widths_follow_samples_and_callers_sit_below_callees() -> None:
    svg = render([(["main (gateway/x.py)", "send (aiohttp/ws.py)"], 3),
                  (["main (gateway/x.py)", "parse (nats/p.py)"], 1)],
                 "t", own_packages=("gateway/",))
    boxes = _boxes(svg)
    usable = WIDTH_PX - 2 * MARGIN_PX
    assert boxes["main (gateway/x.py)"][2] == usable
    assert boxes["send (aiohttp/ws.py)"][2] == 0.75 * usable
    assert boxes["parse (nats/p.py)"][2] == 0.25 * usable
    assert boxes["send (aiohttp/ws.py)"][1] < boxes["main (gateway/x.py)"][1]  # drawn above
    fills = dict(re.findall(r'<title>([^:]+):.*?fill="([^"]+)"', svg))
    assert fills["main (gateway/x.py)"].endswith(",230)")  # the project's frames: blue
    assert not fills["send (aiohttp/ws.py)"].endswith(",230)")


def test_boxes_narrower_than_the_minimum_are_left_out() -> None:
    total = 10_000
    narrow = int(total * MIN_WIDTH_PX / (WIDTH_PX - 2 * MARGIN_PX)) - 1
    svg = render([(["main", "wide"], total - narrow), (["main", "narrow"], narrow)], "t")
    assert set(_boxes(svg)) == {"main", "wide"}


def test_names_are_escaped_and_an_empty_profile_renders() -> None:
    svg = render([(["<lambda> (a&b.py)"], 1)], "x < y")
    assert "<lambda> (a&b.py)" in _boxes(svg)
    assert "(0 samples)" in render([], "empty")
    ET.fromstring(render([], "empty"))
