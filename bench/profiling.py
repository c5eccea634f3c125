"""``--profile``: py-spy samples every service during a scenario's load.

py-spy (``--nonblocking``, 100 Hz, active threads only) writes collapsed stacks to
``<out>/profiles/<scenario>-<service>.txt``; ``summarize`` turns them into the functions with the
most samples on top of the stack (self) and anywhere in it (total), and ``bench.flamegraph``
draws them as a flame graph beside them (``<scenario>-<service>.svg``). Samples of active threads
over the window tell how often a service was busy (running, or runnable and waiting for a CPU:
on a saturated machine this exceeds its CPU use, which ``cpu_pct`` in the results measures).
Profiling costs CPU on this 2-core machine: figures of a profiled run are for finding
bottlenecks, not for the results table.
"""

import shutil
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from bench.flamegraph import render

RATE_HZ: Final = 100
TOP: Final = 8
GRACE_S: Final = 30.0
#: Source directories of the services, for the "project functions" ranking.
PROJECT_PACKAGES: Final = ("gateway/", "router/", "storage_worker/", "push_worker/",
                            "archive_worker/", "runtime/", "schemas/", "presence/", "blobs/")
#: Frames that hold every sample of a service (its entry point): left out of that ranking.
ENTRY_FILES: Final = ("__main__.py)", "runtime/service.py)")


@dataclass(frozen=True)
class Hotspot:
    function: str
    self_pct: float
    total_pct: float


def py_spy() -> str:
    """The py-spy next to this interpreter (the venv), else on PATH."""
    candidate = Path(sys.executable).parent / "py-spy"
    found = str(candidate) if candidate.exists() else shutil.which("py-spy")
    if found is None:
        raise FileNotFoundError("py-spy not found: pip install py-spy")
    return found


class Profiler:
    """py-spy record of several processes for one window."""

    def __init__(self, out_dir: Path, scenario: str, pids: dict[str, int]) -> None:
        self._out_dir = out_dir
        self._scenario = scenario
        self._pids = pids
        self._running: dict[str, tuple[subprocess.Popen[bytes], Path]] = {}
        self._duration_s = 0.0

    def start(self, duration_s: float) -> None:
        self._out_dir.mkdir(parents=True, exist_ok=True)
        self._duration_s = max(1.0, duration_s)
        for service, pid in self._pids.items():
            output = self._out_dir / f"{self._scenario}-{service}.txt"
            process = subprocess.Popen(
                [py_spy(), "record", "--pid", str(pid), "--duration", str(int(self._duration_s)),
                 "--rate", str(RATE_HZ), "--format", "raw", "--nonblocking",
                 "--output", str(output)],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            self._running[service] = (process, output)

    def finish(self) -> dict[str, dict[str, object]]:
        """Wait for py-spy; per service: share of busy samples and hotspots (written beside
        the stacks)."""
        summary: dict[str, dict[str, object]] = {}
        for service, (process, output) in self._running.items():
            try:
                process.wait(timeout=self._duration_s + GRACE_S)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            if not output.exists():
                continue
            output.with_suffix(".svg").write_text(render(
                read_stacks(output), f"{self._scenario}: {service}", PROJECT_PACKAGES))
            samples, spots = summarize(output)
            _, own = summarize(output, by_total_in=PROJECT_PACKAGES)
            busy_pct = 100.0 * samples / (RATE_HZ * self._duration_s)
            output.with_suffix(".top.txt").write_text(
                f"{service}: {samples} busy samples, {busy_pct:.0f}% of the window\n"
                f"by self samples:\n{_lines(spots)}\n"
                f"project functions by total samples:\n{_lines(own)}\n")
            summary[service] = {"busy_pct": round(busy_pct, 1),
                                "top_self": [[s.function, s.self_pct] for s in spots]}
        self._running.clear()
        return summary


def _lines(spots: list[Hotspot]) -> str:
    return "\n".join(f"{s.self_pct:6.1f}% self {s.total_pct:6.1f}% total  {s.function}"
                     for s in spots)


def summarize(collapsed: Path, top: int = TOP,
              by_total_in: tuple[str, ...] = ()) -> tuple[int, list[Hotspot]]:
    """Total samples and the ``top`` functions by self samples from py-spy's raw output, or
    by total samples among functions whose file starts with one of ``by_total_in``."""
    self_counts: Counter[str] = Counter()
    total_counts: Counter[str] = Counter()
    samples = 0
    for frames, count in read_stacks(collapsed):
        samples += count
        self_counts[frames[-1]] += count
        for frame in set(frames):
            total_counts[frame] += count
    if samples == 0:
        return 0, []
    ranking = self_counts.most_common(top) if not by_total_in else [
        (function, n) for function, n in total_counts.most_common()
        if function.partition("(")[2].startswith(by_total_in)
        and not function.endswith(ENTRY_FILES)][:top]
    return samples, [
        Hotspot(function, round(100.0 * self_counts[function] / samples, 1),
                round(100.0 * total_counts[function] / samples, 1))
        for function, _ in ranking
    ]


def read_stacks(collapsed: Path) -> Iterator[tuple[list[str], int]]:
    """Each stack of py-spy's raw output (outermost frame first, functions without line
    numbers) with its sample count; malformed lines are skipped."""
    for line in collapsed.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        frames = [_without_line(frame) for frame in stack.split(";") if frame]
        if frames:
            yield frames, int(count_text)


def _without_line(frame: str) -> str:
    """``f (file.py:12)`` -> ``f (file.py)``: one entry per function."""
    head, sep, tail = frame.rpartition(":")
    return f"{head})" if sep and tail.rstrip(")").isdigit() else frame
