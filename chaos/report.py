"""The results block of docs/reliability.md.

The suite owns the text between ``BEGIN`` and ``END`` (command, date, machine, settings, the
table, each fault's meaning and notes) and rewrites only that; what people wrote around it
(findings, causes) stays. A file without the markers gets a title and the block.
"""

import datetime
import os
import platform
from collections.abc import Sequence
from pathlib import Path
from typing import Final

from chaos.faults import ACK_WAIT_S, FAULTS
from chaos.run import FaultResult, Settings

BEGIN: Final = "<!-- chaos-results:start -->"
END: Final = "<!-- chaos-results:end -->"
TITLE: Final = "# Reliability under faults\n\n"


def machine() -> str:
    return (f"{platform.node() or 'unknown host'}: {os.cpu_count()} CPUs, "
            f"{platform.platform()}, Python {platform.python_version()}, "
            f"load average {os.getloadavg()[0]:.2f} at the end")


def block(results: Sequence[FaultResult], settings: Settings, command: str,
          now: datetime.datetime | None = None) -> str:
    """The markdown the suite writes between the markers."""
    when = (now or datetime.datetime.now(datetime.UTC)).isoformat(timespec="seconds")
    timing = settings.timing
    lines = [
        BEGIN,
        f"Command: `{command}`  ",
        f"Date: {when}  ",
        f"Machine: {machine()}  ",
        f"Load: {settings.rate_per_s:g} messages/s from {settings.senders} senders, "
        f"{settings.duration_s:g} s of traffic per fault (the fault after the first third), "
        f"settle deadline {settings.settle_s:g} s; restart delay {timing.restart_delay_s:g} s, "
        f"pause {timing.pause_s:g} s (ack wait {ACK_WAIT_S:g} s), store outage "
        f"{timing.outage_s:g} s; SQLite store.",
        "",
        *table(results),
        "",
        *fault_notes(results, {name: fault.meaning for name, fault in FAULTS.items()}),
        END,
    ]
    return "\n".join(lines) + "\n"


def table(results: Sequence[FaultResult], resumed: bool = False) -> list[str]:
    """The results table: one row per fault; with ``resumed``, when publishing resumed."""
    extra = " publishing resumed (s) |" if resumed else ""
    lines = [
        "| fault | accepted | delivered / expected | lost | duplicates shown | out of order "
        f"|{extra} recovery (s) |",
        "|---|---:|---:|---:|---:|---:|" + ("---:|" if resumed else "") + "---:|",
    ]
    for result in results:
        t = result.tally
        cells = [t.resumed_s, t.recovery_s] if resumed else [t.recovery_s]
        times = " | ".join("none" if value is None else f"{value:.2f}" for value in cells)
        lines.append(f"| {result.fault} | {t.accepted} | {t.delivered} / {t.expected} | "
                     f"{t.lost} | {t.duplicates} | {t.out_of_order} | {times} |")
    return lines


def fault_notes(results: Sequence[FaultResult], meanings: dict[str, str]) -> list[str]:
    """What each fault does (``meanings``) and what the run noticed."""
    lines = ["What each fault does, and what the run noticed:", ""]
    for result in results:
        lines.append(f"- **{result.fault}**: {meanings[result.fault]}.")
        t = result.tally
        notes = list(result.notes)
        if t.unanswered:
            notes.append(f"{t.unanswered} send(s) never accepted (refused or given up)")
        if t.missing:
            notes.append("first lost (message, device): " + ", ".join(
                f"{user}#{counter} on {device}" for (user, counter), device in t.missing))
        if result.logs is not None:
            notes.append(f"logs kept in `{result.logs}`")
        lines += [f"  - {note}" for note in notes]
    return lines


def write(path: Path, text: str, begin: str = BEGIN, end: str = END) -> None:
    """Replace the results block (between ``begin`` and ``end``) of ``path`` with ``text``
    (create the file if needed)."""
    old = path.read_text() if path.exists() else ""
    if begin in old and end in old:
        head, rest = old.split(begin, 1)
        tail = rest.split(end, 1)[1].lstrip("\n")
        new = head + text + ("\n" + tail if tail else "")
    else:
        new = (old.rstrip() + "\n\n" if old.strip() else TITLE) + text
    path.write_text(new)
